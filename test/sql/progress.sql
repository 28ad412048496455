-- progress: the view counts rows by status, percent done and errors by code
UPDATE wasend.send_queue SET status = 'sent', sent_at = now() - interval '1 min', wa_message_id = 'wamid.' || id
 WHERE campaign_id = 1 AND recipient IN ('15551230001', '15551230002');
UPDATE wasend.send_queue SET status = 'failed', last_error_code = 131026, last_error = 'undeliverable'
 WHERE campaign_id = 1 AND recipient = '15551230003';
SELECT campaign_id, name, status, total, ready, sending, sent, failed, cancelled,
       percent_done, rate_per_sec, errors_by_code
  FROM wasend.campaign_progress ORDER BY campaign_id;
-- worker statistics have the documented columns
SELECT * FROM wasend.wasend_worker_stats() WHERE false;
-- the suppressions of the files before go with the extension: confirmed
-- (without it the drop is refused: test/t/047_operations_log.pl)
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
DROP TABLE contacts;
