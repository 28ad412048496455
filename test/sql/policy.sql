-- policy: the default error policy, number control, retry_failed
\set SHOW_CONTEXT never
SELECT action, count(*), min(code) FILTER (WHERE code ~ '^[0-9]+$') AS example
  FROM wasend.error_policy GROUP BY 1 ORDER BY 1;
SELECT code, action, backoff, backoff_factor, pause_for, slow_down FROM wasend.error_policy
 WHERE code IN ('130429', '131056', '131048', '190', '131026', '132001', 'timeout', 'http_5xx', '*')
 ORDER BY code;
-- numbers: pause, resume with a new token, update, bad input
SELECT wasend.wasend_pause_number(1, 'maintenance');
SELECT id, status, pause_reason FROM wasend.whatsapp_numbers WHERE id = 1;
SELECT wasend.wasend_resume_number(1, 'new-token');
SELECT id, status, pause_reason, access_token FROM wasend.whatsapp_numbers WHERE id = 1;
SELECT wasend.wasend_resume_number(1);              -- already active: notice
SELECT wasend.wasend_update_number(1, max_send_rate_per_sec => 500);
SELECT wasend.wasend_update_number(1);              -- nothing to update
SELECT wasend.wasend_update_number(1, 'has space');
SELECT wasend.wasend_update_number(1, max_send_rate_per_sec => 0);
SELECT wasend.wasend_pause_number(404);
SELECT wasend.wasend_resume_number(NULL);
SELECT id, max_send_rate_per_sec, access_token FROM wasend.whatsapp_numbers WHERE id = 1;
-- retry_failed: only failures whose policy is retry (or whose outcome was unknown)
SELECT wasend.wasend_create_campaign('retry', 1, '{"type":"text","text":{"body":"x"}}') AS cr \gset
SELECT wasend.wasend_enqueue(:cr, ARRAY['15551260001', '15551260002', '15551260003', '15551260004', '15551260005']);
UPDATE wasend.send_queue SET status = 'failed', attempts = 5, last_error_class = 'api', last_error_code = 131000
 WHERE recipient = '15551260001';
UPDATE wasend.send_queue SET status = 'failed', attempts = 5, last_error_class = 'timeout'
 WHERE recipient = '15551260002';
UPDATE wasend.send_queue SET status = 'failed', attempts = 1, last_error_class = 'api', last_error_code = 131026
 WHERE recipient = '15551260003';
UPDATE wasend.send_queue SET status = 'failed', attempts = 1, last_error_class = 'uncertain', uncertain = true
 WHERE recipient = '15551260004';
UPDATE wasend.send_queue SET status = 'sent', attempts = 1 WHERE recipient = '15551260005';
UPDATE wasend.campaigns SET status = 'completed' WHERE id = :cr;
SELECT wasend.wasend_retry_failed(:cr) AS retried;
SELECT recipient, status, attempts FROM wasend.send_queue WHERE campaign_id = :cr ORDER BY 1;
SELECT status FROM wasend.campaigns WHERE id = :cr;
SELECT wasend.wasend_cancel_campaign(:cr);
SELECT wasend.wasend_retry_failed(:cr);
SELECT wasend.wasend_retry_failed(404);
