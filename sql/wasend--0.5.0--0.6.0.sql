/*
 * wasend--0.5.0--0.6.0.sql — 0.6.0: the API in schema wasend.
 *
 * As before, there is no wasend--0.6.0.sql: CREATE EXTENSION wasend
 * installs 0.2.0 and runs the update scripts (test/t/020_upgrade.pl
 * compares a fresh install with an updated one).  The security rules of
 * wasend--0.2.0.sql hold here too.
 *
 * The functions a user calls lived in the extension's schema, public by
 * default.  Since PostgreSQL 15 public belongs to the database's owner,
 * who can create functions in it, and a call by name goes through the
 * caller's search_path ("$user" first, a schema anyone with CREATE on the
 * database can make).  A database owner who is not a superuser could thus
 * plant a same-signature function that a superuser's unqualified call
 * reached, and read the token it was given or run anything as that
 * superuser.  Schema wasend belongs to the superuser that created the
 * extension and nobody else can create in it, so wasend.wasend_add_number()
 * reaches only wasend's own function.  Each function keeps its oid, its
 * grants and its pinned search_path.
 */

\echo Use "ALTER EXTENSION wasend UPDATE TO '0.6.0'" to load this file. \quit

ALTER FUNCTION @extschema@.wasend_add_number(text, text, integer, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_update_number(bigint, text, integer, text, integer, boolean) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_pause_number(bigint, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_resume_number(bigint, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval, integer, time, time, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval, integer, time, time, text, boolean) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_enqueue(bigint, text[], jsonb[]) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_start_campaign(bigint, timestamptz) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_pause_campaign(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_resume_campaign(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_cancel_campaign(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_retry_failed(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_ingest_webhook(text, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_send(bigint, text, jsonb, integer) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_send_status(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_wait(bigint, interval) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_dry_run(bigint) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_test_send(bigint, text) SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_enable_sending() SET SCHEMA wasend;
ALTER FUNCTION @extschema@.wasend_worker_stats() SET SCHEMA wasend;

/*
 * A grant means one database.
 *
 * wasend_viewer, wasend_operator and wasend_admin are roles of the whole
 * cluster: a member of wasend_operator granted for one database could read
 * the queue and send with the numbers of every other database that has
 * the extension.  Since 0.6.0 each database keeps its own list,
 * wasend.database_access (role name, access level), and a role reaches
 * wasend in a database only when the list gives it (or a role it is a
 * member of) that level there; superusers always may.
 *
 * - Every API function checks the session's role (wasend._session_role:
 *   the role SET ROLE chose, which a SECURITY DEFINER function does not
 *   change) before anything else.  The functions keep their names,
 *   signatures, defaults, grants and settings: each one moves to schema
 *   wasend_impl (where its body's references to its own name still hold),
 *   which only the extension's owner may use, and wasend.<name> becomes
 *   a SECURITY DEFINER wrapper that checks the level the function's grants
 *   ask for (viewer, operator or admin) and calls it.
 *   The wrappers are made from the catalog, so they match the functions as
 *   the scripts before this one left them.
 * - Every table a wasend role may read or write has row level security:
 *   reading needs viewer, adding to send_queue operator, any other change
 *   admin, in this database.  The two views read as the caller
 *   (security_invoker), so the same rules hold through them.  The senders,
 *   the webhook worker and the API functions run as the table owner,
 *   which row level security does not restrict.
 * - wasend.wasend_grant_access(role, level) (admin) makes the role a
 *   member of the matching cluster role, for the table privileges, and
 *   lists it for this database; wasend.wasend_revoke_access(role) takes it
 *   off the list (the cluster role stays: other databases may list it).
 *
 * An updated database lists nobody: roles granted wasend roles before
 * 0.6.0 have no access in it until an admin or superuser grants it (the
 * update says which roles those are).
 */

CREATE TABLE wasend.database_access (
    role_name   name PRIMARY KEY,
    access      text NOT NULL CHECK (access IN ('viewer', 'operator', 'admin')),
    granted_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wasend.database_access IS
    'roles that may use wasend in this database, and at which level (wasend_grant_access)';
SELECT pg_catalog.pg_extension_config_dump('wasend.database_access', '');
REVOKE ALL ON wasend.database_access FROM PUBLIC;
GRANT SELECT ON wasend.database_access TO wasend_viewer;

CREATE FUNCTION wasend._session_role() RETURNS oid
AS 'MODULE_PATHNAME', 'wasend_session_role'
LANGUAGE C STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._session_role() FROM PUBLIC;

/* may role r use wasend at this level in this database? */
CREATE FUNCTION wasend._has_access(level text, r oid) RETURNS boolean
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE oid OPERATOR(pg_catalog.=) r AND rolsuper)
        OR EXISTS (
            SELECT 1
              FROM wasend.database_access a
              JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) a.role_name
             WHERE pg_catalog.array_position(ARRAY['viewer', 'operator', 'admin'], a.access)
                   OPERATOR(pg_catalog.>=) pg_catalog.array_position(ARRAY['viewer', 'operator', 'admin'], level)
               AND pg_catalog.pg_has_role(r, g.oid, 'USAGE'))
$$;
REVOKE ALL ON FUNCTION wasend._has_access(text, oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._has_access(text, oid) TO wasend_viewer;

/* the check at the top of every API function */
CREATE FUNCTION wasend._require_access(level text) RETURNS void
LANGUAGE plpgsql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r oid := wasend._session_role();
BEGIN
    IF NOT wasend._has_access(level, r) THEN
        RAISE EXCEPTION 'permission denied: role % has no wasend % access in database %',
                        pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r)), level,
                        pg_catalog.quote_ident(pg_catalog.current_database())
              USING ERRCODE = 'insufficient_privilege',
                    HINT = pg_catalog.format('A wasend admin of this database grants it with SELECT wasend.wasend_grant_access(%L, %L);',
                                             pg_catalog.pg_get_userbyid(r), level);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._require_access(text) FROM PUBLIC;

CREATE SCHEMA wasend_impl;
COMMENT ON SCHEMA wasend_impl IS 'the bodies of the API functions, which only the wrappers in schema wasend call';
REVOKE ALL ON SCHEMA wasend_impl FROM PUBLIC;

DO $wrap$
DECLARE
    f record;
    level text;
    impl text;
    cfg text;
    call text;
    body text;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, p.proretset, p.prorettype, p.proconfig, p.pronargs,
               pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_identity_arguments(p.oid) AS idargs,
               pg_catalog.pg_get_function_result(p.oid) AS result
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'wasend'::regnamespace
           AND p.proname OPERATOR(pg_catalog.~) '^wasend_'
         ORDER BY p.proname
    LOOP
        level := CASE
            WHEN pg_catalog.has_function_privilege('wasend_viewer', f.oid, 'EXECUTE') THEN 'viewer'
            WHEN pg_catalog.has_function_privilege('wasend_operator', f.oid, 'EXECUTE') THEN 'operator'
            ELSE 'admin' END;
        impl := f.proname;
        EXECUTE pg_catalog.format('ALTER FUNCTION wasend.%I(%s) SET SCHEMA wasend_impl', f.proname, f.idargs);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend_impl.%I(%s) FROM PUBLIC, wasend_viewer, wasend_operator, wasend_admin',
                                  impl, f.idargs);
        SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ' ORDER BY i)
          INTO call FROM pg_catalog.generate_series(1, f.pronargs) i;
        call := pg_catalog.format('wasend_impl.%I(%s)', impl, COALESCE(call, ''));
        IF f.proretset THEN
            body := 'RETURN QUERY SELECT * FROM ' OPERATOR(pg_catalog.||) call OPERATOR(pg_catalog.||) ';';
        ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
            body := 'PERFORM ' OPERATOR(pg_catalog.||) call OPERATOR(pg_catalog.||) ';';
        ELSE
            body := 'RETURN ' OPERATOR(pg_catalog.||) call OPERATOR(pg_catalog.||) ';';
        END IF;
        SELECT pg_catalog.string_agg(pg_catalog.format(' SET %I TO %s', pg_catalog.split_part(c, '=', 1),
                                                       pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)), '')
          INTO cfg FROM pg_catalog.unnest(f.proconfig) c;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION wasend.%I(%s) RETURNS %s LANGUAGE plpgsql VOLATILE SECURITY DEFINER%s AS %L',
            f.proname, f.args, f.result, COALESCE(cfg, ''),
            pg_catalog.format(E'BEGIN\n    PERFORM wasend._require_access(%L);\n    %s\nEND', level, body));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION wasend.%I(%s) IS %L', f.proname, f.idargs,
                                  pg_catalog.format('checks %s access in this database, then runs wasend_impl.%I', level, impl));
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend.%I(%s) FROM PUBLIC', f.proname, f.idargs);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION wasend.%I(%s) TO %I', f.proname, f.idargs, 'wasend_' OPERATOR(pg_catalog.||) level);
    END LOOP;
END
$wrap$;

CREATE FUNCTION wasend.wasend_grant_access(role_name name, access text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wasend._require_access('admin');
    IF role_name IS NULL OR access IS NULL THEN
        RAISE EXCEPTION 'role and access level must not be NULL'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Give a role name and one of viewer, operator, admin.';
    END IF;
    IF access NOT IN ('viewer', 'operator', 'admin') THEN
        RAISE EXCEPTION 'unknown wasend access level "%"', access
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'The levels are viewer, operator and admin.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name)
       OR role_name OPERATOR(pg_catalog.~) '^(pg_|wasend_(viewer|operator|admin)$)' THEN
        RAISE EXCEPTION 'role "%" cannot be given wasend access', role_name
              USING ERRCODE = 'undefined_object',
                    HINT = 'Give an existing login or group role of yours (not PUBLIC, a pg_ role or a wasend role).';
    END IF;
    EXECUTE pg_catalog.format('GRANT %I TO %I', 'wasend_' OPERATOR(pg_catalog.||) access, role_name);
    INSERT INTO wasend.database_access AS a (role_name, access) VALUES (role_name, access)
        ON CONFLICT ON CONSTRAINT database_access_pkey
        DO UPDATE SET access = excluded.access, granted_at = pg_catalog.now();
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_grant_access(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_grant_access(name, text) TO wasend_admin;

CREATE FUNCTION wasend.wasend_revoke_access(role_name name) RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    PERFORM wasend._require_access('admin');
    DELETE FROM wasend.database_access a WHERE a.role_name OPERATOR(pg_catalog.=) wasend_revoke_access.role_name;
    GET DIAGNOSTICS found = ROW_COUNT;
    RETURN found;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_revoke_access(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_revoke_access(name) TO wasend_admin;

DO $rls$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wasend'::regnamespace AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND (pg_catalog.has_table_privilege('wasend_viewer', c.oid, 'SELECT')
                OR pg_catalog.has_any_column_privilege('wasend_viewer', c.oid, 'SELECT')
                OR pg_catalog.has_table_privilege('wasend_admin', c.oid, 'INSERT, UPDATE, DELETE')
                OR pg_catalog.has_any_column_privilege('wasend_admin', c.oid, 'INSERT, UPDATE'))
         ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE wasend.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('CREATE POLICY wasend_viewer_read ON wasend.%I FOR SELECT'
                                  ' USING ((SELECT wasend._has_access(''viewer'', r.oid) FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))', t);
        EXECUTE pg_catalog.format('CREATE POLICY wasend_admin_write ON wasend.%I FOR ALL'
                                  ' USING ((SELECT wasend._has_access(''admin'', r.oid) FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))'
                                  ' WITH CHECK ((SELECT wasend._has_access(''admin'', r.oid) FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))', t);
    END LOOP;
END
$rls$;
CREATE POLICY wasend_operator_insert ON wasend.send_queue FOR INSERT
    WITH CHECK ((SELECT wasend._has_access('operator', r.oid) FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));

ALTER VIEW wasend.campaign_progress SET (security_invoker = true);
ALTER VIEW wasend.campaign_report SET (security_invoker = true);

DO $tell$
DECLARE
    members text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(m.rolname), ', ')
      INTO members
      FROM pg_catalog.pg_auth_members am
      JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) am.roleid
      JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) am.member
     WHERE g.rolname IN ('wasend_viewer', 'wasend_operator', 'wasend_admin')
       AND m.rolname NOT IN ('wasend_viewer', 'wasend_operator', 'wasend_admin');
    IF members IS NOT NULL THEN
        RAISE NOTICE 'wasend roles now need a grant in each database: % have no access in database % yet',
                     members, pg_catalog.quote_ident(pg_catalog.current_database())
              USING HINT = 'Run SELECT wasend.wasend_grant_access(''role'', ''operator''); (or viewer, admin) in this database for each role that should keep its access.';
    END IF;
END
$tell$;

/* end of the section "A grant means one database": keep it the last of this file, so that it wraps the API functions as every section above leaves them */
