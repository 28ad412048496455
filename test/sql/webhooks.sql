-- webhooks: wasend_ingest_webhook refuses to work without an app secret file,
-- and with bad input; nothing is applied (the TAP test 011 covers signed
-- payloads and the HTTP endpoint)
\set SHOW_CONTEXT never
SHOW wasend.app_secret_file;
SELECT wasend.wasend_ingest_webhook('{"object":"whatsapp_business_account","entry":[]}',
                             'sha256=0000000000000000000000000000000000000000000000000000000000000000');
SELECT wasend.wasend_ingest_webhook('{"object":"whatsapp_business_account","entry":[]}');
SELECT count(*) AS inbound, (SELECT count(*) FROM wasend.pending_statuses) AS pending,
       (SELECT count(*) FROM wasend.suppressions) AS suppressed
  FROM wasend.inbound_messages;
-- statuses only move forward
SELECT s, wasend._status_rank(s) FROM unnest(ARRAY['sending', 'sent', 'failed', 'delivered', 'read', 'played']) s;
-- a suppressed recipient is skipped, with a notice, by enqueue and INSERT
INSERT INTO wasend.suppressions VALUES ('15551280001', 'replied STOP');
SELECT wasend.wasend_create_campaign('suppressed', 1, '{"type":"text","text":{"body":"x"}}') AS cs \gset
SELECT wasend.wasend_enqueue(:cs, ARRAY['15551280001', '15551280002']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cs, '+15551280001'), (:cs, '15551280003');
SELECT recipient FROM wasend.send_queue WHERE campaign_id = :cs ORDER BY 1;
