-- transitions: start, pause, resume, cancel, schedule; nonsense is refused
\set SHOW_CONTEXT never
SELECT wasend.wasend_create_campaign('second', 1, '{"type":"text","text":{"body":"x"}}') AS c2 \gset
\echo campaign :c2
SELECT wasend.wasend_enqueue(:c2, ARRAY['15551250001', '15551250002', '15551250003']);
SELECT wasend.wasend_resume_campaign(:c2);           -- draft: refused
SELECT wasend.wasend_pause_campaign(:c2);            -- draft: refused
SELECT wasend.wasend_start_campaign(:c2);
SELECT status, started_at IS NOT NULL AS started FROM wasend.campaigns WHERE id = :c2;
SELECT wasend.wasend_start_campaign(:c2);            -- already running: notice
SELECT wasend.wasend_pause_campaign(:c2);
SELECT status, pause_reason IS NOT NULL AS has_reason FROM wasend.campaigns WHERE id = :c2;
SELECT wasend.wasend_pause_campaign(:c2);            -- already paused: notice
SELECT wasend.wasend_start_campaign(:c2);            -- paused: use resume
SELECT wasend.wasend_resume_campaign(:c2);
SELECT status, pause_reason FROM wasend.campaigns WHERE id = :c2;
SELECT wasend.wasend_cancel_campaign(:c2) AS cancelled_rows;
SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = :c2 GROUP BY 1;
SELECT wasend.wasend_resume_campaign(:c2);           -- cancelled: refused
SELECT wasend.wasend_start_campaign(:c2);
SELECT wasend.wasend_cancel_campaign(:c2);
SELECT wasend.wasend_enqueue(:c2, ARRAY['15551250009']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:c2, '15551250009');
SELECT status FROM wasend.campaigns WHERE id = :c2;
-- a future start_at schedules the campaign
SELECT wasend.wasend_create_campaign('later', 1, '{"type":"text","text":{"body":"x"}}') AS c3 \gset
\echo campaign :c3
SELECT wasend.wasend_start_campaign(:c3, now() + interval '1 day');
SELECT status, start_at > now() AS in_future, started_at FROM wasend.campaigns WHERE id = :c3;
SELECT wasend.wasend_pause_campaign(:c3);
SELECT wasend.wasend_resume_campaign(:c3);           -- back to scheduled
SELECT status FROM wasend.campaigns WHERE id = :c3;
SELECT wasend.wasend_start_campaign(:c3, NULL);
-- unknown and NULL ids
SELECT wasend.wasend_start_campaign(404);
SELECT wasend.wasend_pause_campaign(NULL);
SELECT wasend.wasend_cancel_campaign(404);
-- a completed campaign cannot be restarted or cancelled
UPDATE wasend.campaigns SET status = 'completed' WHERE id = :c3;
SELECT wasend.wasend_start_campaign(:c3);
SELECT wasend.wasend_cancel_campaign(:c3);
SELECT id, status FROM wasend.campaigns ORDER BY id;
