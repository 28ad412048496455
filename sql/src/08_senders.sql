-- ---------------------------------------------------------------------
-- Senders in this database
-- ---------------------------------------------------------------------

-- The database the extension was created in, as the senders know it: a
-- copy (CREATE DATABASE ... TEMPLATE) has another oid, and its supervisor
-- starts no sender until an admin says so with wasend_enable_sending(), so
-- that a staging copy never messages production's recipients a second
-- time.  Not dumped: a restore creates the extension anew, and sends.
CREATE TABLE wasend.database_identity (
    one         boolean PRIMARY KEY DEFAULT true CONSTRAINT database_identity_one CHECK (one),
    dboid       oid NOT NULL,
    enabled_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO wasend.database_identity (dboid)
SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
COMMENT ON TABLE wasend.database_identity IS
'the database whose senders may send: a copy of it starts none until wasend_enable_sending()';
REVOKE ALL ON wasend.database_identity FROM PUBLIC;
GRANT SELECT ON wasend.database_identity TO wasend_viewer;

-- Let this database send although it is a copy of another (admin): its
-- queue is its own now.  Returns whether anything changed.
CREATE FUNCTION wasend.wasend_enable_sending() RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mine oid := (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
BEGIN
    IF EXISTS (SELECT 1 FROM wasend.database_identity i WHERE i.dboid = mine) THEN
        RETURN false;
    END IF;
    UPDATE wasend.database_identity SET dboid = mine, enabled_at = now();
    PERFORM wasend._wake_at_commit();
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_enable_sending() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_enable_sending() TO wasend_admin;

CREATE FUNCTION wasend.wasend_worker_stats(
    OUT sender integer, OUT pid integer, OUT in_flight integer, OUT held integer,
    OUT sent bigint, OUT failed bigint,
    OUT connections_opened bigint, OUT connections_reused bigint,
    OUT mean_latency_ms double precision,
    OUT hold_target integer,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT added_p50_ms double precision, OUT added_p99_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend.wasend_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_worker_stats() TO wasend_viewer;

-- Once the CREATE EXTENSION (or update) that runs this script commits, the
-- launcher looks at this database again and starts its senders (see
-- src/launcher.c): every database that has the extension has senders.
CREATE FUNCTION wasend._extension_created() RETURNS void
AS 'MODULE_PATHNAME', 'wasend_announce_extension'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._extension_created() FROM PUBLIC;
SELECT wasend._extension_created();
