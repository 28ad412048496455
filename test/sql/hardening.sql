-- hardening: no code of wasend that runs as the extension owner touches an
-- object its caller can create.  An operator plants everything it can: a
-- temp table wasend_statuses with triggers (the table 0.1.0's
-- _apply_statuses created, truncated and filled as superuser), temp
-- functions and operators, and functions and operators in public that
-- would be better matches than pg_catalog's.  Then it calls what it may
-- call: the webhook ingest with a correctly signed body, and the campaign
-- API.  Every trap logs who ran it and tries to make the operator a
-- superuser; none may ever run.
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
-- the app secret, from a file that only the server's user can read
\getenv builddir PG_ABS_BUILDDIR
\set secret_file :builddir '/wasend_hardening_secret'
\setenv WASEND_SECRET_FILE :secret_file
\! umask 077 && printf 'regress-app-secret\n' > "$WASEND_SECRET_FILE"
ALTER SYSTEM SET wasend.app_secret_file = :'secret_file';
SELECT pg_reload_conf();
-- wait (at most 10 s) until this session has reloaded the setting
\set ECHO none
\o /dev/null
SELECT format('SELECT pg_sleep(0.01) WHERE current_setting(%L) IS DISTINCT FROM %L',
              'wasend.app_secret_file', :'secret_file')
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
SELECT current_setting('wasend.app_secret_file') = :'secret_file' AS secret_file_set;
-- two rows the signed body's statuses are for
SELECT wasend.wasend_add_number('106540352242922', 'EAAG-token', 80);
SELECT wasend.wasend_create_campaign('hardening', 1, '{"type":"text","text":{"body":"x"}}') AS ch \gset
SELECT wasend.wasend_enqueue(:ch, ARRAY['15551290001', '15551290002']);
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1,
       wa_message_id = 'wamid.hard' || right(recipient, 1)
 WHERE campaign_id = :ch;
-- the operator, in a database whose public schema everybody may write to
-- (any database created before PostgreSQL 15)
CREATE ROLE regress_hard_op LOGIN;
SELECT wasend.wasend_grant_access('regress_hard_op', 'operator');
GRANT CREATE ON SCHEMA public TO regress_hard_op;
CREATE TABLE public.regress_trap_log (trap text, ran_as name);
GRANT SELECT, INSERT ON public.regress_trap_log TO PUBLIC;
SET ROLE regress_hard_op;
CREATE FUNCTION public.regress_escalate(what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.regress_trap_log VALUES (what, current_user);
    BEGIN
        ALTER ROLE regress_hard_op SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
END
$$;
-- the temp table of 0.1.0's _apply_statuses, with triggers
CREATE FUNCTION pg_temp.regress_trap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.regress_escalate(TG_WHEN || ' ' || TG_OP || ' on ' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TEMP TABLE wasend_statuses (
    wamid text, status text, at timestamptz, code int, title text, recipient text);
CREATE TRIGGER regress_trap_truncate BEFORE TRUNCATE ON wasend_statuses
    FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.regress_trap();
CREATE TRIGGER regress_trap_insert BEFORE INSERT ON wasend_statuses
    FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.regress_trap();
-- temp functions and an operator named like the ones the functions use
CREATE FUNCTION pg_temp.jsonb_typeof(jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('pg_temp.jsonb_typeof'); RETURN pg_catalog.jsonb_typeof($1); END
$$;
CREATE FUNCTION pg_temp.now() RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('pg_temp.now'); RETURN pg_catalog.now(); END
$$;
CREATE FUNCTION pg_temp.regress_field(jsonb, text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('pg_temp.->>'); RETURN $1 OPERATOR(pg_catalog.->>) $2; END
$$;
CREATE OPERATOR pg_temp.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = pg_temp.regress_field);
-- public functions and an operator that match the calls in wasend's
-- functions better than pg_catalog's (or exactly as well)
CREATE FUNCTION public.now() RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('public.now'); RETURN pg_catalog.now(); END
$$;
CREATE FUNCTION public.format(text, text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('public.format(text, text)'); RETURN pg_catalog.format($1, $2); END
$$;
CREATE FUNCTION public.format(text, integer) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('public.format(text, integer)'); RETURN pg_catalog.format($1, $2); END
$$;
CREATE FUNCTION public.jsonb_build_object(text, bigint, text, bigint, text, bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.regress_escalate('public.jsonb_build_object');
    RETURN pg_catalog.jsonb_build_object($1, $2, $3, $4, $5, $6);
END
$$;
CREATE FUNCTION public.regress_cat(text, name) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN PERFORM public.regress_escalate('public.||(text, name)'); RETURN $1 OPERATOR(pg_catalog.||) $2::text; END
$$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = name, FUNCTION = public.regress_cat);
-- now the operator calls what it may call: a correctly signed webhook ...
\set body '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.hard1","status":"delivered","timestamp":"1700000000","recipient_id":"15551290001"},{"id":"wamid.hard2","status":"failed","timestamp":"1700000001","recipient_id":"15551290002","errors":[{"code":131026,"title":"Message undeliverable (token EAAGm0PX4ZCpsBAKZCdeadbeefdeadbeef0123)"}]},{"id":"wamid.hard9","status":"sent","timestamp":"1700000002","recipient_id":"15551290009"}]}}]}]}'
SELECT wasend.wasend_ingest_webhook(:'body',
       'sha256=05d4247db8b3c369baaf114679161416f6660101a4dafd50ff1987e583a1adb6') AS ingested;
-- ... and the campaign API, which fires the send_queue triggers
SELECT wasend.wasend_create_campaign('by the operator', 1, '{"type":"text","text":{"body":"y"}}') AS co \gset
SELECT wasend.wasend_enqueue(:co, ARRAY['15551290011'], ARRAY['{"type":"text","text":{"body":"z"}}'::jsonb]);
INSERT INTO wasend.send_queue (campaign_id, recipient, payload)
VALUES (:co, '15551290012', '{"type":"text","text":{"body":"z"}}');
SELECT wasend.wasend_start_campaign(:co, '2100-01-01 00:00+00');
SELECT wasend.wasend_pause_campaign(:co);
SELECT wasend.wasend_resume_campaign(:co);
SELECT wasend.wasend_cancel_campaign(:co);
SELECT wasend.wasend_retry_failed(:ch);
RESET ROLE;
-- the operator is no superuser, and no trap ever ran
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_hard_op';
SELECT * FROM public.regress_trap_log;
-- the webhook did its job, and the token-shaped text in the error title
-- was not stored
SELECT recipient, status, last_error_code, last_error FROM wasend.send_queue
 WHERE campaign_id = :ch ORDER BY recipient;
SELECT wa_message_id, status FROM wasend.pending_statuses;
SELECT recipient, reason FROM wasend.suppressions;
SELECT count(*) AS rows_with_token FROM wasend.send_queue WHERE last_error ~ 'EA[A-Za-z0-9]{20,}';
-- the catalog: every function of the extension pins its search_path
-- (pg_temp last), and says whether it runs as its owner
SELECT p.oid::regprocedure AS function, p.prosecdef AS definer, l.lanname AS lang,
       array_to_string(p.proconfig, '; ') AS config
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wasend')
 ORDER BY p.oid::regprocedure::text;
-- ... all but wasend._redact, which stays inlinable: its body names every
-- function with its schema
SELECT p.oid::regprocedure AS without_search_path, p.prosrc
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wasend')
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
-- no function creates a temp table or names pg_temp, and every table or
-- view of wasend is named with its schema
SELECT p.oid::regprocedure AS suspicious, p.prosrc ~* '\mtemp(orary)?\s+table|\mpg_temp\M' AS temp,
       p.prosrc ~ '(^|[^.[:alnum:]_])(whatsapp_numbers|campaigns|send_queue|error_policy|inbound_messages|pending_statuses|suppressions|campaign_progress|portfolios|recipient_window|templates|held_messages|prices|campaign_report)\M' AS unqualified
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wasend')
   AND (p.prosrc ~* '\mtemp(orary)?\s+table|\mpg_temp\M'
        OR p.prosrc ~ '(^|[^.[:alnum:]_])(whatsapp_numbers|campaigns|send_queue|error_policy|inbound_messages|pending_statuses|suppressions|campaign_progress|portfolios|recipient_window|templates|held_messages|prices|campaign_report)\M');
-- clean up
DROP OWNED BY regress_hard_op;
DROP ROLE regress_hard_op;
DROP TABLE public.regress_trap_log;
ALTER SYSTEM RESET wasend.app_secret_file;
SELECT pg_reload_conf();
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.01) WHERE current_setting(''wasend.app_secret_file'') <> '''''
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
\! rm -f "$WASEND_SECRET_FILE"
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
