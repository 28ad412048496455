-- secrets: tokens are readable only by wasend_admin (and superusers); the
-- operator and viewer roles do their jobs through the API without them
\set SHOW_CONTEXT never
CREATE ROLE regress_wasend_op LOGIN IN ROLE wasend_operator;
CREATE ROLE regress_wasend_view LOGIN IN ROLE wasend_viewer;
CREATE ROLE regress_wasend_admin LOGIN IN ROLE wasend_admin;
CREATE ROLE regress_nobody LOGIN;
-- which columns named like a secret can each role read, in any table or view?
SELECT r.rolname, c.table_name, c.column_name,
       has_column_privilege(r.rolname, format('wasend.%I', c.table_name), c.column_name, 'SELECT') AS can_read
  FROM information_schema.columns c
 CROSS JOIN (VALUES ('regress_wasend_op'), ('regress_wasend_view'), ('regress_wasend_admin'), ('regress_nobody')) r(rolname)
 WHERE c.table_schema = 'wasend' AND c.column_name ~ 'token|secret'
 ORDER BY 1, 2, 3;
-- no view of the extension mentions the token
SELECT count(*) AS views_with_token FROM pg_views
 WHERE schemaname = 'wasend' AND definition ~ 'access_token';
-- functions the non-admin roles can run: none returns numbers' rows
SELECT r.rolname, p.oid::regprocedure
  FROM pg_proc p
 CROSS JOIN (VALUES ('regress_wasend_op'), ('regress_wasend_view')) r(rolname)
 WHERE (p.proname LIKE 'wasend%' OR p.pronamespace = 'wasend'::regnamespace)
   AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
 ORDER BY 1, p.oid::regprocedure::text;
-- the operator runs a campaign end to end without ever seeing a token
SET ROLE regress_wasend_op;
SELECT access_token FROM wasend.whatsapp_numbers;
SELECT * FROM wasend.whatsapp_numbers;
SELECT id, phone_number_id, status FROM wasend.whatsapp_numbers ORDER BY id;
SELECT wasend_create_campaign('by operator', 1, '{"type":"text","text":{"body":"hi"}}') AS cop \gset
SELECT wasend_enqueue(:cop, ARRAY['15551270001']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cop, '15551270002');
SELECT wasend_start_campaign(:cop);
SELECT wasend_pause_campaign(:cop);
SELECT campaign_id, status, total FROM wasend.campaign_progress WHERE campaign_id = :cop;
SELECT wasend_add_number('9001', 'tok');
SELECT wasend_update_number(1, 'stolen');
UPDATE wasend.whatsapp_numbers SET access_token = 'x';
DELETE FROM wasend.send_queue;
SELECT wasend._wake_at_commit();
RESET ROLE;
-- the viewer watches and cannot change anything
SET ROLE regress_wasend_view;
SELECT campaign_id, status, total FROM wasend.campaign_progress WHERE campaign_id = :cop;
SELECT count(*) >= 0 AS can_see_stats FROM wasend_worker_stats();
SELECT access_token FROM wasend.whatsapp_numbers;
SELECT wasend_pause_campaign(:cop);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cop, '15551270003');
RESET ROLE;
-- a role outside wasend sees nothing
SET ROLE regress_nobody;
SELECT count(*) FROM wasend.campaigns;
SELECT wasend_start_campaign(:cop);
RESET ROLE;
-- the admin reads and changes tokens
SET ROLE regress_wasend_admin;
SELECT id, access_token FROM wasend.whatsapp_numbers ORDER BY id;
SELECT wasend_update_number(1, 'rotated-token');
RESET ROLE;
-- the app secret is superuser-only, and hidden from SHOW ALL
SET ROLE regress_wasend_admin;
SHOW wasend.app_secret;
SHOW wasend.webhook_verify_token;
SELECT count(*) FROM pg_settings WHERE name IN ('wasend.app_secret', 'wasend.webhook_verify_token');
RESET ROLE;
-- errors about a number never echo its token
SELECT wasend_update_number(1, 'bad token with spaces');
INSERT INTO wasend.whatsapp_numbers (phone_number_id, access_token, max_send_rate_per_sec)
VALUES (NULL, 'tok-in-a-bad-row', 80);
DROP ROLE regress_wasend_op, regress_wasend_view, regress_wasend_admin, regress_nobody;
