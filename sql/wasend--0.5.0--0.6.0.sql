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
 * Access tokens from files, never in query text.
 *
 * A token given to wasend_add_number() stayed in pg_stat_activity.query
 * of the calling session until its next statement, where every member of
 * pg_monitor reads it (a psql variable is expanded into the text too).
 * Since 0.6.0 a number's access_token may be NULL: its token is then the
 * one line of the file <wasend.token_directory>/<database>/<phone_number_id>,
 * which the senders, the limits reads and wasend_test_send read themselves
 * (src/secrets.c), again whenever the file changes.  Only a superuser
 * names the directory (a PGC_SIGHUP setting, like wasend.app_secret_file);
 * the file must be owned by the server's user and give others no access,
 * or it is refused by path, and a running number whose file is refused is
 * paused with the reason.  The rest of the path is the database's name
 * (so that a database cannot use another's tokens: the setting is the
 * server's) and the digits of the number's id, so an administrator who is
 * not a superuser can make the server read no other file.
 *
 * wasend_add_number() takes access_token DEFAULT NULL and, without one,
 * checks the file (wasend._check_token_file: an ERROR with a hint, naming
 * the file, never its content); so does wasend_resume_number() for a
 * number without a token in its row.
 */
ALTER TABLE wasend.whatsapp_numbers ALTER COLUMN access_token DROP NOT NULL;
COMMENT ON COLUMN wasend.whatsapp_numbers.access_token IS
'the number''s access token; NULL: the file <wasend.token_directory>/<database>/<phone_number_id>';

-- Numbers are validated by a trigger, not by CHECK alone: a constraint
-- violation's DETAIL shows the whole row, token included (see 0.2.0).
-- Since 0.6.0 access_token may be NULL.
CREATE OR REPLACE FUNCTION wasend._number_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.phone_number_id IS NULL THEN
        RAISE EXCEPTION 'phone_number_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use the numeric Phone number ID from the WhatsApp Manager (API Setup).';
    END IF;
    IF NEW.phone_number_id !~ '^[0-9]{1,32}$' THEN
        RAISE EXCEPTION 'invalid phone_number_id "%"', NEW.phone_number_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the numeric Phone number ID from the WhatsApp Manager (API Setup), not the phone number itself.';
    END IF;
    -- a NULL token is the number's token file (wasend.token_directory)
    IF NEW.access_token !~ '^\S+$' OR length(NEW.access_token) > 4096 THEN
        RAISE EXCEPTION 'invalid access token'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the system user access token, without "Bearer " or spaces.';
    END IF;
    IF NEW.max_send_rate_per_sec IS NULL OR NEW.max_send_rate_per_sec NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_send_rate_per_sec must be between 1 and 1000, not %',
                        coalesce(NEW.max_send_rate_per_sec::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Meta allows 80 messages per second per number by default and up to 1000 after an upgrade.';
    END IF;
    IF NEW.status IS NULL OR NEW.status NOT IN ('active', 'paused') THEN
        RAISE EXCEPTION 'number status must be active or paused, not %', coalesce(NEW.status, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use wasend_pause_number() and wasend_resume_number().';
    END IF;
    IF NEW.business_id IS NOT NULL AND NEW.business_id !~ '^[0-9]{1,32}$' THEN
        RAISE EXCEPTION 'invalid business_id "%"', NEW.business_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the numeric id of the business portfolio (Business Settings, Business info), or NULL.';
    END IF;
    IF NEW.messaging_limit_override < 0 OR NEW.messaging_limit < 0 THEN
        RAISE EXCEPTION 'messaging_limit must not be negative, not %',
                        coalesce(NEW.messaging_limit_override, NEW.messaging_limit)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number of unique recipients the portfolio may reach in 24 h (e.g. 250, 2000), or reset_messaging_limit => true to follow Meta''s tier.';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.phone_number_id IS DISTINCT FROM OLD.phone_number_id THEN
        IF EXISTS (SELECT 1 FROM wasend.whatsapp_numbers n
                    WHERE n.phone_number_id = NEW.phone_number_id AND n.id IS DISTINCT FROM NEW.id) THEN
            RAISE EXCEPTION 'phone number id % is already registered', NEW.phone_number_id
                USING ERRCODE = 'unique_violation',
                      HINT = 'Use wasend_update_number() to change its token or rate.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- An ERROR, with a hint, if the number could not take its token from its
-- file now (src/sql_api.c); never returns or shows the token.
CREATE FUNCTION wasend._check_token_file(phone_number_id text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_check_token_file'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._check_token_file(text) FROM PUBLIC;

-- A NULL access_token is the number's token file: _http_post reads it.
ALTER FUNCTION wasend._http_post(text, text, integer, text) CALLED ON NULL INPUT;

-- Register a number (wasend_admin); business_id is its portfolio.
-- Without access_token the number's token is its file, which must be
-- usable now.  A token given here shows in pg_stat_activity: an error
-- raised inside must at least not log the calling statement
-- (log_min_error_statement = panic).
CREATE OR REPLACE FUNCTION wasend.wasend_add_number(phone_number_id text, access_token text DEFAULT NULL,
                                                    max_send_rate_per_sec integer DEFAULT 80,
                                                    business_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    new_id bigint;
BEGIN
    -- validated by wasend._number_check, whose errors never show the token
    INSERT INTO wasend.whatsapp_numbers (phone_number_id, access_token, max_send_rate_per_sec,
                                         business_id)
    VALUES (phone_number_id, access_token, max_send_rate_per_sec, business_id)
    RETURNING id INTO new_id;
    IF access_token IS NULL THEN
        PERFORM wasend._check_token_file(phone_number_id);
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN new_id;
END
$$;

-- Resume a paused number, optionally with a new token (wasend_admin).  A
-- number without a token in its row resumes only if its file is usable.
CREATE OR REPLACE FUNCTION wasend.wasend_resume_number(number_id bigint, access_token text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    n record;
BEGIN
    n := wasend._number_for_update(number_id);
    IF n.status = 'active' AND access_token IS NULL THEN
        RAISE NOTICE 'number % is already active', n.phone_number_id;
        RETURN;
    END IF;
    IF wasend_resume_number.access_token IS NULL
       AND (SELECT w.access_token IS NULL FROM wasend.whatsapp_numbers w WHERE w.id = number_id) THEN
        PERFORM wasend._check_token_file(n.phone_number_id);
    END IF;
    UPDATE wasend.whatsapp_numbers w
       SET status = 'active', pause_reason = NULL, paused_until = NULL, pause_rule = NULL,
           updated_at = now(),
           access_token = coalesce(wasend_resume_number.access_token, w.access_token)
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
