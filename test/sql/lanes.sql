-- lanes: the SQL surface of 0.4.0 (wasend_send, priorities, send windows,
-- dry run, wasend_wait, test send): every bad input is refused with its
-- error and changes nothing; the pure functions behind windows give
-- exact answers.  No sender runs in this database (test/regress.conf);
-- the TAP tests 027-029 send for real.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('31001', 'tok', 80) AS n1;
SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}') AS c1;
-- the main zone of a country calling code: the longest prefix wins
SELECT r, wasend._recipient_zone(r)
  FROM unnest(ARRAY['14165550100', '12125550100', '16045550100', '447911123456',
                    '4915112345678', '5511987654321', '77011234567', '79161234567',
                    '18765551234', '919812345678', '61412345678', '999123456']) r;
SELECT count(*) AS zones, count(DISTINCT country) AS countries FROM wasend.country_zones;
-- every zone is one PostgreSQL knows
SELECT zone FROM wasend.country_zones EXCEPT SELECT name FROM pg_timezone_names;
-- a window is open (NULL) or says when it opens, in its zone
SELECT wasend._window_opens(NULL, NULL, 'UTC') IS NULL AS no_window,
       wasend._window_opens('00:00', '23:59:59.999999', 'UTC') IS NULL AS always_open,
       wasend._window_opens(((now() AT TIME ZONE z.name) + interval '2 hours')::time,
                            ((now() AT TIME ZONE z.name) + interval '3 hours')::time, z.name)
         - now() BETWEEN interval '119 minutes' AND interval '121 minutes' AS opens_in_2h,
       wasend._window_opens(((now() AT TIME ZONE z.name) - interval '3 hours')::time,
                            ((now() AT TIME ZONE z.name) - interval '2 hours')::time, z.name)
         - now() BETWEEN interval '20 hours 59 minutes' AND interval '21 hours 1 minute' AS opens_tomorrow
  FROM (SELECT name FROM pg_timezone_names    -- a zone where it is 10-11 h now
         WHERE name ~ '^Etc/GMT[-+][0-9]+$' AND extract(hour FROM now() AT TIME ZONE name) = 10
         LIMIT 1) z;
-- the zone a row is windowed in
SELECT wasend._row_zone('Asia/Tokyo', 'Europe/Paris', '4915112345678') AS fixed,
       wasend._row_zone('recipient', 'Europe/Paris', '4915112345678') AS row_zone,
       wasend._row_zone('recipient', NULL, '4915112345678') AS from_country,
       wasend._row_zone('recipient', NULL, '999123456') AS unknown;

-- bad campaign options
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', send_window_start => '20:00', send_window_end => '09:00');
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', send_window_start => '09:00');
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', send_window_start => '09:00',
                              send_window_end => '20:00', send_timezone => 'Mars/Olympus');
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', priority => 101);
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', priority => -1);
SELECT wasend.wasend_update_campaign(1, priority => 1000);
SELECT wasend.wasend_update_campaign(1, send_window_start => '10:00', send_window_end => '10:00');
SELECT count(*) AS campaigns FROM wasend.campaigns;
-- good ones
SELECT wasend.wasend_create_campaign('windowed', 1, '{"type":"text","text":{"body":"x"}}', priority => 7,
                              send_window_start => '09:00', send_window_end => '20:00',
                              send_timezone => 'Europe/Berlin') AS c2;
SELECT wasend.wasend_update_campaign(2, send_timezone => 'recipient');
SELECT id, priority, send_window_start, send_window_end, send_timezone, kind FROM wasend.campaigns ORDER BY id;
SELECT wasend.wasend_update_campaign(2, clear_send_window => true);
SELECT send_window_start, send_window_end FROM wasend.campaigns WHERE id = 2;

-- a row's time zone must be one PostgreSQL knows
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES (1, '15550310001', 'Nowhere/City');
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES (1, '15550310001', 'America/Chicago');
UPDATE wasend.send_queue SET timezone = 'Bad/Zone' WHERE recipient = '15550310001';
-- an abbreviation is not a zone: what it means depends on the session
SET timezone_abbreviations = 'Australia';
INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES (1, '15550310011', 'SAT');
SELECT wasend.wasend_create_campaign('w', 1, '{"type":"text","text":{"body":"x"}}', send_window_start => '09:00',
                              send_window_end => '20:00', send_timezone => 'WST');
RESET timezone_abbreviations;
-- country_zones takes zone names only
INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'Mars/Olympus');
-- campaign rows carry no priority
INSERT INTO wasend.send_queue (campaign_id, recipient, priority) VALUES (1, '15550310002', 1);

-- wasend_send: bad input, then a good one
SELECT wasend.wasend_send(1, '15550310003', '{"type":"text","text":{"body":"x"}}', 101);
SELECT wasend.wasend_send(1, '15550310003', '{"type":"text","text":{"body":"x"}}', NULL);
SELECT wasend.wasend_send(404, '15550310003', '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_send(1, 'nobody', '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_send(1, '15550310003', '{"text":"no type"}');
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15550310009', 'asked to stop');
SELECT wasend.wasend_send(1, '15550310009', '{"type":"text","text":{"body":"x"}}');
SELECT count(*) AS lane_rows FROM wasend.send_queue WHERE priority IS NOT NULL;
SELECT wasend.wasend_send(1, '+15550310003', '{"type":"text","text":{"body":"a"}}', 10) AS s1 \gset
SELECT :s1 > 0 AS got_an_id;
SELECT wasend.wasend_send(1, '15550310003', '{"type":"text","text":{"body":"b"}}') AS s2;
SELECT c.id, c.name, c.kind, c.status, c.category, c.priority
  FROM wasend.campaigns c WHERE kind = 'transactional';
SELECT id = :s1 AS same_id, campaign_id, recipient, status, attempts, error_code, waiting_for, next_attempt_at IS NOT NULL AS due
  FROM wasend.wasend_send_status(:s1);
SELECT recipient, priority FROM wasend.send_queue WHERE campaign_id = 3 ORDER BY id;
SELECT * FROM wasend.wasend_send_status(404);
-- the lane takes wasend_send only and is never cancelled
SELECT wasend.wasend_enqueue(3, ARRAY['15550310004']);
SELECT wasend.wasend_cancel_campaign(3);
SELECT wasend.wasend_update_campaign(3, send_window_start => '09:00', send_window_end => '10:00');
-- a lane row needs its message
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (3, '15550310012');
SELECT wasend.wasend_wait(3, '1 s');
-- a campaign still takes a recipient once
SELECT wasend.wasend_enqueue(1, ARRAY['15550310001', '15550310005']) AS added;
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15550310005');

-- dry run and wait: bad input
SELECT * FROM wasend.wasend_dry_run(404);
SELECT * FROM wasend.wasend_dry_run(NULL);
SELECT wasend.wasend_wait(404, '1 s');
SELECT wasend.wasend_wait(1, '-1 s');
SELECT wasend.wasend_wait(1, '1 s');
BEGIN;
SELECT wasend.wasend_start_campaign(1);
SELECT wasend.wasend_wait(1, '1 s');
ROLLBACK;
-- this database is the one the extension was created in: it may send
SELECT wasend.wasend_enable_sending() AS changed;
-- dry run of campaign 1: two rows, both would go now
SELECT * FROM wasend.wasend_dry_run(1);
-- test send: bad input (nothing is sent)
SELECT wasend.wasend_test_send(404, '15550310001');
SELECT wasend.wasend_test_send(1, '999123456');
SELECT wasend.wasend_test_send(1, '15550310009');
-- campaign_progress shows kind, priority and rows waiting for a window
SELECT campaign_id, kind, priority, waiting_window FROM wasend.campaign_progress ORDER BY 1;

-- clean up
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
