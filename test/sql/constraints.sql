-- constraints: every column a role may write is checked as the API checks
-- it.  Each bad value, written by the role that may write the column (a
-- wasend_admin member for the tables, a wasend_operator member for the
-- four send_queue columns), is an ERROR with a hint, and changes nothing.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1065400003', 'EAAG-constraints-token', 80);
SELECT wasend.wasend_create_campaign('constraints', 1, '{"type":"text","text":{"body":"x"}}',
                                     send_window_start => '09:00', send_window_end => '20:00',
                                     send_timezone => 'Europe/Berlin');
INSERT INTO wasend.prices (category, country_prefix, price) VALUES ('marketing', '49', 0.1);
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551300100', 'asked by phone');
CREATE ROLE regress_c_admin LOGIN;
SELECT wasend.wasend_grant_access('regress_c_admin', 'admin');
CREATE ROLE regress_c_op LOGIN;
SELECT wasend.wasend_grant_access('regress_c_op', 'operator');
-- what the tables hold before (compared at the end)
CREATE TABLE public.regress_c_before AS
SELECT 'campaigns' AS t, md5(string_agg(c::text, '|' ORDER BY c.id)) AS h FROM wasend.campaigns c
UNION ALL SELECT 'numbers', md5(string_agg(n::text, '|' ORDER BY n.id)) FROM wasend.whatsapp_numbers n
UNION ALL SELECT 'send_queue', md5(coalesce(string_agg(q::text, '|' ORDER BY q.id), '')) FROM wasend.send_queue q
UNION ALL SELECT 'error_policy', md5(string_agg(p::text, '|' ORDER BY p.code)) FROM wasend.error_policy p
UNION ALL SELECT 'country_zones', md5(string_agg(z::text, '|' ORDER BY z.calling_code)) FROM wasend.country_zones z
UNION ALL SELECT 'prices', md5(string_agg(p::text, '|' ORDER BY p.category, p.country_prefix)) FROM wasend.prices p
UNION ALL SELECT 'suppressions', md5(string_agg(s::text, '|' ORDER BY s.recipient)) FROM wasend.suppressions s;
GRANT SELECT ON public.regress_c_before TO PUBLIC;

SET ROLE regress_c_admin;
-- campaigns
UPDATE wasend.campaigns SET name = '' WHERE id = 1;
UPDATE wasend.campaigns SET name = NULL WHERE id = 1;
UPDATE wasend.campaigns SET number_id = 999 WHERE id = 1;
UPDATE wasend.campaigns SET number_id = NULL WHERE id = 1;
UPDATE wasend.campaigns SET message = '[]' WHERE id = 1;
UPDATE wasend.campaigns SET message = '{"text":{"body":"no type"}}' WHERE id = 1;
UPDATE wasend.campaigns SET message = NULL WHERE id = 1;
UPDATE wasend.campaigns SET status = 'sending' WHERE id = 1;
UPDATE wasend.campaigns SET status = NULL WHERE id = 1;
UPDATE wasend.campaigns SET kind = 'bulk' WHERE id = 1;
UPDATE wasend.campaigns SET error_threshold = 0 WHERE id = 1;
UPDATE wasend.campaigns SET error_threshold = 1.5 WHERE id = 1;
UPDATE wasend.campaigns SET error_window = 5 WHERE id = 1;
UPDATE wasend.campaigns SET error_window = NULL WHERE id = 1;
UPDATE wasend.campaigns SET category = 'promo' WHERE id = 1;
UPDATE wasend.campaigns SET category = NULL WHERE id = 1;
UPDATE wasend.campaigns SET pause_on_quality = NULL WHERE id = 1;
UPDATE wasend.campaigns SET pacing = 'fast' WHERE id = 1;
UPDATE wasend.campaigns SET pacing_sample = 0 WHERE id = 1;
UPDATE wasend.campaigns SET pacing_hold = '0' WHERE id = 1;
UPDATE wasend.campaigns SET pacing_hold = '2 years' WHERE id = 1;
UPDATE wasend.campaigns SET frequency_cap = 0 WHERE id = 1;
UPDATE wasend.campaigns SET frequency_window = '-1 day' WHERE id = 1;
UPDATE wasend.campaigns SET frequency_window = NULL WHERE id = 1;
UPDATE wasend.campaigns SET sample_left = -1 WHERE id = 1;
UPDATE wasend.campaigns SET sample_left = 0 WHERE id = 1;
UPDATE wasend.campaigns SET pause_rule = 'manual' WHERE id = 1;
UPDATE wasend.campaigns SET priority = 101 WHERE id = 1;
UPDATE wasend.campaigns SET priority = NULL WHERE id = 1;
UPDATE wasend.campaigns SET send_window_start = NULL WHERE id = 1;
UPDATE wasend.campaigns SET send_window_end = '08:00' WHERE id = 1;
UPDATE wasend.campaigns SET send_timezone = 'America/Sao Paulo' WHERE id = 1;
UPDATE wasend.campaigns SET send_timezone = 'CEST' WHERE id = 1;
UPDATE wasend.campaigns SET send_timezone = '' WHERE id = 1;
UPDATE wasend.campaigns SET send_timezone = NULL WHERE id = 1;
UPDATE wasend.campaigns SET created_at = NULL WHERE id = 1;
UPDATE wasend.campaigns SET updated_at = NULL WHERE id = 1;
INSERT INTO wasend.campaigns (name, number_id, message, send_timezone)
VALUES ('typo', 1, '{"type":"text","text":{"body":"x"}}', 'Europe/Berlinn');
INSERT INTO wasend.campaigns (name, number_id, message, sample_left)
VALUES ('sample', 1, '{"type":"text","text":{"body":"x"}}', -5);
-- good values still go through (and are undone below)
BEGIN;
UPDATE wasend.campaigns SET send_timezone = 'America/Sao_Paulo', sample_left = 10,
       message = '{"type":"text","text":{"body":"y"}}' WHERE id = 1;
ROLLBACK;

-- whatsapp_numbers (no error shows the token)
UPDATE wasend.whatsapp_numbers SET phone_number_id = '+1 555' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET access_token = 'Bearer x' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET max_send_rate_per_sec = 0 WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET status = 'stopped' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET business_id = 'acme' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET messaging_limit = -1 WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET messaging_limit_override = -1 WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET quality_rating = 'PURPLE' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET can_send_message = 'MAYBE' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET pause_rule = 'quality' WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET limits_due_at = NULL WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET created_at = NULL WHERE id = 1;

-- error_policy (the policy columns)
UPDATE wasend.error_policy SET code = 'bad code' WHERE code = '131056';
UPDATE wasend.error_policy SET action = 'ignore' WHERE code = '131056';
UPDATE wasend.error_policy SET backoff = '-1 second' WHERE code = '131056';
UPDATE wasend.error_policy SET backoff = '100000 years' WHERE code = '131056';
UPDATE wasend.error_policy SET backoff = NULL WHERE code = '131056';
UPDATE wasend.error_policy SET backoff_factor = 0.5 WHERE code = '131056';
UPDATE wasend.error_policy SET backoff_factor = 'NaN' WHERE code = '131056';
UPDATE wasend.error_policy SET backoff_factor = 'Infinity' WHERE code = '131056';
UPDATE wasend.error_policy SET pause_for = '0' WHERE code = '131056';
UPDATE wasend.error_policy SET pause_for = '100000 years' WHERE code = '131056';
UPDATE wasend.error_policy SET slow_down = NULL WHERE code = '131056';
UPDATE wasend.error_policy SET retry_once = NULL WHERE code = '131056';
UPDATE wasend.error_policy SET jitter = 1.5 WHERE code = '131056';
UPDATE wasend.error_policy SET jitter = 'NaN' WHERE code = '131056';
INSERT INTO wasend.error_policy (code, action) VALUES (NULL, 'fail');
INSERT INTO wasend.error_policy (code, action, backoff) VALUES ('777', 'retry', '1000 years');

-- country_zones
UPDATE wasend.country_zones SET zone = 'Europe/Berlinn' WHERE calling_code = '49';
UPDATE wasend.country_zones SET zone = NULL WHERE calling_code = '49';
UPDATE wasend.country_zones SET calling_code = '+49' WHERE calling_code = '49';
UPDATE wasend.country_zones SET country = '' WHERE calling_code = '49';
UPDATE wasend.country_zones SET builtin = NULL WHERE calling_code = '49';
INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'Mars/Base');

-- prices
UPDATE wasend.prices SET price = -1;
UPDATE wasend.prices SET price = 'NaN';
UPDATE wasend.prices SET price = 'Infinity';
UPDATE wasend.prices SET category = 'promo';
UPDATE wasend.prices SET country_prefix = 'DE';

-- suppressions
UPDATE wasend.suppressions SET reason = '';
UPDATE wasend.suppressions SET reason = NULL;
UPDATE wasend.suppressions SET scope = 'some';
UPDATE wasend.suppressions SET recipient = NULL;
UPDATE wasend.suppressions SET created_at = NULL;
RESET ROLE;

-- send_queue: the four columns an operator inserts
SET ROLE regress_c_op;
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, 'not a number');
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, NULL);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (999, '15551300101');
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (NULL, '15551300101');
INSERT INTO wasend.send_queue (campaign_id, recipient, payload) VALUES (1, '15551300101', '"text"');
INSERT INTO wasend.send_queue (campaign_id, recipient, payload) VALUES (1, '15551300101', '{"text":{}}');
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES (1, '15551300101', 'America/Sao Paulo');
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES (1, '15551300101', '');
RESET ROLE;

-- nothing changed
SELECT b.t, b.h = a.h AS unchanged
  FROM public.regress_c_before b
  JOIN (SELECT 'campaigns' AS t, md5(string_agg(c::text, '|' ORDER BY c.id)) AS h FROM wasend.campaigns c
        UNION ALL SELECT 'numbers', md5(string_agg(n::text, '|' ORDER BY n.id)) FROM wasend.whatsapp_numbers n
        UNION ALL SELECT 'send_queue', md5(coalesce(string_agg(q::text, '|' ORDER BY q.id), '')) FROM wasend.send_queue q
        UNION ALL SELECT 'error_policy', md5(string_agg(p::text, '|' ORDER BY p.code)) FROM wasend.error_policy p
        UNION ALL SELECT 'country_zones', md5(string_agg(z::text, '|' ORDER BY z.calling_code)) FROM wasend.country_zones z
        UNION ALL SELECT 'prices', md5(string_agg(p::text, '|' ORDER BY p.category, p.country_prefix)) FROM wasend.prices p
        UNION ALL SELECT 'suppressions', md5(string_agg(s::text, '|' ORDER BY s.recipient)) FROM wasend.suppressions s) a
    ON a.t = b.t
 ORDER BY 1;

-- a superuser can still plant a bad value with the triggers off (as
-- 032_campaign_isolation does); an UPDATE of another column then goes
-- through, as the senders' own updates must
SET session_replication_role = replica;
UPDATE wasend.campaigns SET send_timezone = 'America/Sao Paulo', sample_left = -1 WHERE id = 1;
RESET session_replication_role;
UPDATE wasend.campaigns SET status = 'running', updated_at = now() WHERE id = 1;
SELECT status, send_timezone, sample_left FROM wasend.campaigns WHERE id = 1;
-- and the view still shows the campaign (its window is not evaluated)
SELECT campaign_id, status, waiting FROM wasend.campaign_progress;

DROP TABLE public.regress_c_before;
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
DROP ROLE regress_c_admin, regress_c_op;
