-- retention: wasend_prune deletes the rows of campaigns finished longer
-- ago than its age, keeps their figures in campaign_summaries (the report
-- and the progress of a pruned campaign stay the same), and refuses bad
-- input
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('5001', 'tok', 80);
SELECT wasend.wasend_create_campaign('old', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('running', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('recent', 1, '{"type":"text","text":{"body":"x"}}');
INSERT INTO wasend.prices (country_prefix, category, price) VALUES ('1', 'marketing', 0.025), ('44', 'marketing', 0.0705);
-- 25,000 rows of every outcome, so that pruning takes three batches
INSERT INTO wasend.send_queue (campaign_id, recipient, status, uncertain, wa_message_id, last_error_code,
                               last_error_class, last_error, sent_at, delivered_at, read_at, failed_at,
                               pricing_billable, pricing_category)
SELECT 1, CASE WHEN g % 3 = 0 THEN '44' ELSE '1' END || (7000000000 + g)::text, s.status, g % 97 = 0,
       'wamid.r' || g,
       CASE WHEN s.status = 'failed' AND g % 11 <> 0 THEN 131026 + g % 2 * 23 END,
       CASE WHEN s.status = 'failed' THEN CASE WHEN g % 11 = 0 THEN 'network' ELSE 'api' END END,
       CASE WHEN s.status = 'failed' THEN 'title ' || g % 5 END,
       CASE WHEN s.status IN ('sent', 'delivered', 'read') THEN now() - interval '40 days' END,
       CASE WHEN s.status IN ('delivered', 'read') THEN now() - interval '40 days' END,
       CASE WHEN s.status = 'read' THEN now() - interval '40 days' END,
       CASE WHEN s.status = 'failed' THEN now() - interval '40 days' END,
       CASE WHEN s.status IN ('delivered', 'read') THEN g % 13 <> 0 END,
       CASE WHEN s.status IN ('delivered', 'read') THEN CASE WHEN g % 7 = 0 THEN 'utility' ELSE 'marketing' END END
  FROM generate_series(1, 25000) g
 CROSS JOIN LATERAL (SELECT (ARRAY['read', 'delivered', 'sent', 'failed', 'cancelled', 'held'])[1 + g % 6] AS status) s;
-- a row queued into the finished campaign later is still to send: it stays
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15550009999');
INSERT INTO wasend.held_messages (row_id, campaign_id)
SELECT id, 1 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'held' LIMIT 3;
INSERT INTO wasend.send_queue (campaign_id, recipient, status, sent_at)
SELECT c, '1555000' || g, 'sent', now() - interval '40 days' FROM generate_series(1, 5) g, generate_series(2, 3) c;
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('17000000006', 'said STOP');
UPDATE wasend.campaigns SET status = 'completed', completed_at = now() - interval '31 days' WHERE id = 1;
UPDATE wasend.campaigns SET status = 'running', started_at = now() - interval '40 days' WHERE id = 2;
UPDATE wasend.campaigns SET status = 'completed', completed_at = now() - interval '29 days' WHERE id = 3;
CREATE TEMP TABLE report_before AS SELECT * FROM wasend.campaign_report;
CREATE TEMP TABLE progress_before AS
SELECT campaign_id, name, status, pause_reason, phone_number_id, total, ready, sending, sent, delivered, read,
       failed, cancelled, uncertain, percent_done, errors_by_code, held, waiting, waiting_window, kind, priority
  FROM wasend.campaign_progress;
SELECT campaign_id, total, sent, delivered, read, failed, held, billable, unpriced, estimated_cost
  FROM report_before ORDER BY 1;
-- bad input changes nothing
SELECT wasend.wasend_prune('-1 day');
-- campaign 1 finished 31 days ago: pruned; 3 (29 days) and 2 (running) are not
SELECT wasend.wasend_prune('30 days');
SELECT campaign_id, status, count(*) FROM wasend.send_queue GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) FROM wasend.held_messages;
SELECT count(*) AS summary_rows, sum(rows) AS rows_summed FROM wasend.campaign_summaries;
-- the report and the progress are what they were, column for column
SELECT count(*) AS report_differs FROM (
    (SELECT * FROM report_before EXCEPT ALL SELECT * FROM wasend.campaign_report)
    UNION ALL
    (SELECT * FROM wasend.campaign_report EXCEPT ALL SELECT * FROM report_before)) d;
SELECT count(*) AS progress_differs FROM (
    (SELECT * FROM progress_before
     EXCEPT ALL
     SELECT campaign_id, name, status, pause_reason, phone_number_id, total, ready, sending, sent, delivered, read,
            failed, cancelled, uncertain, percent_done, errors_by_code, held, waiting, waiting_window, kind, priority
       FROM wasend.campaign_progress)
    UNION ALL
    (SELECT campaign_id, name, status, pause_reason, phone_number_id, total, ready, sending, sent, delivered, read,
            failed, cancelled, uncertain, percent_done, errors_by_code, held, waiting, waiting_window, kind, priority
       FROM wasend.campaign_progress
     EXCEPT ALL
     SELECT * FROM progress_before)) d;
SELECT failures, by_pricing_category FROM wasend.campaign_report WHERE campaign_id = 1;
-- suppressions are never pruned
SELECT recipient, reason FROM wasend.suppressions;
-- nothing more to prune; a second pass adds nothing to the summaries
SELECT wasend.wasend_prune('30 days');
SELECT sum(rows) AS rows_summed FROM wasend.campaign_summaries;
-- the caches: a recipient_window entry older than a day and inbound
-- messages older than the age go; the last day's stay
INSERT INTO wasend.recipient_window VALUES ('p', 'a', now() - interval '26 hours'), ('p', 'b', now() - interval '23 hours');
INSERT INTO wasend.inbound_messages (wa_message_id, from_number, received_at, raw)
VALUES ('in.1', '15550001', now() - interval '31 days', '{}'), ('in.2', '15550002', now() - interval '2 hours', '{}');
SELECT wasend.wasend_prune('30 days');
SELECT recipient FROM wasend.recipient_window;
SELECT wa_message_id FROM wasend.inbound_messages;
-- NULL reads wasend.retention (90 days: nothing is that old); the age 0
-- prunes every finished campaign
SELECT current_setting('wasend.retention'), wasend.wasend_prune();
SELECT wasend.wasend_prune('0');
SELECT campaign_id, count(*) FROM wasend.send_queue GROUP BY 1 ORDER BY 1;
-- held rows stay however old (Meta may still say sent or failed), with
-- their held_messages
SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 1 GROUP BY 1 ORDER BY 1;
SELECT count(*) AS held_messages FROM wasend.held_messages;
-- a frequency cap counts marketing messages of up to a year, also in a
-- campaign created after the prune: a message read 100 days ago in a
-- marketing campaign completed 95 days ago stays past a 90-day prune
SELECT wasend.wasend_create_campaign('A', 1, '{"type":"text","text":{"body":"x"}}', 'marketing') AS a \gset
INSERT INTO wasend.send_queue (campaign_id, recipient, status, sent_at, delivered_at, read_at)
VALUES (:a, '15551110001', 'read', now() - interval '100 days', now() - interval '100 days', now() - interval '100 days'),
       (:a, '15551110002', 'failed', NULL, NULL, NULL);
UPDATE wasend.campaigns SET status = 'completed', completed_at = now() - interval '95 days' WHERE id = :a;
-- before the prune, a campaign capped at 1 per year waits for it
BEGIN;
SELECT wasend.wasend_create_campaign('B', 1, '{"type":"text","text":{"body":"x"}}', 'marketing',
                                     frequency_cap => 1, frequency_window => '1 year') AS b \gset
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:b, '15551110001');
SELECT would_send_now, waiting_frequency_cap FROM wasend.wasend_dry_run(:b);
ROLLBACK;
SELECT wasend.wasend_prune('90 days');
SELECT recipient, status FROM wasend.send_queue WHERE campaign_id = :a ORDER BY 1;
-- and after it, the same campaign created then still waits
SELECT wasend.wasend_create_campaign('B', 1, '{"type":"text","text":{"body":"x"}}', 'marketing',
                                     frequency_cap => 1, frequency_window => '1 year') AS b \gset
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:b, '15551110001');
SELECT would_send_now, waiting_frequency_cap FROM wasend.wasend_dry_run(:b);
-- a year after the send, the message goes; the campaign's other rows went
-- once it finished a year ago
UPDATE wasend.send_queue SET sent_at = now() - interval '367 days' WHERE campaign_id = :a;
UPDATE wasend.campaigns SET completed_at = now() - interval '366 days' WHERE id = :a;
SELECT wasend.wasend_prune('90 days');
SELECT count(*) FROM wasend.send_queue WHERE campaign_id = :a;
SELECT would_send_now, waiting_frequency_cap FROM wasend.wasend_dry_run(:b);
-- its suppressions go with it, confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
