-- campaigns: wasend_create_campaign validates the number and the message
\set SHOW_CONTEXT never
SELECT wasend.wasend_create_campaign('welcome', 1,
  '{"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}');
SELECT id, name, number_id, status, message->>'type' AS type FROM wasend.campaigns ORDER BY id;
-- bad input
SELECT wasend.wasend_create_campaign('', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign(NULL, 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('x', 99, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('x', NULL, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('x', 1, '[1,2]');
SELECT wasend.wasend_create_campaign('x', 1, '"hello"');
SELECT wasend.wasend_create_campaign('x', 1, '{"text":{"body":"x"}}');
SELECT wasend.wasend_create_campaign('x', 1, '{"type":42}');
SELECT wasend.wasend_create_campaign('x', 1, NULL);
SELECT wasend.wasend_create_campaign('x', 1,
  jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', repeat('x', 70000))));
-- a direct INSERT is checked too
INSERT INTO wasend.campaigns (name, number_id, message) VALUES ('direct', 1, '{"no":"type"}');
SELECT count(*) AS campaigns FROM wasend.campaigns;
