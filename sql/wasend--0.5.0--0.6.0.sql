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

-- ---------------------------------------------------------------------
-- wasend_test_send: refused in a copy, and it spends the messaging limit
-- ---------------------------------------------------------------------
-- A test send went out from a copy of the database (CREATE DATABASE ...
-- TEMPLATE, which holds production's tokens), whose senders send nothing
-- until wasend_enable_sending(); and past the portfolio's messaging
-- limit, even a limit of 0.  Now it is an ERROR with a hint in a copy, and
-- a test send spends the limit as a send does: under the portfolio's row
-- lock (the lock the senders' claims take), a recipient that costs a slot
-- (not in wasend.recipient_window, no inbound message in 24 h) takes one,
-- and with none left it is an ERROR with a hint.  The slot is written in
-- the caller's transaction, before the request.
CREATE OR REPLACE FUNCTION wasend.wasend_test_send(campaign_id bigint, recipient text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n record;
    r text;
    body jsonb;
    res record;
    answer jsonb;
    k text;
    lim integer;
    used bigint;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    -- a copy of the database (CREATE DATABASE ... TEMPLATE) holds the same
    -- tokens and recipients: it sends nothing, test sends included
    IF NOT EXISTS (SELECT 1 FROM wasend.database_identity i
                    WHERE i.dboid = (SELECT d.oid FROM pg_database d
                                      WHERE d.datname = current_database())) THEN
        RAISE EXCEPTION 'wasend sends nothing from database "%": it is a copy of the database the extension was created in', current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'If this database is meant to send (its queue is its own), run SELECT wasend.wasend_enable_sending() in it as a wasend_admin.';
    END IF;
    SELECT * INTO c FROM wasend.campaigns x WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    r := wasend._normalize_recipient(recipient);
    IF wasend._recipient_zone(r) IS NULL THEN
        RAISE EXCEPTION 'invalid recipient "%": no known country calling code', r
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number in international format with its country code, e.g. 4915112345678 or 15551234567.';
    END IF;
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = r AND (s.scope = 'all' OR c.category = 'marketing')) THEN
        RAISE EXCEPTION 'recipient "%" is suppressed', r
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'See wasend.suppressions; test with a number of your own.';
    END IF;
    SELECT * INTO n FROM wasend.whatsapp_numbers x WHERE x.id = c.number_id;
    IF n.status <> 'active' THEN
        RAISE EXCEPTION 'number % is paused: %', n.phone_number_id, coalesce(n.pause_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Resume it with wasend_resume_number() first.';
    END IF;
    body := coalesce((SELECT q.payload FROM wasend.send_queue q
                       WHERE q.campaign_id = c.id AND q.recipient = r ORDER BY q.id LIMIT 1),
                     c.message)
            || jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
                                  'to', r, 'biz_opaque_callback_data', 'wasend:test:' || c.id::text);
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'a standby sends nothing'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Run the test send on the primary.';
    END IF;
    -- the messaging limit: counted under the portfolio's row lock, as the
    -- senders' claims count it (claim_lock in src/queue.sql), so that a
    -- test send and a claim never spend the same slot
    k := coalesce(n.business_id, 'number:' || n.id::text);
    SELECT p.messaging_limit INTO lim FROM wasend.portfolios p WHERE p.portfolio = k FOR UPDATE;
    IF lim IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM wasend.inbound_messages i
                         JOIN wasend.whatsapp_numbers n2 ON n2.phone_number_id = i.phone_number_id
                        WHERE i.from_number = r
                          AND i.received_at > now() - interval '24 hours'
                          AND coalesce(n2.business_id, 'number:' || n2.id::text) = k) THEN
        IF NOT EXISTS (SELECT 1 FROM wasend.recipient_window w
                        WHERE w.portfolio = k AND w.recipient = r
                          AND w.last_at > now() - interval '24 hours') THEN
            SELECT count(*) INTO used FROM wasend.recipient_window w
             WHERE w.portfolio = k AND w.last_at > now() - interval '24 hours';
            IF used >= lim THEN
                RAISE EXCEPTION 'the messaging limit of number % is spent: % of % recipients in 24 hours', n.phone_number_id, used, lim
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = 'A test send to a new recipient takes a slot of the messaging limit, as a send does. Test with a recipient messaged in the last 24 hours (see wasend.recipient_window), or wait until a slot frees.';
            END IF;
        END IF;
        -- (the constraint by name: "recipient" is this function's parameter)
        INSERT INTO wasend.recipient_window AS w (portfolio, recipient, last_at)
        VALUES (k, r, now())
        ON CONFLICT ON CONSTRAINT recipient_window_pkey DO UPDATE SET last_at = excluded.last_at;
    END IF;
    res := wasend._http_post(n.phone_number_id, n.access_token, n.max_send_rate_per_sec, body::text);
    -- Meta's text may quote the token: never hand it to the caller or the log
    IF length(n.access_token) >= 8 THEN
        res.answer := replace(res.answer, n.access_token, '[redacted token]');
    END IF;
    res.answer := wasend._redact(res.answer);
    BEGIN
        answer := res.answer::jsonb;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'the Graph API answered HTTP % with a body that is not JSON', res.http_status
            USING ERRCODE = 'invalid_text_representation',
                  DETAIL = left(res.answer, 200),
                  HINT = 'Check wasend.api_base_url.';
    END;
    IF res.http_status <> 200 THEN
        RAISE WARNING 'test send of campaign % to % failed: HTTP %, %', c.id, r, res.http_status,
                      coalesce(answer #>> '{error,message}', 'no error message')
            USING HINT = 'The answer is returned; see README "How it behaves on errors" for what each code means.';
    END IF;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_test_send(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_test_send(bigint, text) TO wasend_operator;
