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
    OUT added_p50_ms double precision, OUT added_p99_ms double precision,
    OUT awaiting_durable integer, OUT awaiting_durable_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend.wasend_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_worker_stats() TO wasend_viewer;

-- Why no sender of this database sends (src/sql_api.c): wasend not
-- preloaded, this database not in wasend.databases, an extension version
-- the library does not run, wasend.workers = 0, or no slot for the
-- database's supervisor or senders (max_worker_processes) while none of
-- them runs; with a hint, and whether wasend._wake_at_commit() warns about
-- it itself.  All NULL when nothing at this level stops them.  It reads
-- settings, one catalog row and shared memory: cheap enough for a view
-- watched every second.
CREATE FUNCTION wasend._senders_blocked(OUT reason text, OUT hint text, OUT said_at_wake boolean)
AS 'MODULE_PATHNAME', 'wasend_senders_blocked'
LANGUAGE C STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._senders_blocked() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._senders_blocked() TO wasend_viewer;

-- Why a campaign's messages do not move (or would not, for a draft), as a
-- reason for a person and a hint; all NULL when nothing stops them, and
-- for a completed or cancelled campaign.  The first of: the campaign is
-- paused; the database's senders send nothing (_senders_blocked); the
-- database is a copy that may not send (database_identity); its number is
-- paused; its send window, in a fixed zone, is closed.  campaign_progress,
-- wasend_start_campaign, wasend_dry_run and wasend_wait say it.  Reads as
-- its caller, so row level security holds.
CREATE FUNCTION wasend._stalled_reason(campaign_id bigint,
                                       OUT reason text, OUT hint text, OUT said_at_wake boolean)
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    b record;
    opens timestamptz;
BEGIN
    said_at_wake := false;
    SELECT x.status, x.pause_reason, x.kind, x.send_window_start, x.send_window_end, x.send_timezone,
           n.id AS nid, n.phone_number_id, n.status AS number_status, n.pause_reason AS number_reason
      INTO c
      FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = _stalled_reason.campaign_id;
    IF NOT FOUND OR c.status IN ('completed', 'cancelled') THEN
        RETURN;
    END IF;
    IF c.status = 'paused' THEN
        reason := 'campaign is paused' || coalesce(': ' || c.pause_reason, '');
        hint := format('wasend.wasend_resume_campaign(%s) sends it again.', campaign_id);
        RETURN;
    END IF;
    SELECT * INTO b FROM wasend._senders_blocked();
    IF b.reason IS NOT NULL THEN
        reason := b.reason;
        hint := b.hint;
        said_at_wake := b.said_at_wake;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wasend.database_identity i
                    WHERE i.dboid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())) THEN
        reason := 'this database is a copy of the database the extension was created in';
        hint := 'If this database is meant to send (its queue is its own), run SELECT wasend.wasend_enable_sending() in it as a wasend_admin.';
        RETURN;
    END IF;
    IF c.number_status <> 'active' THEN
        reason := format('number %s is paused: %s', c.phone_number_id, coalesce(c.number_reason, 'no reason given'));
        hint := format('It sends once the number is active again: wasend.wasend_resume_number(%s).', c.nid);
        RETURN;
    END IF;
    -- a window in a fixed zone holds back the whole campaign (src/queue.sql)
    IF c.send_timezone <> 'recipient' AND c.kind = 'campaign' AND wasend._is_zone_name(c.send_timezone) THEN
        opens := wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone);
        IF opens IS NOT NULL THEN
            reason := format('outside the send window until %s', opens);
            hint := 'It sends once its send window opens; wasend.wasend_update_campaign() changes the window.';
        END IF;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._stalled_reason(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._stalled_reason(bigint) TO wasend_viewer;

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
