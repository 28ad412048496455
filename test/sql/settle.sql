-- settle: a status webhook names its message's row by the echoed
-- biz_opaque_callback_data ('wasend:<row id>'), and settles an uncertain
-- row whose request had reached Meta (the TAP test 056 crashes senders)
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1282000001', 'tok', 80) AS nh \gset
SELECT wasend.wasend_create_campaign('settle', :nh, '{"type":"text","text":{"body":"x"}}') AS ch \gset
SELECT wasend.wasend_enqueue(:ch, array_agg((15551282000 + g)::text)) FROM generate_series(1, 9) g;
-- a status webhook of the number 1282000001 (or another), signed
-- elsewhere: the body _ingest_verified gets
CREATE FUNCTION pg_temp.wh(st jsonb, pnid text DEFAULT '1282000001') RETURNS text
LANGUAGE sql AS $$
    SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
        jsonb_build_object('id', '1', 'changes', jsonb_build_array(jsonb_build_object(
            'field', 'messages', 'value', jsonb_build_object(
                'messaging_product', 'whatsapp',
                'metadata', jsonb_build_object('phone_number_id', pnid),
                'statuses', st))))))::text
$$;
-- one status: wamid, status, recipient, opaque data
CREATE FUNCTION pg_temp.st(wamid text, status text, recipient text, opaque text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('id', wamid, 'status', status,
        'timestamp', (extract(epoch FROM now())::bigint - 30)::text,
        'recipient_id', recipient, 'biz_opaque_callback_data', opaque))
$$;
CREATE FUNCTION pg_temp.rid(n int) RETURNS bigint
LANGUAGE sql AS $$ SELECT id FROM wasend.send_queue WHERE recipient = (15551282000 + n)::text $$;
-- the rows as the supervisor leaves them after a crash (src/queue.sql,
-- recover): 1, 4, 6, 7 uncertain and ready, held for
-- wasend.uncertain_retry_delay; 2 failed as uncertain (on_uncertain =
-- fail); 3 sent with its wamid; 5 in flight (a retry)
UPDATE wasend.send_queue
   SET status = 'ready', uncertain = true, last_error_class = 'uncertain', attempts = 1,
       last_error = 'outcome unknown', waiting_for = 'uncertain', next_attempt_at = now() + interval '1 minute'
 WHERE recipient IN ('15551282001', '15551282004', '15551282006', '15551282007');
UPDATE wasend.send_queue
   SET status = 'failed', uncertain = true, last_error_class = 'uncertain', attempts = 1,
       last_error = 'outcome unknown', failed_at = now()
 WHERE recipient = '15551282002';
UPDATE wasend.send_queue
   SET status = 'sent', sent_at = now(), attempts = 2, wa_message_id = 'wamid.A3'
 WHERE recipient = '15551282003';
UPDATE wasend.send_queue
   SET status = 'sending', attempts = 2, claimed_by = 7, claimed_at = now()
 WHERE recipient = '15551282005';
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    -- settles the ready row 1 (sent, then delivered: the furthest wins)
    pg_temp.st('wamid.S1', 'sent', '15551282001', 'wasend:' || pg_temp.rid(1)),
    pg_temp.st('wamid.S1', 'delivered', '15551282001', 'wasend:' || pg_temp.rid(1)),
    -- settles the failed row 2
    pg_temp.st('wamid.S2', 'sent', '15551282002', 'wasend:' || pg_temp.rid(2)),
    -- row 3 has wamid.A3: wamid.B3 is a second send of it
    pg_temp.st('wamid.B3', 'sent', '15551282003', 'wasend:' || pg_temp.rid(3)),
    -- row 5 is in flight: its status waits, with its row id
    pg_temp.st('wamid.S5', 'sent', '15551282005', 'wasend:' || pg_temp.rid(5)),
    -- a test send, and opaque data that is not wasend's: no row
    pg_temp.st('wamid.T1', 'sent', '15551282004', 'wasend:test:5'),
    pg_temp.st('wamid.G1', 'sent', '15551282004', 'wasend:' || pg_temp.rid(4) || ' '),
    pg_temp.st('wamid.G2', 'sent', '15551282004', 'wasend:1234567890123456789'),
    pg_temp.st('wamid.G3', 'sent', '15551282004', 'other:' || pg_temp.rid(4)),
    pg_temp.st('wamid.G4', 'sent', '15551282004', NULL))::jsonb
    || jsonb_build_array(jsonb_build_object('id', 'wamid.G5', 'status', 'sent',
           'timestamp', extract(epoch FROM now())::bigint::text, 'recipient_id', '15551282004',
           'biz_opaque_callback_data', pg_temp.rid(4))))) AS answer;
-- another database's row of the same id: another number and another
-- recipient leave row 6 alone; so does a status of this number that names
-- another recipient (a database sharing the number) for row 7, and one
-- of row 7's recipient from another number; a failed status of another
-- wamid for row 3 is no second send
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.X6', 'sent', '15559990006', 'wasend:' || pg_temp.rid(6))), '999000001')) AS answer;
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.S7', 'read', '15559990007', 'wasend:' || pg_temp.rid(7)),
    pg_temp.st('wamid.F3', 'failed', '15551282003', 'wasend:' || pg_temp.rid(3))))) AS answer;
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.Y7', 'sent', '15551282007', 'wasend:' || pg_temp.rid(7))), '999000001')) AS answer;
SELECT right(recipient, 1) AS r, status, wa_message_id, uncertain, last_error_class AS class, waiting_for,
       sent_at IS NOT NULL AS sent, delivered_at IS NOT NULL AS delivered, read_at IS NOT NULL AS read,
       failed_at IS NOT NULL AS failed,
       -- claimable: in send_queue_ready_idx and ready (src/queue.sql, claim)
       sent_at IS NULL AND failed_at IS NULL AND status = 'ready' AS claimable
  FROM wasend.send_queue WHERE campaign_id = :ch ORDER BY recipient;
SELECT wa_message_id, status, row_id = pg_temp.rid(right(recipient, 1)::int) AS names_row,
       row_id IS NULL AS no_row, phone_number_id
  FROM wasend.pending_statuses ORDER BY 1;
SELECT wa_message_id, row_id = pg_temp.rid(3) AS row3, campaign_id = :ch AS campaign, status
  FROM wasend.duplicate_sends;
-- a later status of the duplicate updates it, and goes to no pending
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.B3', 'delivered', '15551282003', NULL)))) AS answer;
SELECT wa_message_id, status FROM wasend.duplicate_sends;
SELECT count(*) AS b3_pending FROM wasend.pending_statuses WHERE wa_message_id = 'wamid.B3';
-- row 5's sender stopped: the recovery marks it uncertain and applies the
-- status that waited for it (wasend._apply_row_statuses)
UPDATE wasend.send_queue
   SET status = 'ready', uncertain = true, last_error_class = 'uncertain', claimed_by = NULL,
       waiting_for = 'uncertain', next_attempt_at = now() + interval '1 minute'
 WHERE recipient = '15551282005';
SELECT wasend._apply_row_statuses(ARRAY[pg_temp.rid(5)]) AS applied;
SELECT right(recipient, 1) AS r, status, wa_message_id, uncertain,
       sent_at IS NULL AND failed_at IS NULL AND status = 'ready' AS claimable
  FROM wasend.send_queue WHERE recipient = '15551282005';
-- the senders' refresh does the same for a row that became uncertain:
-- row 8 in flight gets its status, then its sender stops
UPDATE wasend.send_queue SET status = 'sending', attempts = 1, claimed_by = 7, claimed_at = now()
 WHERE recipient = '15551282008';
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.S8', 'sent', '15551282008', 'wasend:' || pg_temp.rid(8))))) ->> 'statuses_pending' AS pending;
UPDATE wasend.send_queue
   SET status = 'ready', uncertain = true, last_error_class = 'uncertain', claimed_by = NULL,
       waiting_for = 'uncertain', next_attempt_at = now() + interval '1 minute'
 WHERE recipient = '15551282008';
SELECT wasend._apply_pending_statuses() AS applied;
SELECT right(recipient, 1) AS r, status, wa_message_id, uncertain
  FROM wasend.send_queue WHERE recipient = '15551282008';
-- a status for a row that had no wamid yet, arriving after its retry
-- recorded another: a duplicate too
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.Z8', 'sent', '15551282008', 'wasend:' || pg_temp.rid(8))))) ->> 'statuses_applied' AS applied;
SELECT wa_message_id, status, row_id = pg_temp.rid(8) AS row8 FROM wasend.duplicate_sends ORDER BY 1;
-- a row whose request timed out and that failed at its last attempt
-- (uncertain, class timeout), and an uncertain row of a cancelled
-- campaign, take the status of a request that had reached Meta; a row
-- that failed for sure (not uncertain) takes none
SELECT wasend.wasend_create_campaign('settle later', :nh, '{"type":"text","text":{"body":"x"}}') AS c2 \gset
SELECT wasend.wasend_enqueue(:c2, ARRAY['15551283001', '15551283002', '15551283003']);
UPDATE wasend.send_queue
   SET status = 'failed', uncertain = true, last_error_class = 'timeout', attempts = 5,
       last_error = 'Operation timed out', failed_at = now()
 WHERE recipient = '15551283001';
UPDATE wasend.send_queue
   SET status = 'cancelled', uncertain = true, last_error_class = 'reset', attempts = 1
 WHERE recipient = '15551283002';
UPDATE wasend.send_queue
   SET status = 'failed', last_error_class = 'api', last_error_code = 131026, attempts = 1, failed_at = now()
 WHERE recipient = '15551283003';
SELECT wasend._ingest_verified(pg_temp.wh(jsonb_build_array(
    pg_temp.st('wamid.L1', 'delivered', '15551283001',
               'wasend:' || (SELECT id FROM wasend.send_queue WHERE recipient = '15551283001')),
    pg_temp.st('wamid.L2', 'sent', '15551283002',
               'wasend:' || (SELECT id FROM wasend.send_queue WHERE recipient = '15551283002')),
    pg_temp.st('wamid.L3', 'sent', '15551283003',
               'wasend:' || (SELECT id FROM wasend.send_queue WHERE recipient = '15551283003'))))) AS answer;
SELECT right(recipient, 1) AS r, status, wa_message_id, uncertain, last_error_class AS class,
       failed_at IS NOT NULL AS failed
  FROM wasend.send_queue WHERE campaign_id = :c2 ORDER BY recipient;

-- what users see: the duplicates, and why row 6 waits
SELECT duplicates, uncertain, ready,
       regexp_replace(waiting, 'until [^,]*,', 'until T,') AS waiting
  FROM wasend.campaign_progress WHERE campaign_id = :ch;
SELECT duplicates, sent, delivered, read, failed FROM wasend.campaign_report WHERE campaign_id = :ch;

-- clean up
DROP EXTENSION wasend;
