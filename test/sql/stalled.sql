-- stalled: why a campaign's messages do not move, wherever a user looks.
-- The regress database is not in wasend.databases (test/regress.conf), so
-- its campaigns never move, and every place says so; the TAP test
-- 045_stalled.pl proves the other reasons in databases that send.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('4501', 'tok', 80) AS n \gset
SELECT wasend.wasend_create_campaign('stalled', :n, '{"type":"text","text":{"body":"x"}}') AS c \gset
SELECT wasend.wasend_enqueue(:c, ARRAY['15554500001', '15554500002', '15554500003']);
-- the database's own reason (settings and shared memory), with a hint
SELECT * FROM wasend._senders_blocked();
-- starting it warns with the reason and a hint, and starts it
SELECT wasend.wasend_start_campaign(:c);
SELECT status FROM wasend.campaigns WHERE id = :c;
-- campaign_progress shows the reason in a column of its own (the last but
-- one: duplicates came after it), and no ETA
-- although a row was sent a moment ago (the rate is what was measured)
UPDATE wasend.send_queue SET status = 'sent', sent_at = clock_timestamp(), wa_message_id = 'wamid.st1'
 WHERE campaign_id = :c AND recipient = '15554500001';
SELECT status, ready, rate_per_sec > 0 AS measured_rate, eta, stalled_reason
  FROM wasend.campaign_progress WHERE campaign_id = :c;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'wasend.campaign_progress'::regclass AND attnum > 0
 ORDER BY attnum DESC LIMIT 2;
-- the dry run returns it in its last column
SELECT would_send_now, stalled_reason FROM wasend.wasend_dry_run(:c);
-- a viewer reads it through the view too
CREATE ROLE regress_stalled_viewer;
SELECT wasend.wasend_grant_access('regress_stalled_viewer', 'viewer');
SET ROLE regress_stalled_viewer;
SELECT campaign_id, stalled_reason FROM wasend.campaign_progress WHERE campaign_id = :c;
RESET ROLE;
-- wasend_wait gives up at its timeout saying why
SELECT wasend.wasend_wait(:c, '0 s');
-- a paused campaign: its own reason first
SELECT wasend.wasend_pause_campaign(:c);
SELECT status, stalled_reason FROM wasend.campaign_progress WHERE campaign_id = :c;
-- cancelled (or completed): nothing is meant to move
SELECT wasend.wasend_cancel_campaign(:c);
SELECT status, stalled_reason FROM wasend.campaign_progress WHERE campaign_id = :c;

-- clean up
DROP EXTENSION wasend;
DROP ROLE regress_stalled_viewer;
