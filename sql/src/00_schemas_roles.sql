/*
 * Schemas and roles.
 *
 * The extension's objects live in schema wasend: its tables, the views,
 * the internal functions (wasend._x) and the API (wasend.wasend_x).  The
 * bodies of the API functions live in schema wasend_impl (see the access
 * control section, the last one).
 *
 * Security rules every function here follows (regression test: hardening):
 *
 *	- Each function says, where it is defined, whether it runs as its owner
 *	  (SECURITY DEFINER: the API the wasend roles may call, and the two
 *	  send_queue trigger functions, which need the owner's rights for an
 *	  operator's plain INSERT) or as its caller (SECURITY INVOKER:
 *	  everything else, including the internal helpers, which only the
 *	  owner and the workers call).
 *	- Each function pins SET search_path = pg_catalog, pg_temp.  pg_temp is
 *	  listed last, so a caller's temp table can never shadow a name, and
 *	  PostgreSQL never looks up functions or operators in pg_temp unless
 *	  they are written pg_temp.x; public, where anybody could plant a better
 *	  matching function or operator in a database created before
 *	  PostgreSQL 15, is not in the path at all.  The one exception is
 *	  wasend._redact, which must stay inlinable; it names pg_catalog in its
 *	  body instead (see there).
 *	- No function creates or uses a temporary table, or anything else a
 *	  caller could have created first.
 *	- Every wasend object is named with its schema.
 *	- Expressions bound while this script runs (generated columns, column
 *	  defaults, the views) name their operators and casts in pg_catalog,
 *	  or type their operands exactly: the script's search_path has the
 *	  extension's schema first, where someone could have planted a better
 *	  matching operator (test/t/020_upgrade.pl plants some).
 *	- No role may create triggers on, truncate or reference wasend's
 *	  tables: a trigger would run inside the senders and these functions.
 */

\echo Use "CREATE EXTENSION wasend" to load this file. \quit

CREATE SCHEMA wasend;
COMMENT ON SCHEMA wasend IS 'wasend: WhatsApp Cloud API campaigns sent from PostgreSQL';

-- ---------------------------------------------------------------------
-- Roles (cluster-wide: made by the first CREATE EXTENSION, kept by DROP
-- EXTENSION)
--
-- wasend_admin     everything: numbers and their tokens, policies, campaigns
-- wasend_operator  runs campaigns: create, enqueue (or INSERT rows), start,
--                  pause, resume, cancel, retry; sees numbers without tokens
-- wasend_viewer    watches: progress, campaigns, rows, worker statistics
--
-- The API functions run as the extension owner, so the roles need little
-- direct access to the tables; what they get is granted with each table
-- and function below.  wasend_viewer reads every table but the tokens;
-- wasend_operator adds recipients (send_queue: campaign_id, recipient,
-- payload and timezone only, so that nobody can queue a row as already
-- sent, claimed by a sender, or under an id of its choosing);
-- wasend_admin also edits numbers (tokens included), campaigns, the error
-- policy and suppressions, and deletes old rows.  Nobody but wasend_admin
-- (and superusers) can read access_token.  No role gets TRIGGER, TRUNCATE
-- or REFERENCES, nor anything on the sequences (an identity column needs
-- none).  A role reaches wasend only in the databases whose access list
-- names it (the access control section, the last one).
-- ---------------------------------------------------------------------

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['wasend_admin', 'wasend_operator', 'wasend_viewer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
GRANT wasend_viewer TO wasend_operator;
GRANT wasend_operator TO wasend_admin;
GRANT USAGE ON SCHEMA wasend TO wasend_viewer;
