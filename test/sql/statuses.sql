-- statuses: what a signed status webhook may carry, and what wasend makes
-- of it, one status (or message) at a time (the TAP tests 011 and 033
-- cover the endpoint and the senders)
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1281000001', 'tok', 80) AS nh \gset
-- hostile values in a signed payload cost their own status or message,
-- never the payload: timestamps are clamped to the last 30 days (a huge
-- one is now, an ancient one 30 days ago), NaN, Infinity and garbage
-- refuse their status; an error code that is not an integer of at most 9
-- digits is no code; a wamid too long to be Meta's is refused
SELECT wasend.wasend_create_campaign('hostile', :nh, '{"type":"text","text":{"body":"x"}}') AS ch \gset
SELECT wasend.wasend_enqueue(:ch, array_agg((15551281000 + g)::text)) FROM generate_series(1, 9) g;
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1,
       wa_message_id = 'wamid.h' || right(recipient, 1)
 WHERE campaign_id = :ch;
SELECT wasend._ingest_verified(format('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1"},"statuses":[
 {"id":"wamid.h1","status":"delivered","timestamp":"9224318012399","recipient_id":"15551281001"},
 {"id":"wamid.h2","status":"delivered","timestamp":"Infinity","recipient_id":"15551281002"},
 {"id":"wamid.h3","status":"delivered","timestamp":"NaN","recipient_id":"15551281003"},
 {"id":"wamid.h4","status":"delivered","timestamp":"-Infinity","recipient_id":"15551281004"},
 {"id":"wamid.h5","status":"delivered","timestamp":"soon","recipient_id":"15551281005"},
 {"id":"wamid.h6","status":"failed","timestamp":"%1$s","recipient_id":"15551281006","errors":[{"code":12345678901,"title":"eleven digits"}]},
 {"id":"wamid.h7","status":"delivered","timestamp":1e300,"recipient_id":"15551281007"},
 {"id":"wamid.h8","status":"read","timestamp":-99999999999999,"recipient_id":"15551281008"},
 {"id":"wamid.h9","status":"read","timestamp":"%1$s","recipient_id":"15551281009","pricing":{"billable":"yes","category":7}},
 {"id":"wamid.elsewhere1","status":"delivered","timestamp":"%1$s","recipient_id":"15551281010","errors":[{"code":99999999999}]},
 {"id":"wamid.elsewhere2","status":"delivered","timestamp":"1e999999","recipient_id":"15551281011"},
 {"id":"wamid.%2$s","status":"delivered","timestamp":"%1$s","recipient_id":"15551281012"}],
 "messages":[
 {"from":"15551281020","id":"wamid.in-inf","timestamp":"Infinity","type":"text","text":{"body":"a"}},
 {"from":"15551281021","id":"wamid.in-huge","timestamp":"9224318012399","type":"text","text":{"body":"b"}},
 {"from":"15551281022","id":"wamid.in-junk","timestamp":{"t":1},"type":"text","text":{"body":"c"}},
 {"from":"15551281023","id":"wamid.%2$s","timestamp":"%1$s","type":"text","text":{"body":"d"}},
 {"from":"%2$s","id":"wamid.in-from","timestamp":"%1$s","type":"text","text":{"body":"e"}}]}}]}]}',
 extract(epoch FROM now())::bigint - 60,
 (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100) g))) AS answer;
SELECT recipient, status, last_error_code AS code,
       CASE WHEN delivered_at > now() - interval '2 minutes' THEN 'now'
            WHEN delivered_at > now() - interval '31 days' THEN '30 days ago'
            ELSE delivered_at::text END AS delivered,
       CASE WHEN read_at > now() - interval '2 minutes' THEN 'now'
            WHEN read_at > now() - interval '31 days' THEN '30 days ago'
            ELSE read_at::text END AS read,
       pricing_billable AS billable, pricing_category AS category
  FROM wasend.send_queue WHERE campaign_id = :ch ORDER BY recipient;
SELECT wa_message_id, status, error_code FROM wasend.pending_statuses ORDER BY 1;
SELECT from_number, body,
       CASE WHEN sent_at > now() - interval '2 minutes' THEN 'now' ELSE sent_at::text END AS sent_at
  FROM wasend.inbound_messages WHERE wa_message_id LIKE 'wamid.in-%' ORDER BY 1;

-- clean up
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
