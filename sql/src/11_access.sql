/*
 * A grant means one database.
 *
 * wasend_viewer, wasend_operator and wasend_admin are roles of the whole
 * cluster: by its membership alone, a member of wasend_operator granted
 * for one database would read the queue and send with the numbers of
 * every other database that has the extension.  So each database keeps
 * its own list, wasend.database_access (role name, access level), and a
 * role reaches wasend in a database only when the list gives it (or a
 * role it is a member of) that level there; superusers always may.
 * src/access.c reads the list and explains the checks.
 *
 * - Every API function checks the role calling it (the current role, as
 *   PostgreSQL's own privileges do: a SECURITY DEFINER function of
 *   another role calls with that role's access) before anything else.
 *   The functions keep their names, signatures, defaults, grants and
 *   settings; each one moves to schema wasend_impl (where its body's
 *   references to its own name still hold), which only the extension's
 *   owner may call.  wasend.<name> becomes a SECURITY INVOKER wrapper that
 *   checks the level the function's grants ask for (viewer, operator or
 *   admin) with wasend._api_enter, which arms a one-shot pass, and calls
 *   wasend_impl.gate_<name>, a SECURITY DEFINER gate that consumes the
 *   pass (wasend._api_consume) and runs the body.  Called directly, a gate
 *   refuses.  Wrappers and gates are made from the catalog, so they match
 *   the functions as the sections above leave them.
 * - Every table a wasend role may read or write has row level security:
 *   reading needs viewer, adding to send_queue operator, any other change
 *   admin, in this database (wasend._may, for the current role).  The two
 *   views read as the caller (security_invoker), so the same rules hold
 *   through them.  The senders, the webhook worker and the API functions
 *   run as the table owner, which row level security does not restrict.
 * - wasend.wasend_grant_access(role, level) (admin) makes the role a
 *   member of the matching cluster role, for the table privileges, and
 *   lists it for this database; wasend.wasend_revoke_access(role) takes it
 *   off the list (the cluster role stays: other databases may list it).
 *   Access follows the role's name, as a dump restores it: a role renamed
 *   loses it.
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

CREATE FUNCTION wasend._may(level text) RETURNS boolean
AS 'MODULE_PATHNAME', 'wasend_access_may'
LANGUAGE C STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._may(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._may(text) TO wasend_viewer;

CREATE FUNCTION wasend._api_enter(level text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_access_enter'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._api_enter(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._api_enter(text) TO wasend_viewer;

CREATE FUNCTION wasend._api_consume(level text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_access_consume'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._api_consume(text) FROM PUBLIC;

CREATE FUNCTION wasend.wasend_grant_access(role_name name, access text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
    DELETE FROM wasend.database_access a WHERE a.role_name OPERATOR(pg_catalog.=) wasend_revoke_access.role_name;
    GET DIAGNOSTICS found = ROW_COUNT;
    RETURN found;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_revoke_access(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_revoke_access(name) TO wasend_admin;

CREATE SCHEMA wasend_impl;
COMMENT ON SCHEMA wasend_impl IS 'the bodies of the API functions, and the gates their wrappers in schema wasend call';
REVOKE ALL ON SCHEMA wasend_impl FROM PUBLIC;
GRANT USAGE ON SCHEMA wasend_impl TO wasend_viewer;

DO $wrap$
DECLARE
    f record;
    level text;
    gate text;
    cfg text;
    wcfg text;
    args text;
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
        gate := 'gate_' OPERATOR(pg_catalog.||) f.proname;
        EXECUTE pg_catalog.format('ALTER FUNCTION wasend.%I(%s) SET SCHEMA wasend_impl', f.proname, f.idargs);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend_impl.%I(%s) FROM PUBLIC, wasend_viewer, wasend_operator, wasend_admin',
                                  f.proname, f.idargs);
        SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ' ORDER BY i)
          INTO args FROM pg_catalog.generate_series(1, f.pronargs) i;
        args := COALESCE(args, '');
        SELECT pg_catalog.string_agg(pg_catalog.format(' SET %I TO %s', pg_catalog.split_part(c, '=', 1),
                                                       pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)), '')
          INTO cfg FROM pg_catalog.unnest(f.proconfig) c;
        cfg := COALESCE(cfg, '');
        -- the wrapper runs as its caller, who may not set a superuser's
        -- settings (log_min_error_statement): it keeps the others; the
        -- gate keeps them all, and a refusal is never logged with its
        -- statement (wasend._api_enter)
        SELECT COALESCE(pg_catalog.string_agg(pg_catalog.format(' SET %I TO %s', pg_catalog.split_part(c, '=', 1),
                                                       pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)), ''), '')
          INTO wcfg FROM pg_catalog.unnest(f.proconfig) c
         WHERE pg_catalog.split_part(c, '=', 1) OPERATOR(pg_catalog.=) 'search_path';

        -- the gate: runs as the owner, only after a wrapper's check
        IF f.proretset THEN
            body := pg_catalog.format('RETURN QUERY SELECT * FROM wasend_impl.%I(%s);', f.proname, args);
        ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
            body := pg_catalog.format('PERFORM wasend_impl.%I(%s);', f.proname, args);
        ELSE
            body := pg_catalog.format('RETURN wasend_impl.%I(%s);', f.proname, args);
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION wasend_impl.%I(%s) RETURNS %s LANGUAGE plpgsql VOLATILE SECURITY DEFINER%s AS %L',
            gate, f.idargs, f.result, cfg,
            pg_catalog.format(E'BEGIN\n    PERFORM wasend._api_consume(%L);\n    %s\nEND', level, body));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION wasend_impl.%I(%s) IS %L', gate, f.idargs,
                                  pg_catalog.format('runs wasend_impl.%I for wasend.%I, which checked %s access', f.proname, f.proname, level));
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend_impl.%I(%s) FROM PUBLIC', gate, f.idargs);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION wasend_impl.%I(%s) TO %I', gate, f.idargs, 'wasend_' OPERATOR(pg_catalog.||) level);

        -- the wrapper: checks the role calling it
        IF f.proretset THEN
            body := pg_catalog.format('RETURN QUERY SELECT * FROM wasend_impl.%I(%s);', gate, args);
        ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
            body := pg_catalog.format('PERFORM wasend_impl.%I(%s);', gate, args);
        ELSE
            body := pg_catalog.format('RETURN wasend_impl.%I(%s);', gate, args);
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION wasend.%I(%s) RETURNS %s LANGUAGE plpgsql VOLATILE SECURITY INVOKER%s AS %L',
            f.proname, f.args, f.result, wcfg,
            pg_catalog.format(E'BEGIN\n    PERFORM wasend._api_enter(%L);\n    %s\nEND', level, body));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION wasend.%I(%s) IS %L', f.proname, f.idargs,
                                  pg_catalog.format('checks %s access in this database, then runs wasend_impl.%I', level, f.proname));
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend.%I(%s) FROM PUBLIC', f.proname, f.idargs);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION wasend.%I(%s) TO %I', f.proname, f.idargs, 'wasend_' OPERATOR(pg_catalog.||) level);
    END LOOP;
END
$wrap$;

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
                                  ' USING ((SELECT wasend._may(''viewer'')))', t);
        EXECUTE pg_catalog.format('CREATE POLICY wasend_admin_write ON wasend.%I FOR ALL'
                                  ' USING ((SELECT wasend._may(''admin'')))'
                                  ' WITH CHECK ((SELECT wasend._may(''admin'')))', t);
    END LOOP;
END
$rls$;
CREATE POLICY wasend_operator_insert ON wasend.send_queue FOR INSERT
    WITH CHECK ((SELECT wasend._may('operator')));

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
