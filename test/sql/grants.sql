-- grants: what each wasend role may do with the tables, listed in full so
-- that any change shows here.  No role may create a trigger (it would run
-- inside the senders and the API functions, as superuser), truncate or
-- reference a table; users write only the send_queue columns a user
-- supplies.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1065400002', 'EAAG-grants-token', 80);
SELECT wasend.wasend_create_campaign('grants', 1, '{"type":"text","text":{"body":"x"}}');
CREATE ROLE regress_g_admin LOGIN;
SELECT wasend.wasend_grant_access('regress_g_admin', 'admin');
CREATE ROLE regress_g_op LOGIN;
SELECT wasend.wasend_grant_access('regress_g_op', 'operator');
CREATE ROLE regress_g_view LOGIN;
SELECT wasend.wasend_grant_access('regress_g_view', 'viewer');
-- table privileges granted to each role
SELECT grantee, table_name, string_agg(privilege_type, ', ' ORDER BY privilege_type) AS privileges
  FROM information_schema.role_table_grants
 WHERE table_schema = 'wasend' AND grantee IN ('wasend_admin', 'wasend_operator', 'wasend_viewer')
 GROUP BY 1, 2 ORDER BY 1, 2;
-- column privileges granted to each role (beyond its table privileges)
SELECT cp.grantee, cp.table_name, cp.privilege_type,
       string_agg(cp.column_name, ', ' ORDER BY a.attnum) AS columns
  FROM information_schema.column_privileges cp
  JOIN pg_attribute a ON a.attrelid = format('wasend.%I', cp.table_name)::regclass
                     AND a.attname = cp.column_name
 WHERE cp.table_schema = 'wasend' AND cp.grantee IN ('wasend_admin', 'wasend_operator', 'wasend_viewer')
   AND NOT EXISTS (SELECT 1 FROM information_schema.role_table_grants t
                    WHERE t.table_schema = cp.table_schema AND t.table_name = cp.table_name
                      AND t.grantee = cp.grantee AND t.privilege_type = cp.privilege_type)
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- what each role can do in effect (roles inherit: admin > operator >
-- viewer); "(some columns)" means a column privilege only
SELECT r.rolname, c.relname,
       concat_ws(', ', VARIADIC ARRAY(
           SELECT p || CASE WHEN has_table_privilege(r.rolname, c.oid, p) THEN ''
                            ELSE ' (some columns)' END
             FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
            WHERE has_table_privilege(r.rolname, c.oid, p)
               OR (p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                   AND has_any_column_privilege(r.rolname, c.oid, p))
            ORDER BY array_position(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'], p)))
         AS can
  FROM pg_class c
 CROSS JOIN (VALUES ('regress_g_admin'), ('regress_g_op'), ('regress_g_view')) r(rolname)
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY 1, 2;
SELECT r.rolname, c.relname,
       has_sequence_privilege(r.rolname, c.oid, 'USAGE') AS usage,
       has_sequence_privilege(r.rolname, c.oid, 'SELECT') AS select,
       has_sequence_privilege(r.rolname, c.oid, 'UPDATE') AS update
  FROM pg_class c
 CROSS JOIN (VALUES ('regress_g_admin'), ('regress_g_op'), ('regress_g_view')) r(rolname)
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind = 'S'
 ORDER BY 1, 2;
-- a trigger function anybody may run
CREATE FUNCTION public.regress_g_trap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trap ran as %', current_user;
END
$$;
-- no role can create a trigger on any wasend table or view
SET ROLE regress_g_admin;
SELECT format('CREATE TRIGGER regress_trap %s ON wasend.%I FOR EACH %s EXECUTE FUNCTION public.regress_g_trap()',
              CASE c.relkind WHEN 'v' THEN 'INSTEAD OF INSERT' ELSE 'BEFORE INSERT' END, c.relname,
              CASE c.relkind WHEN 'v' THEN 'ROW' ELSE 'STATEMENT' END)
  FROM pg_class c
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname \gexec
SET ROLE regress_g_op;
SELECT format('CREATE TRIGGER regress_trap %s ON wasend.%I FOR EACH %s EXECUTE FUNCTION public.regress_g_trap()',
              CASE c.relkind WHEN 'v' THEN 'INSTEAD OF INSERT' ELSE 'BEFORE INSERT' END, c.relname,
              CASE c.relkind WHEN 'v' THEN 'ROW' ELSE 'STATEMENT' END)
  FROM pg_class c
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname \gexec
SET ROLE regress_g_view;
SELECT format('CREATE TRIGGER regress_trap %s ON wasend.%I FOR EACH %s EXECUTE FUNCTION public.regress_g_trap()',
              CASE c.relkind WHEN 'v' THEN 'INSTEAD OF INSERT' ELSE 'BEFORE INSERT' END, c.relname,
              CASE c.relkind WHEN 'v' THEN 'ROW' ELSE 'STATEMENT' END)
  FROM pg_class c
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname \gexec
RESET ROLE;
SELECT count(*) AS triggers_created FROM pg_trigger WHERE tgname = 'regress_trap';
-- nor truncate a table, or reference one from a table of its own
SET ROLE regress_g_admin;
SELECT format('TRUNCATE wasend.%I', c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname \gexec
RESET ROLE;
GRANT CREATE ON SCHEMA public TO regress_g_admin;
SET ROLE regress_g_admin;
CREATE TABLE public.regress_g_ref (campaign_id bigint REFERENCES wasend.campaigns (id));
RESET ROLE;
-- the operator inserts recipients: campaign, recipient and payload, no
-- other column
SET ROLE regress_g_op;
INSERT INTO wasend.send_queue (campaign_id, recipient, status) VALUES (1, '15551300001', 'sent');
INSERT INTO wasend.send_queue (campaign_id, recipient, claimed_by) VALUES (1, '15551300001', 4242);
INSERT INTO wasend.send_queue (id, campaign_id, recipient) VALUES (1000000, 1, '15551300001');
INSERT INTO wasend.send_queue (campaign_id, recipient, wa_message_id) VALUES (1, '15551300001', 'wamid.fake');
INSERT INTO wasend.send_queue (campaign_id, recipient, sent_at) VALUES (1, '15551300001', now());
INSERT INTO wasend.send_queue (campaign_id, recipient, created_at) VALUES (1, '15551300001', now() - interval '1 day');
INSERT INTO wasend.send_queue (campaign_id, recipient, payload)
VALUES (1, '15551300001', '{"type":"text","text":{"body":"hi"}}')
RETURNING id, campaign_id, recipient, status, attempts, claimed_by, wa_message_id;
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15551300002');
UPDATE wasend.send_queue SET status = 'sent';
DELETE FROM wasend.send_queue;
SELECT nextval('wasend.send_queue_id_seq');
RESET ROLE;
-- the admin: the same send_queue columns, deletes old rows, edits numbers
-- (tokens included), the error policy and suppressions
SET ROLE regress_g_admin;
INSERT INTO wasend.send_queue (campaign_id, recipient, status) VALUES (1, '15551300003', 'sent');
INSERT INTO wasend.send_queue (campaign_id, recipient, claimed_by) VALUES (1, '15551300003', 4242);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15551300003');
UPDATE wasend.send_queue SET status = 'ready';
DELETE FROM wasend.send_queue WHERE recipient = '15551300003';
UPDATE wasend.whatsapp_numbers SET access_token = 'EAAG-rotated', max_send_rate_per_sec = 100;
SELECT id, phone_number_id, access_token, max_send_rate_per_sec FROM wasend.whatsapp_numbers;
UPDATE wasend.error_policy SET backoff = '3 seconds' WHERE code = '131000';
INSERT INTO wasend.error_policy (code, action, description) VALUES ('131099', 'fail', 'added by an admin');
DELETE FROM wasend.error_policy WHERE code = '131099';
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551300009', 'asked by phone');
DELETE FROM wasend.suppressions WHERE recipient = '15551300009';
UPDATE wasend.campaigns SET error_threshold = 0.1 WHERE id = 1;
SELECT setval('wasend.send_queue_id_seq', 1);
RESET ROLE;
-- the viewer only reads
SET ROLE regress_g_view;
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15551300004');
SELECT recipient, status FROM wasend.send_queue ORDER BY recipient;
RESET ROLE;
DROP TABLE IF EXISTS public.regress_g_ref;
DROP FUNCTION public.regress_g_trap();
REVOKE CREATE ON SCHEMA public FROM regress_g_admin;
DROP ROLE regress_g_admin, regress_g_op, regress_g_view;
DROP EXTENSION wasend;
