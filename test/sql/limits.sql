-- limits: the SQL surface of Meta's account limits (0.3.0).  The rules are
-- applied here by calling what the senders and the webhook worker call,
-- as superuser: wasend._apply_number_limits (the answer of the phone
-- number GET), wasend._ingest_verified (a webhook body whose signature was
-- checked) and wasend._apply_pending_statuses.  Campaigns that must stay
-- as they are live on a number paused by its user, which no sender touches
-- (the TAP test 025_report sends for real).  No timestamp is printed: they
-- are compared with now() instead.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
-- what the blocks below print of the numbers and the campaigns (a user's
-- pause names the session user; that part is masked)
CREATE TEMP VIEW numbers AS
SELECT id, business_id, messaging_tier AS tier, messaging_limit AS "limit",
       messaging_limit_override AS override, quality_rating AS quality,
       can_send_message AS health, display_phone_number AS display,
       status, pause_rule, pause_reason
  FROM wasend.whatsapp_numbers;
CREATE TEMP VIEW camps AS
SELECT id, name, category, status, pause_rule,
       regexp_replace(pause_reason, '^paused by \S+$', 'paused by (user)') AS pause_reason
  FROM wasend.campaigns;

-- ---------------------------------------------------------------------
-- 1. Portfolios and messaging tiers
-- ---------------------------------------------------------------------

-- a number of portfolio 900, and one without business_id (a portfolio of
-- its own, "number:<id>"); a business_id that is not digits is refused
SELECT wasend.wasend_add_number('1065400010', 'EAAG-limits-token', 80, business_id => '900');
SELECT wasend.wasend_add_number('1065400011', 'EAAG-limits-token-2');
SELECT wasend.wasend_add_number('1065400012', 'EAAG-limits-token-3', 80, business_id => '9x');
SELECT * FROM numbers ORDER BY id;
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
-- the tiers as the Graph API names them, and their limits (unlimited is
-- NULL); any other string is an error, never a guess
SELECT t AS tier, wasend._tier_limit(t) AS "limit"
  FROM unnest(ARRAY['TIER_250', 'TIER_2K', 'TIER_10K', 'TIER_100K', 'TIER_UNLIMITED']) t;
SELECT wasend._tier_limit('TIER_5K');
-- the GET answer sets tier, limit, quality, health and the display number
-- (digits only); the portfolio gets the number's limit; the number is
-- read again in wasend.limits_refresh_interval (15 min)
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_250","quality_rating":"GREEN","health_status":{"can_send_message":"AVAILABLE"},"display_phone_number":"+1 555-000-1111","id":"1065400010"}');
SELECT * FROM numbers ORDER BY id;
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
SELECT limits_checked_at > now() - interval '1 minute' AS checked_now,
       limits_due_at - limits_checked_at AS read_again_after, limits_error
  FROM wasend.whatsapp_numbers WHERE id = 1;
-- an unknown tier, or an error answer, raises and changes nothing (not
-- even the quality of the same answer); a token in Meta's text is redacted
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_5K","quality_rating":"YELLOW"}');
SELECT wasend._apply_number_limits(1, 400, '{"error":{"message":"Invalid OAuth access token EAAGm0PX4ZCpsBAKZCdeadbeef0123","code":190}}');
SELECT * FROM numbers WHERE id = 1;
-- the sender then notes the error on the number (redacted) and reads it
-- again in a minute; the next good answer clears the error
SELECT wasend._number_limits_failed(1, 'could not read the messaging limit: token EAAGm0PX4ZCpsBAKZCdeadbeef0123 expired');
SELECT limits_error, limits_due_at <= now() + interval '1 minute' AS read_again_soon
  FROM wasend.whatsapp_numbers WHERE id = 1;
-- an override: a negative limit is refused; messaging_limit => 100 wins
-- over the tier, also over a later answer (TIER_2K)
SELECT wasend.wasend_update_number(1, messaging_limit => -5);
SELECT wasend.wasend_update_number(1, messaging_limit => 100);
SELECT * FROM numbers WHERE id = 1;
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_2K","quality_rating":"GREEN","health_status":{"can_send_message":"AVAILABLE"},"display_phone_number":"15550001111"}');
SELECT * FROM numbers WHERE id = 1;
SELECT limits_error FROM wasend.whatsapp_numbers WHERE id = 1;
-- reset_messaging_limit follows the tier again; both at once is an error
SELECT wasend.wasend_update_number(1, reset_messaging_limit => true);
SELECT * FROM numbers WHERE id = 1;
SELECT wasend.wasend_update_number(1, messaging_limit => 300, reset_messaging_limit => true);
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
-- number 2 joins portfolio 900: its own portfolio goes, and 900's limit is
-- the lowest known limit of its numbers
SELECT wasend.wasend_update_number(2, business_id => '900');
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;

-- ---------------------------------------------------------------------
-- 2. Quality and health
-- ---------------------------------------------------------------------

-- three running campaigns on number 1, which its user paused: marketing,
-- utility, and marketing that opted out of the quality rule
SELECT wasend.wasend_pause_number(1, 'held for the limits test');
SELECT wasend.wasend_create_campaign('quality marketing', 1,
       '{"type":"template","template":{"name":"offer","language":{"code":"en"}}}') AS q1 \gset
SELECT wasend.wasend_create_campaign('quality utility', 1,
       '{"type":"template","template":{"name":"receipt","language":{"code":"en"}}}',
       category => 'utility') AS q2 \gset
SELECT wasend.wasend_create_campaign('quality exempt', 1,
       '{"type":"template","template":{"name":"offer","language":{"code":"en"}}}',
       pause_on_quality => false) AS q3 \gset
SELECT wasend.wasend_start_campaign(:q1);
SELECT wasend.wasend_start_campaign(:q2);
SELECT wasend.wasend_start_campaign(:q3);
-- the rating turns RED: only the first one pauses; AVAILABLE does not
-- resume the number its user paused
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_2K","quality_rating":"RED","health_status":{"can_send_message":"AVAILABLE"},"display_phone_number":"15550001111"}');
SELECT * FROM camps WHERE id IN (:q1, :q2, :q3) ORDER BY id;
SELECT * FROM numbers WHERE id = 1;
-- still RED is no change: a resumed campaign stays running
SELECT wasend.wasend_resume_campaign(:q1);
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_2K","quality_rating":"RED","health_status":{"can_send_message":"AVAILABLE"},"display_phone_number":"15550001111"}');
SELECT * FROM camps WHERE id IN (:q1, :q2, :q3) ORDER BY id;
-- a phone_number_quality_update (found by the display number) lowers the
-- tier at once and pauses the marketing campaign again; the number is
-- read again within a minute
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","time":1700000000,"changes":[{"field":"phone_number_quality_update","value":{"display_phone_number":"15550001111","event":"DOWNGRADE","current_limit":"TIER_250"}}]}]}');
SELECT * FROM camps WHERE id IN (:q1, :q2, :q3) ORDER BY id;
SELECT * FROM numbers WHERE id = 1;
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
SELECT limits_due_at <= now() + interval '1 minute' AS read_again_soon
  FROM wasend.whatsapp_numbers WHERE id = 1;
-- an upgrade raises the tier and pauses nothing
SELECT wasend.wasend_resume_campaign(:q1);
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","time":1700000001,"changes":[{"field":"phone_number_quality_update","value":{"display_phone_number":"15550001111","event":"UPGRADE","current_limit":"TIER_10K"}}]}]}');
SELECT * FROM camps WHERE id = :q1;
SELECT * FROM numbers WHERE id = 1;
-- a GET answer with a lower tier than the last one pauses it too
SELECT wasend._apply_number_limits(1, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_2K"}');
SELECT * FROM camps WHERE id IN (:q1, :q2, :q3) ORDER BY id;
SELECT * FROM numbers WHERE id = 1;
-- health: BLOCKED pauses an active number (rule health), AVAILABLE
-- resumes it
SELECT wasend._apply_number_limits(2, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_250","quality_rating":"GREEN","health_status":{"can_send_message":"BLOCKED"},"display_phone_number":"15550002222"}');
SELECT * FROM numbers WHERE id = 2;
SELECT wasend._apply_number_limits(2, 200, '{"health_status":{"can_send_message":"AVAILABLE"}}');
SELECT * FROM numbers WHERE id = 2;
-- BLOCKED then AVAILABLE on the number its user paused: the user's pause
-- stays as it was
SELECT wasend._apply_number_limits(1, 200, '{"health_status":{"can_send_message":"BLOCKED"}}');
SELECT * FROM numbers WHERE id = 1;
SELECT wasend._apply_number_limits(1, 200, '{"health_status":{"can_send_message":"AVAILABLE"}}');
SELECT * FROM numbers WHERE id = 1;
-- the portfolio's limit is the lowest of its numbers' (number 2: 250);
-- a row of the utility campaign waits for that budget (as a claim leaves
-- it: ready, waiting_for messaging_limit, next_attempt_at the next slot)
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
SELECT wasend.wasend_enqueue(:q2, ARRAY['15551200001']);
UPDATE wasend.send_queue SET waiting_for = 'messaging_limit', next_attempt_at = now() + interval '10 hours'
 WHERE campaign_id = :q2;
SELECT waiting LIKE 'messaging limit 250/24h, next slot at % (1 rows)' AS waiting_for_limit
  FROM wasend.campaign_progress WHERE campaign_id = :q2;
-- once number 2 is gone the limit is number 1's, higher: the waiting row
-- is due again at once
DELETE FROM wasend.whatsapp_numbers WHERE id = 2;
SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1;
SELECT status, next_attempt_at <= now() AS due_now FROM wasend.send_queue WHERE campaign_id = :q2;
SELECT waiting FROM wasend.campaign_progress WHERE campaign_id = :q2;

-- ---------------------------------------------------------------------
-- 3. Template status
-- ---------------------------------------------------------------------

-- promo (en_US): one campaign running, one its user paused; promo in
-- another language is another template
SELECT wasend.wasend_create_campaign('promo running', 1,
       '{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}') AS t1 \gset
SELECT wasend.wasend_create_campaign('promo paused by user', 1,
       '{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}') AS t2 \gset
SELECT wasend.wasend_create_campaign('promo spanish', 1,
       '{"type":"template","template":{"name":"promo","language":{"code":"es"}}}') AS t3 \gset
SELECT wasend.wasend_start_campaign(:t1);
SELECT wasend.wasend_start_campaign(:t2);
SELECT wasend.wasend_start_campaign(:t3);
SELECT wasend.wasend_pause_campaign(:t2);
SELECT id, name, template_name, template_language FROM wasend.campaigns
 WHERE id IN (:t1, :t2, :t3) ORDER BY id;
-- PAUSED pauses the running campaign of that template, with Meta's reason
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","time":1700000010,"changes":[{"field":"message_template_status_update","value":{"event":"PAUSED","message_template_id":1234,"message_template_name":"promo","message_template_language":"en_US","reason":"LOW_QUALITY"}}]}]}');
SELECT * FROM camps WHERE id IN (:t1, :t2, :t3) ORDER BY id;
SELECT name, language, status, reason FROM wasend.templates ORDER BY 1, 2;
-- APPROVED resumes what the rule paused, not what the user paused
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","time":1700000020,"changes":[{"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":1234,"message_template_name":"promo","message_template_language":"en_US","reason":"NONE"}}]}]}');
SELECT * FROM camps WHERE id IN (:t1, :t2, :t3) ORDER BY id;
SELECT name, language, status, reason FROM wasend.templates ORDER BY 1, 2;

-- ---------------------------------------------------------------------
-- 4. Marketing opt-outs
-- ---------------------------------------------------------------------

-- the built-in rules of the per-user marketing errors: 131049 waits
-- exactly 24 h and is tried once more, 131050 fails (and suppresses for
-- marketing), 131026 fails (and suppresses for all); still built in
SELECT code, action, backoff, backoff_factor, jitter, retry_once, origin, description
  FROM wasend.error_policy WHERE code IN ('131026', '131049', '131050') ORDER BY code;
-- a user stops marketing messages: suppressed for marketing only
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"user_preferences","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065400010"},"contacts":[{"wa_id":"15551300001","profile":{"name":"X"}}],"user_preferences":[{"wa_id":"15551300001","detail":"User requested to stop marketing messages","category":"marketing_messages","value":"stop","timestamp":1700000030}]}}]}]}');
SELECT recipient, reason, scope FROM wasend.suppressions ORDER BY 1;
SELECT wasend.wasend_create_campaign('opt-out marketing', 1, '{"type":"text","text":{"body":"sale"}}',
       category => 'marketing') AS m1 \gset
SELECT wasend.wasend_create_campaign('opt-out utility', 1, '{"type":"text","text":{"body":"receipt"}}',
       category => 'utility') AS m2 \gset
SELECT wasend.wasend_enqueue(:m1, ARRAY['15551300001', '15551300002']);
SELECT wasend.wasend_enqueue(:m2, ARRAY['15551300001']);
SELECT campaign_id, recipient FROM wasend.send_queue WHERE campaign_id IN (:m1, :m2) ORDER BY 1, 2;
-- resume lifts the marketing suppression, not one of scope all
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551300003', 'replied STOP');
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"user_preferences","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065400010"},"user_preferences":[{"wa_id":"15551300001","category":"marketing_messages","value":"resume","timestamp":1700000040},{"wa_id":"15551300003","category":"marketing_messages","value":"resume","timestamp":1700000040}]}}]}]}');
SELECT recipient, reason, scope FROM wasend.suppressions ORDER BY 1;
SELECT wasend.wasend_enqueue(:m1, ARRAY['15551300001', '15551300003']);
SELECT campaign_id, recipient FROM wasend.send_queue WHERE campaign_id IN (:m1, :m2) ORDER BY 1, 2;

-- ---------------------------------------------------------------------
-- 5. Campaign options
-- ---------------------------------------------------------------------

-- bad options are refused with a hint
SELECT wasend.wasend_create_campaign('bad', 1, '{"type":"text","text":{"body":"x"}}', category => 'promo');
SELECT wasend.wasend_create_campaign('bad', 1, '{"type":"text","text":{"body":"x"}}', pacing => 'fast');
SELECT wasend.wasend_create_campaign('bad', 1, '{"type":"text","text":{"body":"x"}}', frequency_cap => 0);
-- the defaults: marketing for a template, service for anything else
SELECT wasend.wasend_create_campaign('options', 1,
       '{"type":"template","template":{"name":"weekly","language":{"code":"en"}}}') AS o1 \gset
SELECT wasend.wasend_create_campaign('options text', 1, '{"type":"text","text":{"body":"x"}}') AS o2 \gset
SELECT name, category, pause_on_quality, pacing, pacing_sample, pacing_hold, frequency_cap, frequency_window
  FROM wasend.campaigns WHERE id IN (:o1, :o2) ORDER BY id;
-- wasend_update_campaign changes what it is given; frequency_cap => 0
-- removes the cap; bad values are refused
SELECT wasend.wasend_update_campaign(:o1, pacing => 'sample', frequency_cap => 3, frequency_window => '1 day');
SELECT name, category, pause_on_quality, pacing, pacing_sample, pacing_hold, frequency_cap, frequency_window
  FROM wasend.campaigns WHERE id = :o1;
SELECT wasend.wasend_update_campaign(:o1, frequency_cap => 0, pacing => 'off');
SELECT name, category, pause_on_quality, pacing, pacing_sample, pacing_hold, frequency_cap, frequency_window
  FROM wasend.campaigns WHERE id = :o1;
SELECT wasend.wasend_update_campaign(:o1, frequency_cap => -1);
SELECT wasend.wasend_update_campaign(:o1, pacing => 'fast');
SELECT wasend.wasend_update_campaign(:o1, category => 'promo');
-- pacing 'sample': a template no earlier campaign started with begins with
-- a sample of pacing_sample rows; a later campaign of it does not
SELECT wasend.wasend_create_campaign('sample first', 1,
       '{"type":"template","template":{"name":"fresh","language":{"code":"en"}}}', pacing => 'sample') AS s1 \gset
SELECT wasend.wasend_create_campaign('sample second', 1,
       '{"type":"template","template":{"name":"fresh","language":{"code":"en"}}}', pacing => 'sample') AS s2 \gset
SELECT wasend.wasend_start_campaign(:s1);
SELECT wasend.wasend_start_campaign(:s2);
SELECT name, pacing, sample_left, paced_until FROM wasend.campaigns WHERE id IN (:s1, :s2) ORDER BY id;

-- ---------------------------------------------------------------------
-- 6. Prices
-- ---------------------------------------------------------------------

-- a bad price row gets a clear error
INSERT INTO wasend.prices (country_prefix, price) VALUES ('', 0.05);
INSERT INTO wasend.prices (category, country_prefix, price) VALUES ('gold', '', 0.05);
INSERT INTO wasend.prices (category, country_prefix, price) VALUES ('marketing', '+4x', 0.05);
INSERT INTO wasend.prices (category, country_prefix, price) VALUES ('marketing', '44', -0.01);
-- a rate card: marketing anywhere, marketing to +44, utility anywhere
INSERT INTO wasend.prices (category, country_prefix, price)
VALUES ('marketing', '', 0.05), ('marketing', '44', 0.07), ('utility', '', 0.01);
SELECT * FROM wasend.prices ORDER BY 1, 2;

-- ---------------------------------------------------------------------
-- 7. Pricing from status webhooks, and the campaign report
-- ---------------------------------------------------------------------

-- six rows: four sent (a UK and a US recipient, one free, one that will
-- fail), one Meta holds for a quality assessment (the campaign holds back
-- meanwhile), one still ready
SELECT wasend.wasend_create_campaign('report', 1,
       '{"type":"template","template":{"name":"report","language":{"code":"en_US"}}}') AS r \gset
SELECT wasend.wasend_enqueue(:r, ARRAY['447700900001', '15551400002', '15551400003',
                                '15551400004', '15551400005', '15551400006']);
SELECT wasend.wasend_start_campaign(:r);
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1,
       wa_message_id = 'wamid.r' || right(recipient, 1)
 WHERE campaign_id = :r AND right(recipient, 1) IN ('1', '2', '3', '4');
UPDATE wasend.send_queue SET status = 'held', attempts = 1, wa_message_id = 'wamid.r5'
 WHERE campaign_id = :r AND recipient = '15551400005';
INSERT INTO wasend.held_messages (row_id, campaign_id)
SELECT id, campaign_id FROM wasend.send_queue WHERE wa_message_id = 'wamid.r5';
UPDATE wasend.campaigns SET paced_until = now() + pacing_hold WHERE id = :r;
SELECT held, waiting LIKE 'pacing: 1 held for a quality assessment, new rows wait until % at the latest' AS pacing
  FROM wasend.campaign_progress WHERE campaign_id = :r;
-- the statuses: pricing is stored from whichever status carries it; the
-- held row's sent status settles it; 131050 fails its row
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065400010"},"statuses":[
 {"id":"wamid.r1","status":"delivered","timestamp":"1700000101","recipient_id":"447700900001","pricing":{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}},
 {"id":"wamid.r2","status":"delivered","timestamp":"1700000103","recipient_id":"15551400002"},
 {"id":"wamid.r3","status":"read","timestamp":"1700000104","recipient_id":"15551400003","pricing":{"billable":false,"pricing_model":"PMP","category":"service","type":"free_customer_service"}},
 {"id":"wamid.r4","status":"failed","timestamp":"1700000105","recipient_id":"15551400004","errors":[{"code":131050,"title":"Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business."}]},
 {"id":"wamid.r5","status":"sent","timestamp":"1700000106","recipient_id":"15551400005"}]}}]}]}');
-- a later status without pricing keeps the row's pricing; a status that
-- comes late (sent after delivered) moves nothing but brings its pricing
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065400010"},"statuses":[
 {"id":"wamid.r1","status":"read","timestamp":"1700000201","recipient_id":"447700900001"},
 {"id":"wamid.r2","status":"sent","timestamp":"1700000102","recipient_id":"15551400002","pricing":{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}}]}}]}]}');
SELECT recipient, status, sent_at IS NOT NULL AS sent, delivered_at IS NOT NULL AS delivered,
       read_at IS NOT NULL AS read, last_error_code AS code,
       pricing_billable AS billable, pricing_model AS model, pricing_category AS category, pricing_type AS type
  FROM wasend.send_queue WHERE campaign_id = :r ORDER BY recipient;
-- the held row is sent as of its sent status (1700000106, long ago:
-- clamped to 30 days before now); it left held_messages and the campaign
-- no longer holds back
SELECT status, sent_at BETWEEN now() - interval '30 days 1 minute' AND now() - interval '29 days'
       AS sent_at_from_status
  FROM wasend.send_queue WHERE wa_message_id = 'wamid.r5';
SELECT (SELECT count(*) FROM wasend.held_messages) AS held_messages, paced_until IS NULL AS not_paced
  FROM wasend.campaigns WHERE id = :r;
-- 131050 suppressed the recipient for marketing campaigns
SELECT recipient, reason, scope FROM wasend.suppressions WHERE recipient = '15551400004';
-- the report: 5 sent, 3 delivered, 2 read, 1 failed (with Meta's title);
-- 2 billable marketing messages cost 0.07 (UK, the longest prefix) + 0.05
\x on
SELECT * FROM wasend.campaign_report WHERE campaign_id = :r;
\x off
-- without the price for any country the US message is unpriced; without
-- any marketing price nothing is priced and the cost is unknown (NULL)
DELETE FROM wasend.prices WHERE category = 'marketing' AND country_prefix = '';
SELECT billable, unpriced, estimated_cost FROM wasend.campaign_report WHERE campaign_id = :r;
DELETE FROM wasend.prices WHERE category = 'marketing' AND country_prefix = '44';
SELECT billable, unpriced, estimated_cost FROM wasend.campaign_report WHERE campaign_id = :r;
INSERT INTO wasend.prices (category, country_prefix, price)
VALUES ('marketing', '', 0.05), ('marketing', '44', 0.07);

-- ---------------------------------------------------------------------
-- 8. A status that comes before its wamid is known
-- ---------------------------------------------------------------------

-- kept in pending_statuses with its pricing ...
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065400010"},"statuses":[
 {"id":"wamid.r6","status":"delivered","timestamp":"1700000301","recipient_id":"15551400006","pricing":{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}}]}}]}]}');
SELECT wa_message_id, status, error_code, recipient, pricing FROM wasend.pending_statuses;
-- ... and applied with it once the row has the wamid
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1, wa_message_id = 'wamid.r6'
 WHERE campaign_id = :r AND recipient = '15551400006';
SELECT wasend._apply_pending_statuses();
SELECT recipient, status, delivered_at IS NOT NULL AS delivered,
       pricing_billable AS billable, pricing_model AS model, pricing_category AS category, pricing_type AS type
  FROM wasend.send_queue WHERE wa_message_id = 'wamid.r6';
SELECT count(*) AS pending FROM wasend.pending_statuses;
SELECT total, sent, delivered, by_pricing_category, billable, unpriced, estimated_cost
  FROM wasend.campaign_report WHERE campaign_id = :r;

-- ---------------------------------------------------------------------
-- 9. Review fixes
-- ---------------------------------------------------------------------

-- intervals beyond a year are refused (they overflowed a claim's timestamps)
SELECT wasend.wasend_create_campaign('far', 1, '{"type":"text","text":{"body":"x"}}',
                              frequency_cap => 1, frequency_window => '300000 years');
SELECT wasend.wasend_update_campaign(1, pacing_hold => '2 years');
-- a template name longer than Meta's 512 characters is ignored, and the
-- status in the same payload is still applied
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[{"field":"message_template_status_update","value":{"event":"PAUSED","message_template_name":"' || repeat('n', 8000) || '","message_template_language":"en_US"}}]}]}') ->> 'account_updates' AS long_name_update;
SELECT count(*) AS long_templates FROM wasend.templates WHERE length(name) > 512;
-- rows waiting for a frequency cap are looked at again when the cap goes
SELECT wasend.wasend_create_campaign('capped', 1, '{"type":"template","template":{"name":"cap","language":{"code":"en"}}}',
                              frequency_cap => 1) AS cap \gset
SELECT wasend.wasend_enqueue(:cap, ARRAY['15551490001']);
UPDATE wasend.send_queue SET waiting_for = 'frequency_cap', next_attempt_at = now() + interval '6 days'
 WHERE campaign_id = :cap;
SELECT wasend.wasend_update_campaign(:cap, frequency_cap => 0);
SELECT waiting_for, next_attempt_at <= now() AS due_now FROM wasend.send_queue WHERE campaign_id = :cap;
-- a quality pause takes over a template pause: APPROVED does not resume it
UPDATE wasend.campaigns SET status = 'running', pause_rule = NULL, pause_reason = NULL WHERE id = :cap;
SELECT wasend._apply_template_status('{"event":"PAUSED","message_template_name":"cap","message_template_language":"en"}');
SELECT wasend._pause_for_quality(1, 'test');
SELECT wasend._apply_template_status('{"event":"APPROVED","message_template_name":"cap","message_template_language":"en"}');
SELECT status, pause_rule, pause_reason FROM wasend.campaigns WHERE id = :cap;
-- an UPGRADE of a number whose tier was never read pauses nothing
UPDATE wasend.whatsapp_numbers SET messaging_tier = NULL, messaging_limit = NULL, messaging_limit_override = NULL,
       display_phone_number = '15550009901' WHERE id = 1;
UPDATE wasend.campaigns SET status = 'running', pause_rule = NULL, pause_reason = NULL WHERE id = :cap;
SELECT wasend._apply_quality_update('{"display_phone_number":"15550009901","event":"UPGRADE","current_limit":"TIER_10K"}') AS paused;
SELECT status FROM wasend.campaigns WHERE id = :cap;

-- follow_throughput turned on once the level is known: the rate follows it
-- at once; an explicit rate given with it wins; off keeps the rate
UPDATE wasend.whatsapp_numbers SET throughput_level = 'HIGH', follow_throughput = false,
       max_send_rate_per_sec = 60 WHERE id = 1;
SELECT wasend.wasend_update_number(1, follow_throughput => true);
SELECT max_send_rate_per_sec FROM wasend.whatsapp_numbers WHERE id = 1;
UPDATE wasend.whatsapp_numbers SET throughput_level = 'STANDARD', follow_throughput = false WHERE id = 1;
SELECT wasend.wasend_update_number(1, follow_throughput => true, max_send_rate_per_sec => 70);
SELECT max_send_rate_per_sec FROM wasend.whatsapp_numbers WHERE id = 1;
SELECT wasend.wasend_update_number(1, follow_throughput => false);
SELECT max_send_rate_per_sec, follow_throughput FROM wasend.whatsapp_numbers WHERE id = 1;

-- clean up
DROP VIEW numbers, camps;
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
