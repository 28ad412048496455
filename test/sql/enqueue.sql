-- enqueue: recipients are validated and normalized; duplicates are skipped;
-- an invalid recipient rejects the whole call
\set SHOW_CONTEXT never
SELECT wasend.wasend_enqueue(1, ARRAY['15551230001', '+15551230002', '15551230003']);
SELECT wasend.wasend_enqueue(1, ARRAY['15551230001', '+15551230004']);  -- 1 new, 1 already queued
SELECT wasend.wasend_enqueue(1, ARRAY['15551230008', '15551230009', '+15551230009']);  -- twice in one call
SELECT id, campaign_id, recipient, status, attempts FROM wasend.send_queue ORDER BY id;
-- per-recipient payloads override the campaign's message
SELECT wasend.wasend_enqueue(1, ARRAY['15551230005', '15551230006'],
  ARRAY['{"type":"text","text":{"body":"Hi Ana"}}'::jsonb, NULL]);
SELECT recipient, payload FROM wasend.send_queue WHERE recipient IN ('15551230005', '15551230006') ORDER BY 1;
-- bad input: nothing of the call is kept
SELECT wasend.wasend_enqueue(1, ARRAY['15551239001', '555-1234', '15551239002']);
SELECT wasend.wasend_enqueue(1, ARRAY['15551239001', NULL]);
SELECT wasend.wasend_enqueue(1, ARRAY['123456']);              -- too short
SELECT wasend.wasend_enqueue(1, ARRAY['1234567890123456']);    -- too long
SELECT wasend.wasend_enqueue(1, ARRAY['15551239001'], ARRAY['{"type":"text","text":{"body":"x"}}'::jsonb, '{"type":"text","text":{"body":"x"}}']);
SELECT wasend.wasend_enqueue(1, ARRAY['15551239001'], ARRAY['[]'::jsonb]);
SELECT wasend.wasend_enqueue(1, ARRAY[['15551239001'], ['15551239002']]);
SELECT wasend.wasend_enqueue(1, NULL);
SELECT wasend.wasend_enqueue(NULL, ARRAY['15551239001']);
SELECT wasend.wasend_enqueue(42, ARRAY['15551239001']);
SELECT count(*) AS rows_after_errors FROM wasend.send_queue;
SELECT wasend.wasend_enqueue(1, '{}');  -- empty is fine: 0 rows
-- plain INSERT ... SELECT from a user's own table works and is validated
CREATE TABLE contacts (name text, phone text);
INSERT INTO contacts VALUES ('Ana', '+15551240001'), ('Bo', '15551240002'), ('Cy', '15551240003');
INSERT INTO wasend.send_queue (campaign_id, recipient, payload)
SELECT 1, phone, jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'Hi ' || name))
  FROM contacts;
SELECT recipient, payload->'text'->>'body' AS body FROM wasend.send_queue WHERE recipient LIKE '1555124%' ORDER BY 1;
-- the README's INSERT ... SELECT: a recipient already queued in the
-- campaign is skipped by ON CONFLICT, the others go in (without it, the
-- first duplicate fails the whole statement)
INSERT INTO contacts VALUES ('Di', '15551240008');
INSERT INTO wasend.send_queue (campaign_id, recipient) SELECT 1, phone FROM contacts;
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT 1, phone FROM contacts
ON CONFLICT (campaign_id, recipient) WHERE priority IS NULL DO NOTHING;
SELECT recipient FROM wasend.send_queue WHERE recipient LIKE '1555124%' ORDER BY 1;
DELETE FROM contacts WHERE name = 'Di';
DELETE FROM wasend.send_queue WHERE recipient = '15551240008';
INSERT INTO contacts VALUES ('Bad', '15551240004x');
INSERT INTO wasend.send_queue (campaign_id, recipient) SELECT 1, phone FROM contacts WHERE name = 'Bad';
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15551240005'), (99, '15551240006');
INSERT INTO wasend.send_queue (campaign_id, recipient, payload) VALUES (1, '15551240007', '{"x":1}');
SELECT count(*) AS rows_total FROM wasend.send_queue;
