/*
 * wasend--0.3.0--0.4.0.sql — lanes: a transactional send that jumps the
 * queue, campaign priorities, send windows, test sends, dry runs and
 * waiting for a campaign (0.4.0).
 *
 * As for 0.3.0, there is no wasend--0.4.0.sql: CREATE EXTENSION wasend
 * installs 0.2.0 and runs the update scripts, so a fresh install and an
 * updated one are the same by construction (test/t/020_upgrade.pl still
 * compares them).  wasend--0.2.0.sql explains the security rules every
 * function here follows (SECURITY DEFINER or INVOKER said where it is
 * defined, SET search_path = pg_catalog, pg_temp, every object
 * schema-qualified, no temporary tables); 0.3.0 the rule for expressions
 * bound at script time (operators and casts named in pg_catalog).
 *
 * What it adds (README: "Lanes"):
 *
 *	1. wasend_send(number_id, recipient, message, priority): one message,
 *	   sent once the caller's transaction commits, ahead of every campaign
 *	   row of its number.  Such rows live in the number's transactional
 *	   campaign (kind 'transactional', made on first use, never completes)
 *	   and carry their priority; campaign rows have none (NULL), which is
 *	   what keeps one row per recipient and campaign (the unique index
 *	   send_queue_campaign_recipient_key replaces the constraint of the
 *	   same columns).  wasend_send_status(id) reads a row's outcome.
 *	2. Campaign priority: between campaigns of one number, the higher
 *	   priority sends first; equal priorities share the number's rate.
 *	3. Send windows: send_window_start / send_window_end, in a fixed time
 *	   zone or per recipient (send_queue.timezone, else the main zone of
 *	   the country calling code, wasend.country_zones).  Rows outside their
 *	   window wait (waiting_for 'send_window'), never fail.
 *	4. wasend_test_send, wasend_dry_run, wasend_wait.
 */

\echo Use "ALTER EXTENSION wasend UPDATE TO '0.4.0'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

ALTER TABLE wasend.campaigns
    ADD COLUMN kind text NOT NULL DEFAULT 'campaign'
        CONSTRAINT campaigns_kind_check CHECK (kind IN ('campaign', 'transactional')),
    ADD COLUMN priority integer NOT NULL DEFAULT 0
        CONSTRAINT campaigns_priority_check CHECK (priority >= 0 AND priority <= 100),
    ADD COLUMN send_window_start time without time zone,
    ADD COLUMN send_window_end time without time zone,
    ADD COLUMN send_timezone text NOT NULL DEFAULT 'recipient',
    ADD CONSTRAINT campaigns_send_window_check
        CHECK ((send_window_start IS NULL) = (send_window_end IS NULL)
               AND send_window_start < send_window_end);
-- one transactional campaign per number (wasend_send makes it)
CREATE UNIQUE INDEX campaigns_transactional_idx ON wasend.campaigns (number_id)
    WHERE kind = 'transactional';
COMMENT ON COLUMN wasend.campaigns.kind IS
'campaign; or transactional: the number''s lane of wasend_send messages (made on first use, never completes)';
COMMENT ON COLUMN wasend.campaigns.priority IS
'0-100: between the campaigns of a number, the higher sends first; equal priorities share the number''s rate';
COMMENT ON COLUMN wasend.campaigns.send_window_start IS
'with send_window_end: rows go out only between these local times (send_timezone); outside, they wait';
COMMENT ON COLUMN wasend.campaigns.send_timezone IS
'the time zone of the send window: a zone name (e.g. Europe/Berlin), or recipient: the row''s timezone, else the main zone of the recipient''s country calling code (wasend.country_zones), else UTC';

ALTER TABLE wasend.send_queue
    ADD COLUMN priority integer
        CONSTRAINT send_queue_priority_check CHECK (priority >= 0 AND priority <= 100),
    ADD COLUMN timezone text;
ALTER TABLE wasend.send_queue DROP CONSTRAINT send_queue_waiting_for_check;
ALTER TABLE wasend.send_queue ADD CONSTRAINT send_queue_waiting_for_check
    CHECK (waiting_for IN ('messaging_limit', 'frequency_cap', 'send_window'));
-- a recipient once per campaign; a transactional lane (rows with a
-- priority) may message a recipient many times
ALTER TABLE wasend.send_queue DROP CONSTRAINT send_queue_campaign_id_recipient_key;
CREATE UNIQUE INDEX send_queue_campaign_recipient_key ON wasend.send_queue (campaign_id, recipient)
    WHERE priority IS NULL;
COMMENT ON COLUMN wasend.send_queue.priority IS
'set on wasend_send rows only (0-100, higher first); NULL on campaign rows';
COMMENT ON COLUMN wasend.send_queue.timezone IS
'the recipient''s time zone for a send window with send_timezone = recipient; NULL: from the country calling code';
GRANT INSERT (timezone) ON wasend.send_queue TO wasend_operator;

-- The main time zone of each country calling code.  One zone per country
-- (its capital's or most populous area's): a send window is kept in that
-- zone for every recipient of the country.  Numbers of the North American
-- plan (+1) are keyed by area code where the country is not the US.
CREATE TABLE wasend.country_zones (
    calling_code text PRIMARY KEY
        CONSTRAINT country_zones_calling_code_check CHECK (calling_code ~ '^[0-9]{1,7}$'),
    country     text NOT NULL,
    zone        text NOT NULL,
    builtin     boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE wasend.country_zones IS
'Main IANA time zone per country calling code (longest prefix of the recipient wins); used for send windows when a row gives no timezone';
-- rows the extension ships are builtin; pg_dump keeps the ones users add
-- (a changed builtin row comes back as shipped: add a longer prefix instead)
SELECT pg_catalog.pg_extension_config_dump('wasend.country_zones', 'WHERE NOT builtin');
REVOKE ALL ON wasend.country_zones FROM PUBLIC;
GRANT SELECT ON wasend.country_zones TO wasend_viewer;
GRANT INSERT, UPDATE, DELETE ON wasend.country_zones TO wasend_admin;

-- wasend.country_zones: country calling code prefix -> ISO 3166-1 alpha-2 country -> IANA time zone.
--
-- Source: ITU-T E.164 country code assignments (cross-checked against the
-- libphonenumber metadata, libphonenumber-js 1.13.16); zone per country from tzdata 2025b
-- (zone1970.tab / zone.tab, country-specific name from zone.tab).
-- A country's MAIN zone (capital / most populous area) is used for the whole
-- country, e.g. US -> America/New_York, RU -> Europe/Moscow, BR -> America/Sao_Paulo,
-- AU -> Australia/Sydney; numbers in other zones of that country get the main one.
--
-- Look up by longest prefix:
--   SELECT zone FROM wasend.country_zones WHERE <digits> LIKE calling_code || '%'
--   ORDER BY length(calling_code) DESC LIMIT 1;
--
-- Shared codes: '1' is the US; other NANP members and Canada use '1' + area code
-- (Canada per province of the area code; 867 = Yukon/NWT/Nunavut -> America/Whitehorse).
-- '7' is RU, '76'/'77' KZ. Sub-prefixes also given for AX (35818), SJ (4779),
-- BQ (5993/5994/5997), CC (6189162), CX (6189164), YT (262269/262639), EH (2125288/2125289).
-- Not split out (same clock as the main country): GG/IM/JE under 44 (GB),
-- BL/MF under 590 (GP), VA under 39 (IT), TA (Tristan da Cunha) under 290 (SH).
-- 247 Ascension is listed as SH (ISO 3166-1 has no separate code; tzdata: Atlantic/St_Helena).
-- 383 Kosovo uses 'XK' (user-assigned code in common use; not in ISO 3166-1 / tzdata) with Europe/Belgrade.
--
-- Non-geographic codes, deliberately not listed (no country / time zone):
--   800 (international freephone), 808 (shared cost), 870 (Inmarsat), 878 (UPT),
--   881 (global mobile satellite), 882/883 (international networks),
--   888 (UN OCHA), 979 (premium rate), 991 (ITPCS trial).
INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES
  ('1', 'US', 'America/New_York'),
  ('1204', 'CA', 'America/Winnipeg'),
  ('1226', 'CA', 'America/Toronto'),
  ('1236', 'CA', 'America/Vancouver'),
  ('1242', 'BS', 'America/Nassau'),
  ('1246', 'BB', 'America/Barbados'),
  ('1249', 'CA', 'America/Toronto'),
  ('1250', 'CA', 'America/Vancouver'),
  ('1263', 'CA', 'America/Toronto'),
  ('1264', 'AI', 'America/Anguilla'),
  ('1268', 'AG', 'America/Antigua'),
  ('1284', 'VG', 'America/Tortola'),
  ('1289', 'CA', 'America/Toronto'),
  ('1306', 'CA', 'America/Regina'),
  ('1340', 'VI', 'America/St_Thomas'),
  ('1343', 'CA', 'America/Toronto'),
  ('1345', 'KY', 'America/Cayman'),
  ('1354', 'CA', 'America/Toronto'),
  ('1365', 'CA', 'America/Toronto'),
  ('1367', 'CA', 'America/Toronto'),
  ('1368', 'CA', 'America/Edmonton'),
  ('1382', 'CA', 'America/Toronto'),
  ('1403', 'CA', 'America/Edmonton'),
  ('1416', 'CA', 'America/Toronto'),
  ('1418', 'CA', 'America/Toronto'),
  ('1428', 'CA', 'America/Moncton'),
  ('1431', 'CA', 'America/Winnipeg'),
  ('1437', 'CA', 'America/Toronto'),
  ('1438', 'CA', 'America/Toronto'),
  ('1441', 'BM', 'Atlantic/Bermuda'),
  ('1450', 'CA', 'America/Toronto'),
  ('1468', 'CA', 'America/Toronto'),
  ('1473', 'GD', 'America/Grenada'),
  ('1474', 'CA', 'America/Regina'),
  ('1506', 'CA', 'America/Moncton'),
  ('1514', 'CA', 'America/Toronto'),
  ('1519', 'CA', 'America/Toronto'),
  ('1548', 'CA', 'America/Toronto'),
  ('1579', 'CA', 'America/Toronto'),
  ('1581', 'CA', 'America/Toronto'),
  ('1584', 'CA', 'America/Winnipeg'),
  ('1587', 'CA', 'America/Edmonton'),
  ('1604', 'CA', 'America/Vancouver'),
  ('1613', 'CA', 'America/Toronto'),
  ('1639', 'CA', 'America/Regina'),
  ('1647', 'CA', 'America/Toronto'),
  ('1649', 'TC', 'America/Grand_Turk'),
  ('1658', 'JM', 'America/Jamaica'),
  ('1664', 'MS', 'America/Montserrat'),
  ('1670', 'MP', 'Pacific/Saipan'),
  ('1671', 'GU', 'Pacific/Guam'),
  ('1672', 'CA', 'America/Vancouver'),
  ('1683', 'CA', 'America/Toronto'),
  ('1684', 'AS', 'Pacific/Pago_Pago'),
  ('1705', 'CA', 'America/Toronto'),
  ('1709', 'CA', 'America/St_Johns'),
  ('1721', 'SX', 'America/Lower_Princes'),
  ('1742', 'CA', 'America/Toronto'),
  ('1753', 'CA', 'America/Toronto'),
  ('1758', 'LC', 'America/St_Lucia'),
  ('1767', 'DM', 'America/Dominica'),
  ('1778', 'CA', 'America/Vancouver'),
  ('1780', 'CA', 'America/Edmonton'),
  ('1782', 'CA', 'America/Halifax'),
  ('1784', 'VC', 'America/St_Vincent'),
  ('1787', 'PR', 'America/Puerto_Rico'),
  ('1807', 'CA', 'America/Toronto'),
  ('1809', 'DO', 'America/Santo_Domingo'),
  ('1819', 'CA', 'America/Toronto'),
  ('1825', 'CA', 'America/Edmonton'),
  ('1829', 'DO', 'America/Santo_Domingo'),
  ('1849', 'DO', 'America/Santo_Domingo'),
  ('1867', 'CA', 'America/Whitehorse'),
  ('1868', 'TT', 'America/Port_of_Spain'),
  ('1869', 'KN', 'America/St_Kitts'),
  ('1873', 'CA', 'America/Toronto'),
  ('1876', 'JM', 'America/Jamaica'),
  ('1879', 'CA', 'America/St_Johns'),
  ('1902', 'CA', 'America/Halifax'),
  ('1905', 'CA', 'America/Toronto'),
  ('1939', 'PR', 'America/Puerto_Rico'),
  ('1942', 'CA', 'America/Toronto'),
  ('20', 'EG', 'Africa/Cairo'),
  ('211', 'SS', 'Africa/Juba'),
  ('212', 'MA', 'Africa/Casablanca'),
  ('2125288', 'EH', 'Africa/El_Aaiun'),
  ('2125289', 'EH', 'Africa/El_Aaiun'),
  ('213', 'DZ', 'Africa/Algiers'),
  ('216', 'TN', 'Africa/Tunis'),
  ('218', 'LY', 'Africa/Tripoli'),
  ('220', 'GM', 'Africa/Banjul'),
  ('221', 'SN', 'Africa/Dakar'),
  ('222', 'MR', 'Africa/Nouakchott'),
  ('223', 'ML', 'Africa/Bamako'),
  ('224', 'GN', 'Africa/Conakry'),
  ('225', 'CI', 'Africa/Abidjan'),
  ('226', 'BF', 'Africa/Ouagadougou'),
  ('227', 'NE', 'Africa/Niamey'),
  ('228', 'TG', 'Africa/Lome'),
  ('229', 'BJ', 'Africa/Porto-Novo'),
  ('230', 'MU', 'Indian/Mauritius'),
  ('231', 'LR', 'Africa/Monrovia'),
  ('232', 'SL', 'Africa/Freetown'),
  ('233', 'GH', 'Africa/Accra'),
  ('234', 'NG', 'Africa/Lagos'),
  ('235', 'TD', 'Africa/Ndjamena'),
  ('236', 'CF', 'Africa/Bangui'),
  ('237', 'CM', 'Africa/Douala'),
  ('238', 'CV', 'Atlantic/Cape_Verde'),
  ('239', 'ST', 'Africa/Sao_Tome'),
  ('240', 'GQ', 'Africa/Malabo'),
  ('241', 'GA', 'Africa/Libreville'),
  ('242', 'CG', 'Africa/Brazzaville'),
  ('243', 'CD', 'Africa/Kinshasa'),
  ('244', 'AO', 'Africa/Luanda'),
  ('245', 'GW', 'Africa/Bissau'),
  ('246', 'IO', 'Indian/Chagos'),
  ('247', 'SH', 'Atlantic/St_Helena'),
  ('248', 'SC', 'Indian/Mahe'),
  ('249', 'SD', 'Africa/Khartoum'),
  ('250', 'RW', 'Africa/Kigali'),
  ('251', 'ET', 'Africa/Addis_Ababa'),
  ('252', 'SO', 'Africa/Mogadishu'),
  ('253', 'DJ', 'Africa/Djibouti'),
  ('254', 'KE', 'Africa/Nairobi'),
  ('255', 'TZ', 'Africa/Dar_es_Salaam'),
  ('256', 'UG', 'Africa/Kampala'),
  ('257', 'BI', 'Africa/Bujumbura'),
  ('258', 'MZ', 'Africa/Maputo'),
  ('260', 'ZM', 'Africa/Lusaka'),
  ('261', 'MG', 'Indian/Antananarivo'),
  ('262', 'RE', 'Indian/Reunion'),
  ('262269', 'YT', 'Indian/Mayotte'),
  ('262639', 'YT', 'Indian/Mayotte'),
  ('263', 'ZW', 'Africa/Harare'),
  ('264', 'NA', 'Africa/Windhoek'),
  ('265', 'MW', 'Africa/Blantyre'),
  ('266', 'LS', 'Africa/Maseru'),
  ('267', 'BW', 'Africa/Gaborone'),
  ('268', 'SZ', 'Africa/Mbabane'),
  ('269', 'KM', 'Indian/Comoro'),
  ('27', 'ZA', 'Africa/Johannesburg'),
  ('290', 'SH', 'Atlantic/St_Helena'),
  ('291', 'ER', 'Africa/Asmara'),
  ('297', 'AW', 'America/Aruba'),
  ('298', 'FO', 'Atlantic/Faroe'),
  ('299', 'GL', 'America/Nuuk'),
  ('30', 'GR', 'Europe/Athens'),
  ('31', 'NL', 'Europe/Amsterdam'),
  ('32', 'BE', 'Europe/Brussels'),
  ('33', 'FR', 'Europe/Paris'),
  ('34', 'ES', 'Europe/Madrid'),
  ('350', 'GI', 'Europe/Gibraltar'),
  ('351', 'PT', 'Europe/Lisbon'),
  ('352', 'LU', 'Europe/Luxembourg'),
  ('353', 'IE', 'Europe/Dublin'),
  ('354', 'IS', 'Atlantic/Reykjavik'),
  ('355', 'AL', 'Europe/Tirane'),
  ('356', 'MT', 'Europe/Malta'),
  ('357', 'CY', 'Asia/Nicosia'),
  ('358', 'FI', 'Europe/Helsinki'),
  ('35818', 'AX', 'Europe/Mariehamn'),
  ('359', 'BG', 'Europe/Sofia'),
  ('36', 'HU', 'Europe/Budapest'),
  ('370', 'LT', 'Europe/Vilnius'),
  ('371', 'LV', 'Europe/Riga'),
  ('372', 'EE', 'Europe/Tallinn'),
  ('373', 'MD', 'Europe/Chisinau'),
  ('374', 'AM', 'Asia/Yerevan'),
  ('375', 'BY', 'Europe/Minsk'),
  ('376', 'AD', 'Europe/Andorra'),
  ('377', 'MC', 'Europe/Monaco'),
  ('378', 'SM', 'Europe/San_Marino'),
  ('380', 'UA', 'Europe/Kyiv'),
  ('381', 'RS', 'Europe/Belgrade'),
  ('382', 'ME', 'Europe/Podgorica'),
  ('383', 'XK', 'Europe/Belgrade'),
  ('385', 'HR', 'Europe/Zagreb'),
  ('386', 'SI', 'Europe/Ljubljana'),
  ('387', 'BA', 'Europe/Sarajevo'),
  ('389', 'MK', 'Europe/Skopje'),
  ('39', 'IT', 'Europe/Rome'),
  ('40', 'RO', 'Europe/Bucharest'),
  ('41', 'CH', 'Europe/Zurich'),
  ('420', 'CZ', 'Europe/Prague'),
  ('421', 'SK', 'Europe/Bratislava'),
  ('423', 'LI', 'Europe/Vaduz'),
  ('43', 'AT', 'Europe/Vienna'),
  ('44', 'GB', 'Europe/London'),
  ('45', 'DK', 'Europe/Copenhagen'),
  ('46', 'SE', 'Europe/Stockholm'),
  ('47', 'NO', 'Europe/Oslo'),
  ('4779', 'SJ', 'Arctic/Longyearbyen'),
  ('48', 'PL', 'Europe/Warsaw'),
  ('49', 'DE', 'Europe/Berlin'),
  ('500', 'FK', 'Atlantic/Stanley'),
  ('501', 'BZ', 'America/Belize'),
  ('502', 'GT', 'America/Guatemala'),
  ('503', 'SV', 'America/El_Salvador'),
  ('504', 'HN', 'America/Tegucigalpa'),
  ('505', 'NI', 'America/Managua'),
  ('506', 'CR', 'America/Costa_Rica'),
  ('507', 'PA', 'America/Panama'),
  ('508', 'PM', 'America/Miquelon'),
  ('509', 'HT', 'America/Port-au-Prince'),
  ('51', 'PE', 'America/Lima'),
  ('52', 'MX', 'America/Mexico_City'),
  ('53', 'CU', 'America/Havana'),
  ('54', 'AR', 'America/Argentina/Buenos_Aires'),
  ('55', 'BR', 'America/Sao_Paulo'),
  ('56', 'CL', 'America/Santiago'),
  ('57', 'CO', 'America/Bogota'),
  ('58', 'VE', 'America/Caracas'),
  ('590', 'GP', 'America/Guadeloupe'),
  ('591', 'BO', 'America/La_Paz'),
  ('592', 'GY', 'America/Guyana'),
  ('593', 'EC', 'America/Guayaquil'),
  ('594', 'GF', 'America/Cayenne'),
  ('595', 'PY', 'America/Asuncion'),
  ('596', 'MQ', 'America/Martinique'),
  ('597', 'SR', 'America/Paramaribo'),
  ('598', 'UY', 'America/Montevideo'),
  ('599', 'CW', 'America/Curacao'),
  ('5993', 'BQ', 'America/Kralendijk'),
  ('5994', 'BQ', 'America/Kralendijk'),
  ('5997', 'BQ', 'America/Kralendijk'),
  ('60', 'MY', 'Asia/Kuala_Lumpur'),
  ('61', 'AU', 'Australia/Sydney'),
  ('6189162', 'CC', 'Indian/Cocos'),
  ('6189164', 'CX', 'Indian/Christmas'),
  ('62', 'ID', 'Asia/Jakarta'),
  ('63', 'PH', 'Asia/Manila'),
  ('64', 'NZ', 'Pacific/Auckland'),
  ('65', 'SG', 'Asia/Singapore'),
  ('66', 'TH', 'Asia/Bangkok'),
  ('670', 'TL', 'Asia/Dili'),
  ('672', 'NF', 'Pacific/Norfolk'),
  ('673', 'BN', 'Asia/Brunei'),
  ('674', 'NR', 'Pacific/Nauru'),
  ('675', 'PG', 'Pacific/Port_Moresby'),
  ('676', 'TO', 'Pacific/Tongatapu'),
  ('677', 'SB', 'Pacific/Guadalcanal'),
  ('678', 'VU', 'Pacific/Efate'),
  ('679', 'FJ', 'Pacific/Fiji'),
  ('680', 'PW', 'Pacific/Palau'),
  ('681', 'WF', 'Pacific/Wallis'),
  ('682', 'CK', 'Pacific/Rarotonga'),
  ('683', 'NU', 'Pacific/Niue'),
  ('685', 'WS', 'Pacific/Apia'),
  ('686', 'KI', 'Pacific/Tarawa'),
  ('687', 'NC', 'Pacific/Noumea'),
  ('688', 'TV', 'Pacific/Funafuti'),
  ('689', 'PF', 'Pacific/Tahiti'),
  ('690', 'TK', 'Pacific/Fakaofo'),
  ('691', 'FM', 'Pacific/Pohnpei'),
  ('692', 'MH', 'Pacific/Majuro'),
  ('7', 'RU', 'Europe/Moscow'),
  ('76', 'KZ', 'Asia/Almaty'),
  ('77', 'KZ', 'Asia/Almaty'),
  ('81', 'JP', 'Asia/Tokyo'),
  ('82', 'KR', 'Asia/Seoul'),
  ('84', 'VN', 'Asia/Ho_Chi_Minh'),
  ('850', 'KP', 'Asia/Pyongyang'),
  ('852', 'HK', 'Asia/Hong_Kong'),
  ('853', 'MO', 'Asia/Macau'),
  ('855', 'KH', 'Asia/Phnom_Penh'),
  ('856', 'LA', 'Asia/Vientiane'),
  ('86', 'CN', 'Asia/Shanghai'),
  ('880', 'BD', 'Asia/Dhaka'),
  ('886', 'TW', 'Asia/Taipei'),
  ('90', 'TR', 'Europe/Istanbul'),
  ('91', 'IN', 'Asia/Kolkata'),
  ('92', 'PK', 'Asia/Karachi'),
  ('93', 'AF', 'Asia/Kabul'),
  ('94', 'LK', 'Asia/Colombo'),
  ('95', 'MM', 'Asia/Yangon'),
  ('960', 'MV', 'Indian/Maldives'),
  ('961', 'LB', 'Asia/Beirut'),
  ('962', 'JO', 'Asia/Amman'),
  ('963', 'SY', 'Asia/Damascus'),
  ('964', 'IQ', 'Asia/Baghdad'),
  ('965', 'KW', 'Asia/Kuwait'),
  ('966', 'SA', 'Asia/Riyadh'),
  ('967', 'YE', 'Asia/Aden'),
  ('968', 'OM', 'Asia/Muscat'),
  ('970', 'PS', 'Asia/Hebron'),
  ('971', 'AE', 'Asia/Dubai'),
  ('972', 'IL', 'Asia/Jerusalem'),
  ('973', 'BH', 'Asia/Bahrain'),
  ('974', 'QA', 'Asia/Qatar'),
  ('975', 'BT', 'Asia/Thimphu'),
  ('976', 'MN', 'Asia/Ulaanbaatar'),
  ('977', 'NP', 'Asia/Kathmandu'),
  ('98', 'IR', 'Asia/Tehran'),
  ('992', 'TJ', 'Asia/Dushanbe'),
  ('993', 'TM', 'Asia/Ashgabat'),
  ('994', 'AZ', 'Asia/Baku'),
  ('995', 'GE', 'Asia/Tbilisi'),
  ('996', 'KG', 'Asia/Bishkek'),
  ('998', 'UZ', 'Asia/Tashkent');
ALTER TABLE wasend.country_zones ALTER COLUMN builtin SET DEFAULT false;

-- ---------------------------------------------------------------------
-- Time zones and windows
-- ---------------------------------------------------------------------

-- Is zone a time zone name of the server's time zone database?  Not an
-- abbreviation: those depend on the session's timezone_abbreviations,
-- which the caller sets and the senders do not share (src/sql_api.c).
CREATE FUNCTION wasend._is_zone_name(zone text) RETURNS boolean
AS 'MODULE_PATHNAME', 'wasend_is_zone_name'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._is_zone_name(text) FROM PUBLIC;

-- Raise a clear error unless zone is a time zone name PostgreSQL knows.
-- Every zone a claim uses passed here, so no claim fails on one.
CREATE FUNCTION wasend._check_timezone(zone text, what text) RETURNS void
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF zone IS NULL OR btrim(zone) = '' THEN
        RAISE EXCEPTION '% must not be empty', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an IANA time zone name such as Europe/Berlin, see pg_timezone_names.';
    END IF;
    IF NOT wasend._is_zone_name(zone) THEN
        RAISE EXCEPTION 'unknown time zone "%" (%)', zone, what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an IANA time zone name such as Europe/Berlin or America/Sao_Paulo (see SELECT name FROM pg_timezone_names), not an abbreviation.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._check_timezone(text, text) FROM PUBLIC;

-- wasend.country_zones holds zone names only
CREATE FUNCTION wasend._country_zone_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wasend._check_timezone(NEW.zone, format('zone of calling code %s', NEW.calling_code));
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._country_zone_check() FROM PUBLIC;
CREATE TRIGGER country_zone_check BEFORE INSERT OR UPDATE ON wasend.country_zones
    FOR EACH ROW EXECUTE FUNCTION wasend._country_zone_check();

-- The main time zone of a recipient's country calling code, or NULL: the
-- longest of its first seven digits that wasend.country_zones knows.
CREATE FUNCTION wasend._recipient_zone(recipient text) RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT z.zone FROM wasend.country_zones z
     WHERE z.calling_code IN (left(recipient, 7), left(recipient, 6), left(recipient, 5), left(recipient, 4),
                              left(recipient, 3), left(recipient, 2), left(recipient, 1))
     ORDER BY length(z.calling_code) DESC LIMIT 1
$$;
REVOKE ALL ON FUNCTION wasend._recipient_zone(text) FROM PUBLIC;

-- When a send window [w_start, w_end) opens next in zone, or NULL while it
-- is open (and when there is no window).
CREATE FUNCTION wasend._window_opens(w_start time, w_end time, zone text)
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN w_start IS NULL THEN NULL
                WHEN l.t::time >= w_start AND l.t::time < w_end THEN NULL
                WHEN l.t::time < w_start THEN (l.t::date + w_start) AT TIME ZONE zone
                ELSE (l.t::date + 1 + w_start) AT TIME ZONE zone END
      FROM (SELECT now() AT TIME ZONE coalesce(zone, 'UTC') AS t) l
$$;
REVOKE ALL ON FUNCTION wasend._window_opens(time, time, text) FROM PUBLIC;
-- campaign_progress calls it with its reader's rights
GRANT EXECUTE ON FUNCTION wasend._window_opens(time, time, text) TO wasend_viewer;

-- The zone a row of a campaign is windowed in.
CREATE FUNCTION wasend._row_zone(send_timezone text, row_timezone text, recipient text)
RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN send_timezone <> 'recipient' THEN send_timezone
                ELSE coalesce(row_timezone, wasend._recipient_zone(recipient), 'UTC') END
$$;
REVOKE ALL ON FUNCTION wasend._row_zone(text, text, text) FROM PUBLIC;

-- Check a campaign's priority and send window (create and update).
CREATE FUNCTION wasend._check_lane_options(priority integer, w_start time, w_end time, zone text)
RETURNS void
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF priority IS NULL OR priority < 0 OR priority > 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, not %', coalesce(priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Of two campaign rows of one number, the one of the higher priority goes first; equal priorities share the rate.';
    END IF;
    IF (w_start IS NULL) <> (w_end IS NULL) THEN
        RAISE EXCEPTION 'a send window needs both send_window_start and send_window_end'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give both, e.g. send_window_start => ''09:00'', send_window_end => ''20:00''.';
    END IF;
    IF w_start >= w_end THEN
        RAISE EXCEPTION 'send window ends before it starts (% to %)', w_start, w_end
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The window is one stretch of a local day: send_window_start must be before send_window_end, e.g. 09:00 to 20:00.';
    END IF;
    IF zone IS NULL THEN
        RAISE EXCEPTION 'send_timezone must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give a zone name, or recipient for each recipient''s own zone.';
    END IF;
    IF zone <> 'recipient' THEN
        PERFORM wasend._check_timezone(zone, 'send_timezone');
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._check_lane_options(integer, time, time, text) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Rows: the write check knows lanes and time zones
-- ---------------------------------------------------------------------

-- Checks and normalizes every row written to wasend.send_queue (see
-- 0.2.0 and 0.3.0).  Rows of a transactional campaign carry a priority
-- (0 when none is given), rows of other campaigns none; a row's timezone
-- must be one PostgreSQL knows, so that no claim fails on it.
CREATE OR REPLACE FUNCTION wasend._send_queue_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    adding boolean;
BEGIN
    NEW.recipient := wasend._normalize_recipient(NEW.recipient);
    adding := TG_OP = 'INSERT' AND NEW.status = 'ready'
              AND NEW.sent_at IS NULL AND NEW.failed_at IS NULL
              AND NEW.created_at = now();
    IF adding AND EXISTS (SELECT 1 FROM wasend.suppressions s
                           WHERE s.recipient = NEW.recipient
                             AND (s.scope = 'all'
                                  OR EXISTS (SELECT 1 FROM wasend.campaigns c
                                              WHERE c.id = NEW.campaign_id
                                                AND c.category = 'marketing'))) THEN
        PERFORM set_config('wasend_state.suppressed_skipped',
                           (coalesce(nullif(current_setting('wasend_state.suppressed_skipped', true), ''), '0')::int + 1)::text,
                           true);
        RETURN NULL;
    END IF;
    IF NEW.payload IS NOT NULL THEN
        PERFORM wasend._check_message(NEW.payload, format('payload for recipient %s', NEW.recipient));
    END IF;
    IF NEW.timezone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) THEN
        PERFORM wasend._check_timezone(NEW.timezone, format('timezone of recipient %s', NEW.recipient));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.campaign_id IS DISTINCT FROM OLD.campaign_id
       OR NEW.priority IS DISTINCT FROM OLD.priority THEN
        -- the share lock keeps a sender from completing the campaign while
        -- rows are being added to it (see src/queue.sql, lock_done); a
        -- transactional lane (rows with a priority) never completes and
        -- takes no lock: wasend_send's transactions would queue up
        -- multixacts on its row
        IF NEW.priority IS NOT NULL THEN
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id;
        ELSE
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id FOR SHARE;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'campaign % does not exist', NEW.campaign_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first with wasend_create_campaign().';
        END IF;
        IF st IN ('completed', 'cancelled')
           AND (adding OR (TG_OP = 'UPDATE' AND NEW.status = 'ready')) THEN
            RAISE EXCEPTION 'cannot add recipients to campaign %: it is %', NEW.campaign_id, st
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Create a new campaign with wasend_create_campaign().';
        END IF;
        IF k = 'transactional' THEN
            NEW.priority := coalesce(NEW.priority, 0);
            IF NEW.payload IS NULL THEN
                RAISE EXCEPTION 'a row of a transactional lane needs its message in payload'
                    USING ERRCODE = 'not_null_violation',
                          HINT = 'Use wasend_send(number_id, recipient, message).';
            END IF;
        ELSIF NEW.priority IS NOT NULL THEN
            RAISE EXCEPTION 'only rows of a transactional campaign have a priority'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Send one message ahead of campaign rows with wasend_send(); give a campaign a priority with wasend_update_campaign(id, priority => n).';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.status = 'sending' THEN
        NEW.claimed_by := NULL;
        NEW.uncertain := true;
        NEW.last_error_class := 'uncertain';
        NEW.last_error := 'outcome unknown: the message was claimed or in flight when the copy was taken';
        NEW.next_attempt_at := now();
        IF st = 'cancelled' THEN
            NEW.status := 'cancelled';
        ELSIF coalesce(current_setting('wasend.on_uncertain', true), 'retry') = 'fail'
              OR NEW.attempts >= coalesce(nullif(current_setting('wasend.max_attempts', true), '')::int, 5) THEN
            NEW.status := 'failed';
            NEW.failed_at := now();
        ELSE
            NEW.status := 'ready';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- the check also runs when a row's timezone or priority changes
DROP TRIGGER send_queue_check ON wasend.send_queue;
CREATE TRIGGER send_queue_check
    BEFORE INSERT OR UPDATE OF recipient, payload, campaign_id, timezone, priority ON wasend.send_queue
    FOR EACH ROW EXECUTE FUNCTION wasend._send_queue_check();

-- ---------------------------------------------------------------------
-- Campaigns: priority and send window
-- ---------------------------------------------------------------------

-- A campaign in draft (wasend_operator).  category defaults to marketing
-- for a template and service otherwise.
DROP FUNCTION wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval);
CREATE FUNCTION wasend_create_campaign(name text, number_id bigint, message jsonb,
                                       category text DEFAULT NULL,
                                       pause_on_quality boolean DEFAULT true,
                                       pacing text DEFAULT 'meta',
                                       frequency_cap integer DEFAULT NULL,
                                       frequency_window interval DEFAULT '7 days',
                                       priority integer DEFAULT 0,
                                       send_window_start time DEFAULT NULL,
                                       send_window_end time DEFAULT NULL,
                                       send_timezone text DEFAULT 'recipient')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
    cat text;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the campaign a name you will recognize in wasend.campaign_progress.';
    END IF;
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wasend.whatsapp_numbers n WHERE n.id = number_id) THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.';
    END IF;
    PERFORM wasend._check_message(message, 'campaign message');
    cat := coalesce(category, CASE WHEN message ->> 'type' = 'template' THEN 'marketing' ELSE 'service' END);
    IF pause_on_quality IS NULL OR pacing IS NULL OR frequency_window IS NULL THEN
        RAISE EXCEPTION 'pause_on_quality, pacing and frequency_window must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave them out for the defaults (true, meta, 7 days).';
    END IF;
    PERFORM wasend._check_campaign_options(cat, pacing, 1, '1 s', frequency_cap, frequency_window);
    PERFORM wasend._check_lane_options(priority, send_window_start, send_window_end, send_timezone);
    INSERT INTO wasend.campaigns (name, number_id, message, category, pause_on_quality, pacing,
                                  frequency_cap, frequency_window, priority,
                                  send_window_start, send_window_end, send_timezone)
    VALUES (name, number_id, message, cat, pause_on_quality, pacing, frequency_cap, frequency_window,
            priority, send_window_start, send_window_end, send_timezone)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval,
                                              integer, time, time, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval,
                                                 integer, time, time, text) TO wasend_operator;

-- Change a campaign's options (wasend_operator); NULL keeps an option.
-- frequency_cap => 0 removes the cap; clear_send_window => true the window.
DROP FUNCTION wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval);
CREATE FUNCTION wasend_update_campaign(campaign_id bigint,
                                       category text DEFAULT NULL,
                                       pause_on_quality boolean DEFAULT NULL,
                                       pacing text DEFAULT NULL,
                                       pacing_sample integer DEFAULT NULL,
                                       pacing_hold interval DEFAULT NULL,
                                       frequency_cap integer DEFAULT NULL,
                                       frequency_window interval DEFAULT NULL,
                                       priority integer DEFAULT NULL,
                                       send_window_start time DEFAULT NULL,
                                       send_window_end time DEFAULT NULL,
                                       send_timezone text DEFAULT NULL,
                                       clear_send_window boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    ws time;
    we time;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot change campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;
    IF frequency_cap < 0 THEN
        RAISE EXCEPTION 'frequency_cap must not be negative, not %', frequency_cap
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the most marketing messages one recipient may get per frequency_window, or 0 to remove the cap.';
    END IF;
    IF clear_send_window IS NULL THEN
        RAISE EXCEPTION 'clear_send_window must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass true to remove the send window, or leave it out.';
    END IF;
    IF c.kind = 'transactional' AND (send_window_start IS NOT NULL OR send_window_end IS NOT NULL) THEN
        RAISE EXCEPTION 'campaign % is the transactional lane of its number: it has no send window', campaign_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'wasend_send messages go at once, whatever the hour; set a window on a campaign of your own instead.';
    END IF;
    IF clear_send_window THEN
        ws := NULL;
        we := NULL;
    ELSE
        ws := coalesce(send_window_start, c.send_window_start);
        we := coalesce(send_window_end, c.send_window_end);
    END IF;
    PERFORM wasend._check_campaign_options(coalesce(category, c.category), coalesce(pacing, c.pacing),
                                           coalesce(pacing_sample, c.pacing_sample),
                                           coalesce(pacing_hold, c.pacing_hold),
                                           nullif(coalesce(frequency_cap, c.frequency_cap), 0),
                                           coalesce(frequency_window, c.frequency_window));
    PERFORM wasend._check_lane_options(coalesce(priority, c.priority), ws, we,
                                       coalesce(send_timezone, c.send_timezone));
    UPDATE wasend.campaigns x
       SET category = coalesce(wasend_update_campaign.category, x.category),
           pause_on_quality = coalesce(wasend_update_campaign.pause_on_quality, x.pause_on_quality),
           pacing = coalesce(wasend_update_campaign.pacing, x.pacing),
           pacing_sample = coalesce(wasend_update_campaign.pacing_sample, x.pacing_sample),
           pacing_hold = coalesce(wasend_update_campaign.pacing_hold, x.pacing_hold),
           frequency_cap = nullif(coalesce(wasend_update_campaign.frequency_cap, x.frequency_cap), 0),
           frequency_window = coalesce(wasend_update_campaign.frequency_window, x.frequency_window),
           priority = coalesce(wasend_update_campaign.priority, x.priority),
           send_window_start = ws,
           send_window_end = we,
           send_timezone = coalesce(wasend_update_campaign.send_timezone, x.send_timezone),
           paced_until = CASE WHEN coalesce(wasend_update_campaign.pacing, x.pacing) = 'off' THEN NULL
                              ELSE x.paced_until END,
           sample_left = CASE WHEN coalesce(wasend_update_campaign.pacing, x.pacing) = 'sample' THEN x.sample_left END,
           updated_at = now()
     WHERE x.id = campaign_id;
    -- rows waiting for the old cap or window are looked at again
    IF frequency_cap IS NOT NULL OR frequency_window IS NOT NULL OR category IS NOT NULL THEN
        UPDATE wasend.send_queue q
           SET next_attempt_at = now()
         WHERE q.campaign_id = wasend_update_campaign.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL
           AND q.status = 'ready' AND q.waiting_for = 'frequency_cap';
    END IF;
    IF send_window_start IS NOT NULL OR send_window_end IS NOT NULL OR send_timezone IS NOT NULL
       OR clear_send_window THEN
        UPDATE wasend.send_queue q
           SET next_attempt_at = now(), waiting_for = NULL
         WHERE q.campaign_id = wasend_update_campaign.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL
           AND q.status = 'ready' AND q.waiting_for = 'send_window';
    END IF;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval,
                                              integer, time, time, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval,
                                                 integer, time, time, text, boolean) TO wasend_operator;

-- A transactional lane is never cancelled (wasend_send would have nowhere
-- to put its messages); otherwise as before.
CREATE OR REPLACE FUNCTION wasend_cancel_campaign(campaign_id bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n bigint;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot cancel campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only a campaign that has not finished can be cancelled.';
    END IF;
    IF c.kind = 'transactional' THEN
        RAISE EXCEPTION 'cannot cancel campaign %: it is the transactional lane of its number', campaign_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Pause it with wasend_pause_campaign(), or cancel single messages: UPDATE wasend.send_queue SET status = ''cancelled'' WHERE id = ... AND status = ''ready''.';
    END IF;
    UPDATE wasend.send_queue q
       SET status = 'cancelled'
     WHERE q.campaign_id = wasend_cancel_campaign.campaign_id AND q.status = 'ready'
       AND q.sent_at IS NULL AND q.failed_at IS NULL;   -- send_queue_ready_idx
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE wasend.campaigns
       SET status = 'cancelled', cancelled_at = now(), updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
    RETURN n;
END
$$;

-- wasend_enqueue: as in 0.2.0, the conflict target is now the unique
-- index of campaign rows; the transactional lane takes wasend_send only.
CREATE OR REPLACE FUNCTION wasend_enqueue(campaign_id bigint, recipients text[],
                                          payloads jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    st text;
    k text;
    dup text;
    added bigint;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    IF recipients IS NULL THEN
        RAISE EXCEPTION 'recipients must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass an array of phone numbers, e.g. ARRAY[''15551234567''].';
    END IF;
    IF array_ndims(recipients) > 1 THEN
        RAISE EXCEPTION 'recipients must be a one-dimensional array'
            USING ERRCODE = 'array_subscript_error',
                  HINT = 'Pass an array of phone numbers, e.g. ARRAY[''15551234567''].';
    END IF;
    IF payloads IS NOT NULL AND
       coalesce(array_length(payloads, 1), 0) <> coalesce(array_length(recipients, 1), 0) THEN
        RAISE EXCEPTION 'payloads has % elements but recipients has %',
                        coalesce(array_length(payloads, 1), 0),
                        coalesce(array_length(recipients, 1), 0)
            USING ERRCODE = 'array_subscript_error',
                  HINT = 'Give one payload per recipient (NULL for the campaign''s message), or no payloads at all.';
    END IF;
    SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
     WHERE c.id = wasend_enqueue.campaign_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Create it first with wasend_create_campaign().';
    END IF;
    IF st IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot add recipients to campaign %: it is %', campaign_id, st
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;
    IF k = 'transactional' THEN
        RAISE EXCEPTION 'campaign % is the transactional lane of its number', campaign_id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Send single messages with wasend_send(number_id, recipient, message); enqueue recipients into a campaign of your own.';
    END IF;

    SELECT x.r INTO dup
      FROM (SELECT wasend._normalize_recipient(u) AS r FROM unnest(recipients) u) x
     GROUP BY x.r HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'recipient "%" appears more than once in this call', dup
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Numbers are compared without their leading "+".',
                  HINT = 'Pass each recipient once (e.g. SELECT DISTINCT); recipients already queued in the campaign are skipped.';
    END IF;

    INSERT INTO wasend.send_queue (campaign_id, recipient, payload)
    SELECT wasend_enqueue.campaign_id, r.recipient, p.payload
      FROM unnest(recipients) WITH ORDINALITY AS r(recipient, i)
      LEFT JOIN unnest(payloads) WITH ORDINALITY AS p(payload, i) USING (i)
     ORDER BY r.i
    ON CONFLICT (campaign_id, recipient) WHERE priority IS NULL DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;

-- ---------------------------------------------------------------------
-- wasend_send: one message ahead of the campaigns
-- ---------------------------------------------------------------------

-- Queue one message on a number's transactional lane (wasend_operator).
-- It is a row like any other: sent once the caller's transaction commits,
-- never if it rolls back; the senders claim it as soon as the commit wakes
-- them and put it ahead of every campaign row of the number (rows of the
-- lane in priority order, 0-100, higher first).  Returns the row id, for
-- wasend_send_status().
CREATE FUNCTION wasend_send(number_id bigint, recipient text, message jsonb,
                            priority integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n record;
    cid bigint;
    cst text;
    r text;
    rid bigint;
BEGIN
    IF priority IS NULL OR priority < 0 OR priority > 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, not %', coalesce(priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Among wasend_send messages of a number the higher priority goes first; all of them go before campaign rows.';
    END IF;
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    SELECT x.id, x.phone_number_id INTO n FROM wasend.whatsapp_numbers x WHERE x.id = number_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.';
    END IF;
    PERFORM wasend._check_message(message, 'message');
    r := wasend._normalize_recipient(recipient);
    IF EXISTS (SELECT 1 FROM wasend.suppressions s WHERE s.recipient = r AND s.scope = 'all') THEN
        RAISE EXCEPTION 'recipient "%" is suppressed', r
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = (SELECT s.reason FROM wasend.suppressions s WHERE s.recipient = r),
                  HINT = 'The recipient asked not to be messaged, or Meta refused them; see wasend.suppressions.';
    END IF;

    -- the number's lane, made on first use (the unique index settles a race)
    SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
     WHERE c.number_id = n.id AND c.kind = 'transactional';
    IF NOT FOUND THEN
        INSERT INTO wasend.campaigns AS c (name, number_id, message, category, kind, status,
                                            started_at, pacing, priority)
        VALUES ('transactional: ' || n.phone_number_id, n.id,
                '{"type": "text", "text": {"body": "wasend_send rows carry their own message"}}'::jsonb,
                'utility', 'transactional', 'running', now(), 'off', 100)
        ON CONFLICT (number_id) WHERE kind = 'transactional' DO NOTHING
        RETURNING c.id, c.status INTO cid, cst;
        IF cid IS NULL THEN
            SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
             WHERE c.number_id = n.id AND c.kind = 'transactional';
        END IF;
        -- the row the senders lock to claim the lane one at a time
        -- (src/queue.sql, claim); owner-only, so nobody else can hold it
        INSERT INTO wasend.claim_locks (name) VALUES ('lane:' || cid::text) ON CONFLICT DO NOTHING;
    END IF;

    INSERT INTO wasend.send_queue (campaign_id, recipient, payload, priority)
    VALUES (cid, r, message, wasend_send.priority)
    RETURNING id INTO rid;
    IF cst = 'paused' THEN
        RAISE NOTICE 'the transactional lane of number % (campaign %) is paused: the message waits', n.id, cid
            USING HINT = 'See wasend.campaign_progress for why; wasend_resume_campaign(' || cid || ') sends it.';
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN rid;
END
$$;
REVOKE ALL ON FUNCTION wasend_send(bigint, text, jsonb, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_send(bigint, text, jsonb, integer) TO wasend_operator;

-- The outcome of one queued message (wasend_viewer): any row id, of
-- wasend_send or of a campaign.
CREATE FUNCTION wasend_send_status(message_id bigint)
RETURNS TABLE (id bigint, campaign_id bigint, recipient text, status text, attempts integer,
               wa_message_id text, error_code integer, error text, waiting_for text,
               next_attempt_at timestamptz, created_at timestamptz, sent_at timestamptz,
               delivered_at timestamptz, read_at timestamptz, failed_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF message_id IS NULL THEN
        RAISE EXCEPTION 'id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id wasend_send() returned.';
    END IF;
    RETURN QUERY
    SELECT q.id, q.campaign_id, q.recipient, q.status, q.attempts, q.wa_message_id,
           q.last_error_code, q.last_error, q.waiting_for,
           CASE WHEN q.status = 'ready' THEN greatest(q.next_attempt_at, q.created_at) END,
           q.created_at, q.sent_at, q.delivered_at, q.read_at, q.failed_at
      FROM wasend.send_queue q WHERE q.id = message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist', message_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Pass the id wasend_send() returned; rows removed with their campaign are gone.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend_send_status(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_send_status(bigint) TO wasend_viewer;

-- ---------------------------------------------------------------------
-- wasend_wait, wasend_dry_run, wasend_test_send
-- ---------------------------------------------------------------------

-- Block until a campaign ends (completed or cancelled), is paused (it then
-- needs a person), or timeout passes; returns its status then
-- (wasend_viewer).  Says how far it is every 10 s (NOTICE).  Needs READ
-- COMMITTED, each look at the campaign being a new snapshot, and a
-- transaction that has changed nothing: the senders cannot see an
-- uncommitted start.  Like any long statement, it holds back vacuum's
-- horizon while it waits: give it a timeout that fits.
CREATE FUNCTION wasend_wait(campaign_id bigint, timeout interval DEFAULT '1 hour')
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    deadline timestamptz;
    next_note timestamptz;
    p record;
    nap double precision := 0.01;
BEGIN
    IF campaign_id IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION 'campaign id and timeout must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'E.g. SELECT wasend_wait(42, ''30 minutes'').';
    END IF;
    IF timeout < '0'::interval THEN
        RAISE EXCEPTION 'timeout must not be negative, not %', timeout
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long to wait at most, e.g. ''30 minutes''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wasend_wait needs READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'Its snapshot would never see the senders'' progress; call it outside that transaction.';
    END IF;
    SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c WHERE c.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    IF k = 'transactional' THEN
        RAISE EXCEPTION 'campaign % is a transactional lane: it never ends', campaign_id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Wait for one message with wasend_send_status(id) instead.';
    END IF;
    IF txid_current_if_assigned() IS NOT NULL THEN
        -- whatever it changed (a start, rows added) the senders cannot see
        -- before it commits, and rows it added keep the campaign open
        RAISE EXCEPTION 'wasend_wait cannot run in a transaction that has changed data'
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'Commit first (a start or new rows are invisible to the senders until then), then call wasend_wait().';
    END IF;
    IF st = 'draft' THEN
        RAISE EXCEPTION 'campaign % is a draft: it will not end by itself', campaign_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Start it with wasend_start_campaign() first.';
    END IF;
    deadline := clock_timestamp() + timeout;
    next_note := clock_timestamp() + interval '10 s';
    LOOP
        SELECT c.status INTO st FROM wasend.campaigns c WHERE c.id = campaign_id;
        EXIT WHEN st IN ('completed', 'cancelled', 'paused');
        IF clock_timestamp() >= deadline THEN
            RAISE NOTICE 'campaign % is still % after %', campaign_id, st, timeout;
            RETURN st;
        END IF;
        IF clock_timestamp() >= next_note THEN
            SELECT v.percent_done, v.total, v.ready + v.sending AS left_, v.rate_per_sec, v.eta INTO p
              FROM wasend.campaign_progress v WHERE v.campaign_id = wasend_wait.campaign_id;
            RAISE NOTICE 'campaign %: % %% done (% of % left), % msg/s, eta %',
                         campaign_id, p.percent_done, p.left_, p.total, p.rate_per_sec,
                         coalesce(p.eta::text, 'unknown');
            next_note := clock_timestamp() + interval '10 s';
        END IF;
        PERFORM pg_sleep(least(nap, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
        nap := least(nap * 2, 0.5);
    END LOOP;
    RETURN st;
END
$$;
REVOKE ALL ON FUNCTION wasend_wait(bigint, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_wait(bigint, interval) TO wasend_viewer;

-- What a campaign would do now, without sending (wasend_viewer): of the
-- rows still to send, how many would go now, and how many wait for the
-- messaging limit, the send window, the frequency cap or a retry, are
-- suppressed, or invalid (no known country calling code); and how long
-- the rows that would go take at the number's rate (rate * 0.985, the
-- default wasend.rate_headroom).  The same rules as the claim, in the
-- claim's order, counted in one snapshot; the real run may differ by what
-- changes meanwhile (another campaign spending the same budget).
CREATE FUNCTION wasend_dry_run(campaign_id bigint)
RETURNS TABLE (would_send_now bigint, waiting_messaging_limit bigint, waiting_send_window bigint,
               waiting_frequency_cap bigint, waiting_retry bigint, suppressed bigint,
               invalid bigint, estimated_duration interval)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    lim integer;
    used bigint;
    rate integer;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT x.*, coalesce(n.business_id, 'number:' || n.id::text) AS portfolio, n.max_send_rate_per_sec AS rate
      INTO c FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    SELECT p.messaging_limit INTO lim FROM wasend.portfolios p WHERE p.portfolio = c.portfolio;
    SELECT count(*) INTO used FROM wasend.recipient_window r
     WHERE r.portfolio = c.portfolio AND r.last_at > now() - interval '24 hours';
    rate := c.rate;
    RETURN QUERY
    WITH r AS (
        SELECT q.id, q.recipient, q.next_attempt_at, q.waiting_for,
               wasend._recipient_zone(q.recipient) IS NULL AS invalid,
               EXISTS (SELECT 1 FROM wasend.suppressions s
                        WHERE s.recipient = q.recipient
                          AND (s.scope = 'all' OR c.category = 'marketing')) AS suppressed,
               CASE WHEN c.send_window_start IS NOT NULL AND c.kind <> 'transactional'
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end,
                                              wasend._row_zone(c.send_timezone, q.timezone, q.recipient))
               END IS NOT NULL AS outside,
               c.frequency_cap IS NOT NULL AND c.category = 'marketing'
                 AND (SELECT count(*) FROM wasend.send_queue q2 JOIN wasend.campaigns c2 ON c2.id = q2.campaign_id
                       WHERE q2.recipient = q.recipient AND c2.category = 'marketing'
                         AND q2.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                         AND coalesce(q2.sent_at, q2.claimed_at) > now() - c.frequency_window) >= c.frequency_cap AS capped,
               lim IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM wasend.recipient_window w
                                  WHERE w.portfolio = c.portfolio AND w.recipient = q.recipient
                                    AND w.last_at > now() - interval '24 hours')
                 AND NOT EXISTS (SELECT 1 FROM wasend.inbound_messages i
                                   JOIN wasend.whatsapp_numbers n2 ON n2.phone_number_id = i.phone_number_id
                                  WHERE i.from_number = q.recipient
                                    AND i.received_at > now() - interval '24 hours'
                                    AND coalesce(n2.business_id, 'number:' || n2.id::text) = c.portfolio) AS costs
          FROM wasend.send_queue q
         WHERE q.campaign_id = wasend_dry_run.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'),
    k AS (
        SELECT r.*,
               CASE WHEN r.invalid THEN 'invalid'
                    WHEN r.suppressed THEN 'suppressed'
                    WHEN r.outside THEN 'send_window'
                    WHEN r.capped THEN 'frequency_cap'
                    WHEN r.next_attempt_at > now() AND r.waiting_for = 'messaging_limit' THEN 'messaging_limit'
                    WHEN r.next_attempt_at > now() THEN 'retry'
                    WHEN r.costs THEN 'costs'
                    ELSE 'send' END AS fate
          FROM r),
    b AS (
        SELECT k.fate, row_number() OVER (ORDER BY min(k.id)) AS rn
          FROM k WHERE k.fate = 'costs' GROUP BY k.fate, k.recipient),
    f AS (
        SELECT count(*) FILTER (WHERE k.fate = 'send') AS send,
               count(*) FILTER (WHERE k.fate = 'messaging_limit') AS wait_limit,
               count(*) FILTER (WHERE k.fate = 'send_window') AS wait_window,
               count(*) FILTER (WHERE k.fate = 'frequency_cap') AS wait_cap,
               count(*) FILTER (WHERE k.fate = 'retry') AS wait_retry,
               count(*) FILTER (WHERE k.fate = 'suppressed') AS supp,
               count(*) FILTER (WHERE k.fate = 'invalid') AS inval
          FROM k),
    g AS (
        SELECT count(*) FILTER (WHERE b.rn <= greatest(lim - used, 0)) AS fits,
               count(*) FILTER (WHERE b.rn > greatest(lim - used, 0)) AS over
          FROM b)
    SELECT f.send + g.fits, f.wait_limit + g.over, f.wait_window, f.wait_cap, f.wait_retry,
           f.supp, f.inval,
           make_interval(secs => ceil((f.send + g.fits) / (greatest(rate, 1) * 0.985))::double precision)
      FROM f, g;
END
$$;
REVOKE ALL ON FUNCTION wasend_dry_run(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_dry_run(bigint) TO wasend_viewer;

-- POST one message body to a number's /messages endpoint, taking a slot
-- of the number's rate gate first; returns the HTTP status and the answer
-- (src/sql_api.c).  Internal: only wasend_test_send calls it.
CREATE FUNCTION wasend._http_post(phone_number_id text, access_token text, rate integer, body text,
                                  OUT http_status integer, OUT answer text)
AS 'MODULE_PATHNAME', 'wasend_http_post'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._http_post(text, text, integer, text) FROM PUBLIC;

-- Send a campaign's message to one recipient now, as the campaign would
-- (the recipient's own payload if the campaign has a row for them), and
-- return Meta's answer (wasend_operator).  Nothing is written: no queue
-- row, no messaging-limit slot, no campaign state; the request takes the
-- number's next free rate slot like any other.
CREATE FUNCTION wasend_test_send(campaign_id bigint, recipient text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n record;
    r text;
    body jsonb;
    res record;
    answer jsonb;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT * INTO c FROM wasend.campaigns x WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    r := wasend._normalize_recipient(recipient);
    IF wasend._recipient_zone(r) IS NULL THEN
        RAISE EXCEPTION 'invalid recipient "%": no known country calling code', r
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number in international format with its country code, e.g. 4915112345678 or 15551234567.';
    END IF;
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = r AND (s.scope = 'all' OR c.category = 'marketing')) THEN
        RAISE EXCEPTION 'recipient "%" is suppressed', r
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'See wasend.suppressions; test with a number of your own.';
    END IF;
    SELECT * INTO n FROM wasend.whatsapp_numbers x WHERE x.id = c.number_id;
    IF n.status <> 'active' THEN
        RAISE EXCEPTION 'number % is paused: %', n.phone_number_id, coalesce(n.pause_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Resume it with wasend_resume_number() first.';
    END IF;
    body := coalesce((SELECT q.payload FROM wasend.send_queue q
                       WHERE q.campaign_id = c.id AND q.recipient = r ORDER BY q.id LIMIT 1),
                     c.message)
            || jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
                                  'to', r, 'biz_opaque_callback_data', 'wasend:test:' || c.id::text);
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'a standby sends nothing'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Run the test send on the primary.';
    END IF;
    res := wasend._http_post(n.phone_number_id, n.access_token, n.max_send_rate_per_sec, body::text);
    -- Meta's text may quote the token: never hand it to the caller or the log
    IF length(n.access_token) >= 8 THEN
        res.answer := replace(res.answer, n.access_token, '[redacted token]');
    END IF;
    res.answer := wasend._redact(res.answer);
    BEGIN
        answer := res.answer::jsonb;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'the Graph API answered HTTP % with a body that is not JSON', res.http_status
            USING ERRCODE = 'invalid_text_representation',
                  DETAIL = left(res.answer, 200),
                  HINT = 'Check wasend.api_base_url.';
    END;
    IF res.http_status <> 200 THEN
        RAISE WARNING 'test send of campaign % to % failed: HTTP %, %', c.id, r, res.http_status,
                      coalesce(answer #>> '{error,message}', 'no error message')
            USING HINT = 'The answer is returned; see README "How it behaves on errors" for what each code means.';
    END IF;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION wasend_test_send(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_test_send(bigint, text) TO wasend_operator;

-- ---------------------------------------------------------------------
-- Progress
-- ---------------------------------------------------------------------

-- campaign_progress gains waiting_window (rows waiting for their send
-- window; with a window in a fixed zone, every ready row while it is
-- closed), kind and priority; waiting says when the window opens.
CREATE OR REPLACE VIEW wasend.campaign_progress AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       coalesce(c.pause_reason, CASE WHEN n.status <> 'active' THEN 'number paused: ' || coalesce(n.pause_reason, '') END) AS pause_reason,
       n.phone_number_id,
       coalesce(s.total, 0) AS total,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.sending, 0) AS sending,
       coalesce(s.sent, 0) AS sent,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(s.read, 0) AS read,
       coalesce(s.failed, 0) AS failed,
       coalesce(s.cancelled, 0) AS cancelled,
       coalesce(s.uncertain, 0) AS uncertain,
       CASE WHEN coalesce(s.total, 0) = 0 THEN 0
            ELSE pg_catalog.round(100.0 * (s.total - s.ready - s.sending)::numeric / s.total::numeric, 1) END AS percent_done,
       pg_catalog.round(coalesce(s.recent, 0)::numeric / r.window_s, 1) AS rate_per_sec,
       CASE WHEN coalesce(s.recent, 0) > 0 AND s.ready + s.sending > 0
            THEN pg_catalog.make_interval(secs => pg_catalog.round((s.ready + s.sending)::numeric / (s.recent::numeric / r.window_s))::double precision)
       END AS eta,
       e.errors_by_code,
       coalesce(s.held, 0) AS held,
       pg_catalog.concat_ws('; ',
           CASE WHEN c.paced_until > pg_catalog.now()
                THEN pg_catalog.format('pacing: %s held for a quality assessment, new rows wait until %s at the latest',
                                       coalesce(s.held, 0), c.paced_until) END,
           CASE WHEN s.wait_limit > 0
                THEN pg_catalog.format('messaging limit %s/24h, next slot at %s (%s rows)',
                                       coalesce(p.messaging_limit::text, 'unlimited'), s.wait_limit_next, s.wait_limit) END,
           CASE WHEN s.wait_cap > 0
                THEN pg_catalog.format('frequency cap %s per %s, next at %s (%s rows)',
                                       c.frequency_cap, c.frequency_window, s.wait_cap_next, s.wait_cap) END,
           CASE WHEN s.wait_131049 > 0
                THEN pg_catalog.format('per-user marketing limit (131049), retry at %s (%s rows)',
                                       s.wait_131049_next, s.wait_131049) END,
           CASE WHEN w.opens IS NOT NULL AND s.ready > 0
                THEN pg_catalog.format('send window %s-%s %s: opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, c.send_timezone, w.opens, s.ready)
                WHEN s.wait_window > 0
                THEN pg_catalog.format('send window %s-%s in the recipients'' time zones, next opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, s.wait_window_next, s.wait_window) END) AS waiting,
       CASE WHEN w.opens IS NOT NULL THEN coalesce(s.ready, 0) ELSE coalesce(s.wait_window, 0) END AS waiting_window,
       c.kind,
       c.priority
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
  LEFT JOIN wasend.portfolios p ON p.portfolio = coalesce(n.business_id, 'number:' || n.id::text)
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS total,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready') AS ready,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sending') AS sending,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sent') AS sent,
               pg_catalog.count(*) FILTER (WHERE q.status = 'delivered') AS delivered,
               pg_catalog.count(*) FILTER (WHERE q.status = 'read') AS read,
               pg_catalog.count(*) FILTER (WHERE q.status = 'failed') AS failed,
               pg_catalog.count(*) FILTER (WHERE q.status = 'cancelled') AS cancelled,
               pg_catalog.count(*) FILTER (WHERE q.status = 'held') AS held,
               pg_catalog.count(*) FILTER (WHERE q.uncertain) AS uncertain,
               pg_catalog.count(*) FILTER (WHERE coalesce(q.sent_at, q.failed_at) > pg_catalog.clock_timestamp() - interval '10 s') AS recent,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'messaging_limit'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_limit,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'messaging_limit'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_limit_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'frequency_cap'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_cap,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'frequency_cap'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_cap_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.last_error_code = 131049
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_131049,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.last_error_code = 131049
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_window,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_window_next
          FROM wasend.send_queue q WHERE q.campaign_id = c.id) s ON true
  -- a window in a fixed zone holds back the whole campaign (src/queue.sql, running)
  CROSS JOIN LATERAL (
        SELECT CASE WHEN c.send_timezone <> 'recipient' AND c.kind = 'campaign'
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) END AS opens) w
  -- the rate is measured over the last 10 s, or since the start if sooner
  CROSS JOIN LATERAL (
        SELECT greatest(least(10.0, extract(epoch FROM pg_catalog.clock_timestamp() - c.started_at)), 1.0) AS window_s) r
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(code, cnt) AS errors_by_code
          FROM (SELECT q.last_error_code::text AS code, pg_catalog.count(*) AS cnt
                  FROM wasend.send_queue q
                 WHERE q.campaign_id = c.id AND q.status = 'failed'
                 GROUP BY 1) x
         WHERE code IS NOT NULL) e ON true;
COMMENT ON VIEW wasend.campaign_progress IS
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages, why ready rows wait, rows waiting for their send window, kind and priority';

-- ---------------------------------------------------------------------
-- Senders in this database
-- ---------------------------------------------------------------------

-- The database the extension was created in, as the senders know it: a
-- copy (CREATE DATABASE ... TEMPLATE) has another oid, and its supervisor
-- starts no sender until an admin says so with wasend_enable_sending(), so
-- that a staging copy never messages production's recipients a second
-- time.  Not dumped: a restore creates the extension anew, and sends.
CREATE TABLE wasend.database_identity (
    one         boolean PRIMARY KEY DEFAULT true CONSTRAINT database_identity_one CHECK (one),
    dboid       oid NOT NULL,
    enabled_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO wasend.database_identity (dboid)
SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
COMMENT ON TABLE wasend.database_identity IS
'the database whose senders may send: a copy of it starts none until wasend_enable_sending()';
REVOKE ALL ON wasend.database_identity FROM PUBLIC;
GRANT SELECT ON wasend.database_identity TO wasend_viewer;

-- Let this database send although it is a copy of another (admin): its
-- queue is its own now.  Returns whether anything changed.
CREATE FUNCTION wasend_enable_sending() RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mine oid := (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
BEGIN
    IF EXISTS (SELECT 1 FROM wasend.database_identity i WHERE i.dboid = mine) THEN
        RETURN false;
    END IF;
    UPDATE wasend.database_identity SET dboid = mine, enabled_at = now();
    PERFORM wasend._wake_at_commit();
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION wasend_enable_sending() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_enable_sending() TO wasend_admin;

-- Once the CREATE EXTENSION (or update) that runs this script commits, the
-- launcher looks at this database again and starts its senders (see
-- src/launcher.c): every database that has the extension has senders.
CREATE FUNCTION wasend._extension_created() RETURNS void
AS 'MODULE_PATHNAME', 'wasend_announce_extension'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._extension_created() FROM PUBLIC;
SELECT wasend._extension_created();
