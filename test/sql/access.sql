-- access: who reaches wasend, and where.
--
-- 1. The API lives in schema wasend, which only the extension's owner can
--    create in.  A database owner who is not a superuser plants functions
--    of the API's names and signatures in a schema named after the
--    superuser (first in the default search_path, "$user", public) and in
--    public (which the database owner owns): one records the token it is
--    given, one makes the owner a superuser.  The documented calls,
--    schema-qualified, never reach them.
-- 2. A wasend role reaches only the databases whose wasend.database_access
--    lists it: an operator of one database can neither read nor send in
--    another, through the API, the tables or the views.
\set SHOW_CONTEXT never
SELECT current_user AS su \gset
CREATE ROLE regress_dbowner LOGIN;
CREATE ROLE regress_alice LOGIN;
CREATE ROLE regress_bob LOGIN;
CREATE DATABASE regress_shop_a OWNER regress_dbowner;
CREATE DATABASE regress_shop_b;
\c regress_shop_a
CREATE EXTENSION wasend;
-- the owner plants its trojans
SET ROLE regress_dbowner;
CREATE TABLE public.stolen (what text);
CREATE SCHEMA :"su";
CREATE FUNCTION :"su".wasend_add_number(phone_number_id text, access_token text,
        max_send_rate_per_sec integer DEFAULT 80, business_id text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO public.stolen VALUES (access_token); RETURN -1; END $$;
CREATE FUNCTION :"su".wasend_create_campaign(name text, number_id bigint, message jsonb)
    RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN ALTER ROLE regress_dbowner SUPERUSER; RETURN -1; END $$;
CREATE FUNCTION public.wasend_create_campaign(name text, number_id bigint, message jsonb)
    RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN ALTER ROLE regress_dbowner SUPERUSER; RETURN -1; END $$;
CREATE FUNCTION public.wasend_send(number_id bigint, recipient text, message jsonb)
    RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN ALTER ROLE regress_dbowner SUPERUSER; RETURN -1; END $$;
-- nor can it put anything into wasend's own schemas, or move them
CREATE FUNCTION wasend.wasend_add_number(text, text, integer) RETURNS bigint
    LANGUAGE sql AS 'SELECT -1::bigint';
CREATE FUNCTION wasend_impl.wasend_add_number(text, text, integer) RETURNS bigint
    LANGUAGE sql AS 'SELECT -1::bigint';
ALTER SCHEMA wasend RENAME TO wasend_old;
DROP SCHEMA wasend_impl CASCADE;
RESET ROLE;
-- the trap is armed: an unqualified call reaches it
SELECT wasend_add_number('1065400090', 'EAAG-bait-token', 80);
SELECT what FROM public.stolen;
DELETE FROM public.stolen;
-- the documented calls, as the superuser, with the default search_path
SHOW search_path;
SELECT wasend.wasend_add_number('1065400091', 'EAAG-secret-token-91', 80);
SELECT wasend.wasend_create_campaign('trojans', 1, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_enqueue(1, ARRAY['15551290101']);
SELECT wasend.wasend_send(1, '15551290102', '{"type":"text","text":{"body":"y"}}') > 0 AS queued;
SELECT count(*) AS stolen FROM public.stolen;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_dbowner';
SELECT id, name FROM wasend.campaigns ORDER BY id;
-- the owner of the database is no wasend role here either
SET ROLE regress_dbowner;
SELECT wasend.wasend_pause_number(1);
SELECT count(*) FROM wasend.send_queue;
RESET ROLE;

-- 2. alice operates shop_a; in shop_b she is nobody
SELECT wasend.wasend_grant_access('regress_alice', 'operator');
SELECT role_name, access FROM wasend.database_access;
SET ROLE regress_alice;
SELECT wasend.wasend_send(1, '15551290103', '{"type":"text","text":{"body":"z"}}') > 0 AS queued;
SELECT count(*) FROM wasend.send_queue;
SELECT phone_number_id FROM wasend.whatsapp_numbers;
SELECT wasend.wasend_add_number('1065400092', 'EAAG-other', 80);
RESET ROLE;

\c regress_shop_b
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1065400093', 'EAAG-shop-b-token', 80);
SELECT wasend.wasend_create_campaign('shop b', 1, '{"type":"text","text":{"body":"b"}}');
SELECT wasend.wasend_enqueue(1, ARRAY['15551290201'], ARRAY['{"type":"text","text":{"body":"private to b"}}'::jsonb]);
SELECT wasend.wasend_grant_access('regress_bob', 'viewer');
SET ROLE regress_alice;
-- the API refuses her, with the way to fix it
SELECT wasend.wasend_send(1, '15551290202', '{"type":"text","text":{"body":"from a"}}');
SELECT wasend.wasend_test_send(1, '15551290202');
SELECT wasend.wasend_enqueue(1, ARRAY['15551290202']);
SELECT wasend.wasend_start_campaign(1);
SELECT * FROM wasend.wasend_dry_run(1);
SELECT * FROM wasend.wasend_send_status(1);
SELECT * FROM wasend.wasend_worker_stats();
SELECT wasend.wasend_grant_access('regress_alice', 'admin');
-- the tables and views show her nothing and take nothing
SELECT count(*) FROM wasend.send_queue;
SELECT payload FROM wasend.send_queue;
SELECT count(*) FROM wasend.campaigns;
SELECT phone_number_id FROM wasend.whatsapp_numbers;
SELECT count(*) FROM wasend.campaign_progress;
SELECT count(*) FROM wasend.campaign_report;
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15551290203');
RESET ROLE;
-- a viewer of shop_b reads, and changes nothing, even as an admin elsewhere
\c regress_shop_a
SELECT wasend.wasend_grant_access('regress_bob', 'admin');
\c regress_shop_b
SET ROLE regress_bob;
SELECT recipient, payload FROM wasend.send_queue;
SELECT count(*) FROM wasend.campaign_progress;
UPDATE wasend.whatsapp_numbers SET max_send_rate_per_sec = 1000;
DELETE FROM wasend.send_queue;
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551290201', 'mine');
SELECT wasend.wasend_pause_number(1);
SELECT wasend.wasend_cancel_campaign(1);
RESET ROLE;
SELECT max_send_rate_per_sec, status FROM wasend.whatsapp_numbers;
SELECT count(*) FROM wasend.send_queue;
SELECT count(*) FROM wasend.suppressions;
-- the role calling is the current role: a SECURITY DEFINER function of a
-- role without access here refuses whoever calls it, bob included
SELECT wasend.wasend_grant_access('regress_bob', 'operator');
CREATE FUNCTION public.regress_via_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT wasend.wasend_send(1, '15551290204', '{"type":"text","text":{"body":"d"}}') $$;
ALTER FUNCTION public.regress_via_definer() OWNER TO regress_alice;
SET ROLE regress_bob;
SELECT public.regress_via_definer();
RESET ROLE;
-- nor do the function bodies and their gates answer her directly, whatever
-- her cluster role lets her execute
SET ROLE regress_alice;
SELECT wasend_impl.gate_wasend_send(1, '15551290205', '{"type":"text","text":{"body":"g"}}', 0, 'error');
SELECT wasend_impl.wasend_send(1, '15551290205', '{"type":"text","text":{"body":"g"}}', 0);
SELECT wasend._api_enter('operator');
SELECT wasend._api_consume('viewer');
RESET ROLE;
-- who has access here is not hers to know
SET ROLE regress_alice;
SELECT * FROM wasend.database_access;
SELECT wasend._may('viewer');
RESET ROLE;
SET ROLE regress_bob;
SELECT wasend._may('viewer') AS viewer, wasend._may('operator') AS operator, wasend._may('admin') AS admin;
SELECT wasend._may('owner');
-- even with access, a gate called without its wrapper refuses
SELECT wasend_impl.gate_wasend_send(1, '15551290206', '{"type":"text","text":{"body":"g"}}', 0, 'error');
SELECT wasend._api_enter('operator');
SELECT wasend_impl.gate_wasend_cancel_campaign(1);
RESET ROLE;
SELECT count(*) AS sent_by_them FROM wasend.send_queue WHERE recipient IN ('15551290204', '15551290205', '15551290206');
-- bad grants change nothing
SELECT wasend.wasend_grant_access('regress_alice', 'owner');
SELECT wasend.wasend_grant_access('regress_nobody_here', 'viewer');
SELECT wasend.wasend_grant_access('pg_monitor', 'viewer');
SELECT wasend.wasend_grant_access('wasend_admin', 'viewer');
SELECT wasend.wasend_grant_access(NULL, 'viewer');
SELECT role_name, access FROM wasend.database_access ORDER BY 1;
-- a revoke ends the access at once
\c regress_shop_a
SELECT wasend.wasend_revoke_access('regress_alice');
SELECT wasend.wasend_revoke_access('regress_alice');
SET ROLE regress_alice;
SELECT wasend.wasend_send(1, '15551290105', '{"type":"text","text":{"body":"z"}}');
SELECT count(*) FROM wasend.send_queue;
RESET ROLE;
\c regression
DROP DATABASE regress_shop_a;
DROP DATABASE regress_shop_b;
DROP ROLE regress_dbowner;
DROP ROLE regress_alice;
DROP ROLE regress_bob;
