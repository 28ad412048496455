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
 * Status webhooks: one status at a time, and waiting statuses found by
 * their wamid.
 *
 * A status or inbound message of a signed payload was cast as it came: a
 * timestamp of "9224318012399" (year 294,275) became a row's sent_at, and
 * every claim of a frequency-capped campaign to that recipient failed
 * for ever (the wait until the oldest message leaves the window
 * overflowed); "Infinity" set next_attempt_at to infinity; "NaN", words
 * or an 11-digit errors[0].code failed the whole payload (its other
 * statuses were lost, the endpoint answered 500 and Meta retried for
 * days).  Now every timestamp goes through wasend._webhook_time: a number
 * (or a string of digits) clamped to the last 30 days (Meta retries a
 * notification for 7 days; nothing real is older, nor from the future),
 * NULL for anything else.  A status without a usable time, or with a
 * wamid longer than 512 characters, is refused on its own (counted in
 * statuses_refused); an inbound message keeps sent_at NULL; an error code
 * that is not a plain integer of at most 9 digits is no code, as the
 * senders treat error.code.  Should a status still fail on its data, the
 * payload's statuses are applied one by one, and only that one is
 * refused (with a WARNING); an account change that fails on its data is
 * skipped the same way.
 *
 * Statuses of wamids wasend did not (yet) record wait in
 * pending_statuses for 7 days.  Every sender refresh and every payload
 * joined all of them with send_queue: at 600,000 rows two idle senders
 * used 4.7 s of CPU per 20 s and a payload took 0.7 s.  Now a waiting
 * status is found from the wamids just recorded: the senders look up the
 * wamids of each batch they record (wasend._apply_pending_statuses(text[]))
 * and a payload looks up its own wamids in send_queue, as before.  The one
 * case neither sees is a status whose transaction commits after the
 * record looked and had looked before the record committed; the senders'
 * refresh (wasend._apply_pending_statuses()) checks such statuses, the
 * unsettled ones (an index holds only them), against send_queue, until
 * every transaction that was running when the status was first seen
 * committed has ended (checked_xmax): from then on, a record that was
 * running has committed and is visible, and any later record finds the
 * status itself, so the status is settled and no longer checked.  The
 * expiry has an index and deletes at most 1,000 rows a refresh.
 */

ALTER TABLE wasend.pending_statuses
    ADD COLUMN checked_xmax xid8,
    ADD COLUMN settled boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN wasend.pending_statuses.checked_xmax IS
'The xmax of the first senders'' check that saw the status committed; once every transaction below it has ended the status is settled';
COMMENT ON COLUMN wasend.pending_statuses.settled IS
'No record that was running when the status arrived is left: only a record of its wamid (which looks it up) applies it now';
CREATE INDEX pending_statuses_received_idx ON wasend.pending_statuses (received_at);
CREATE INDEX pending_statuses_unsettled_idx ON wasend.pending_statuses (received_at)
    WHERE NOT settled;

-- A webhook's timestamp (seconds since 1970, a JSON number or a string of
-- digits, as Meta sends them) as a time no earlier than 30 days ago and no
-- later than now (clamped); NULL when it is absent or anything else (NaN,
-- Infinity, an exponent, words, an object).
CREATE FUNCTION wasend._webhook_time(v jsonb) RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(v) IN ('number', 'string')
                 AND length(v #>> '{}') <= 1000 AND (v #>> '{}') ~ '^-?[0-9]+(\.[0-9]+)?$'
           THEN to_timestamp(least(greatest((v #>> '{}')::numeric,
                                            extract(epoch FROM now() - interval '30 days')),
                                   extract(epoch FROM now()))::double precision) END
$$;
REVOKE ALL ON FUNCTION wasend._webhook_time(jsonb) FROM PUBLIC;

-- Apply the statuses of one payload (see 0.3.0).  New in 0.6.0: each
-- status is parsed on its own, so that none can fail the others: its time
-- through _webhook_time (refused when NULL), its wamid at most 512
-- characters (refused otherwise), errors[0].code only when a plain integer
-- of at most 9 digits; only statuses wasend knows wait for their wamid.
-- Returns applied, ignored, pending and refused.
CREATE OR REPLACE FUNCTION wasend._apply_statuses(st jsonb) RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res jsonb;
BEGIN
    WITH p AS MATERIALIZED (
        SELECT x ->> 'id' AS wamid, x ->> 'status' AS status,
               wasend._status_rank(x ->> 'status') AS rnk,
               wasend._webhook_time(x -> 'timestamp') AS at,
               CASE WHEN jsonb_typeof(x #> '{errors,0,code}') = 'number'
                     AND (x #>> '{errors,0,code}') ~ '^-?[0-9]{1,9}$'
                    THEN (x #>> '{errors,0,code}')::int END AS code,
               x #>> '{errors,0,title}' AS title,
               x ->> 'recipient_id' AS recipient,
               CASE WHEN jsonb_typeof(x -> 'pricing') = 'object' THEN x -> 'pricing' END AS pricing
          FROM jsonb_array_elements(st) x
         WHERE jsonb_typeof(x -> 'id') = 'string' AND jsonb_typeof(x -> 'status') = 'string'),
    s AS MATERIALIZED (
        -- each usable status once: known says its wamid is on a row
        SELECT p.wamid, p.status, p.rnk, p.at, p.code, wasend._redact(p.title) AS title,
               p.recipient, p.pricing,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = p.wamid) AS known
          FROM p
         WHERE p.at IS NOT NULL AND length(p.wamid) <= 512),
    best AS (
        -- per wamid, the furthest status of this payload, and any pricing
        SELECT DISTINCT ON (s.wamid) s.wamid, s.status, s.rnk, s.at, s.code, s.title,
               (SELECT p.pricing FROM s p WHERE p.wamid = s.wamid AND p.pricing IS NOT NULL
                 LIMIT 1) AS pricing
          FROM s
         WHERE s.known AND s.rnk > 0
         ORDER BY s.wamid, s.rnk DESC, s.at DESC),
    upd AS (
        UPDATE wasend.send_queue q
           SET status = CASE WHEN b.rnk > wasend._status_rank(q.status) THEN b.status ELSE q.status END,
               sent_at = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status <> 'failed'
                              THEN coalesce(q.sent_at, b.at) ELSE q.sent_at END,
               delivered_at = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.rnk >= 4
                                   THEN coalesce(q.delivered_at, b.at) ELSE q.delivered_at END,
               read_at = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status = 'read'
                              THEN coalesce(q.read_at, b.at) ELSE q.read_at END,
               failed_at = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status = 'failed'
                                THEN b.at ELSE q.failed_at END,
               last_error_code = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status = 'failed'
                                      THEN b.code ELSE q.last_error_code END,
               last_error_class = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status = 'failed'
                                       THEN 'api' ELSE q.last_error_class END,
               last_error = CASE WHEN b.rnk > wasend._status_rank(q.status) AND b.status = 'failed'
                                 THEN b.title ELSE q.last_error END,
               pricing_billable = coalesce(q.pricing_billable,
                   CASE WHEN jsonb_typeof(b.pricing -> 'billable') = 'boolean'
                        THEN (b.pricing ->> 'billable')::boolean END),
               pricing_model = coalesce(q.pricing_model, left(b.pricing ->> 'pricing_model', 64)),
               pricing_category = coalesce(q.pricing_category, left(b.pricing ->> 'category', 64)),
               pricing_type = coalesce(q.pricing_type, left(b.pricing ->> 'type', 64))
          FROM best b
         WHERE q.wa_message_id = b.wamid
           AND (b.rnk > wasend._status_rank(q.status)
                OR (q.pricing_category IS NULL AND b.pricing IS NOT NULL))
        RETURNING q.id, q.recipient, q.status, b.status AS new_status, b.code),
    sup AS (
        INSERT INTO wasend.suppressions AS x (recipient, reason, scope)
        SELECT DISTINCT ON (u.recipient) u.recipient, format('message failed with %s', u.code),
               CASE WHEN u.code = 131050 THEN 'marketing' ELSE 'all' END
          FROM upd u
         WHERE u.status = 'failed' AND u.new_status = 'failed' AND u.code IN (131050, 131026)
         ORDER BY u.recipient, u.code
        ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
         WHERE excluded.scope = 'all' AND x.scope <> 'all'),
    unheld AS (
        DELETE FROM wasend.held_messages h
         USING upd u
         WHERE h.row_id = u.id AND u.status <> 'held'
        RETURNING h.row_id, h.campaign_id),
    unpaced AS (
        -- a campaign none of whose messages Meta still holds sends again
        UPDATE wasend.campaigns c
           SET paced_until = NULL
         WHERE c.id IN (SELECT campaign_id FROM unheld) AND c.paced_until IS NOT NULL
           AND c.sample_left IS NULL AND c.pacing = 'meta'
           AND NOT EXISTS (SELECT 1 FROM wasend.held_messages h
                            WHERE h.campaign_id = c.id
                              AND h.row_id NOT IN (SELECT row_id FROM unheld))),
    pend AS (
        INSERT INTO wasend.pending_statuses (wa_message_id, status, at, error_code, error_title, recipient, pricing)
        SELECT s.wamid, s.status, s.at, s.code, s.title, s.recipient, s.pricing
          FROM s
         WHERE NOT s.known AND s.rnk > 0
        ON CONFLICT DO NOTHING)
    SELECT jsonb_build_object(
               'applied', (SELECT count(*) FROM upd),
               'ignored', (SELECT count(*) FROM s WHERE s.known OR s.rnk <= 0) - (SELECT count(*) FROM upd),
               'pending', (SELECT count(*) FROM s WHERE NOT s.known AND s.rnk > 0),
               'refused', (SELECT count(*) FROM p) - (SELECT count(*) FROM s))
      INTO res;
    RETURN res;
END
$$;

-- The senders' refresh: expire waiting statuses older than 7 days (at most
-- 1,000 a call), and check the unsettled ones (at most 1,000 a call, the
-- oldest first; rows another sender is checking are skipped) against
-- send_queue: a status whose wamid is there is applied; one whose wamid is
-- not gets checked_xmax the first time, and is settled once every
-- transaction below it has ended (see the header of this section).
-- Relies on READ COMMITTED in the senders (a new snapshot per statement).
-- Returns how many statuses it applied.
CREATE OR REPLACE FUNCTION wasend._apply_pending_statuses() RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st jsonb;
    n bigint;
BEGIN
    -- statuses of messages wasend never sent do not wait forever
    DELETE FROM wasend.pending_statuses p
     WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM wasend.pending_statuses x
                                WHERE x.received_at < now() - interval '7 days'
                                ORDER BY x.received_at LIMIT 1000
                                  FOR UPDATE SKIP LOCKED));
    WITH c AS MATERIALIZED (
        SELECT p.wa_message_id, p.status, p.checked_xmax,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = p.wa_message_id) AS known
          FROM wasend.pending_statuses p
         WHERE NOT p.settled
         ORDER BY p.received_at LIMIT 1000
           FOR UPDATE SKIP LOCKED),
    ready AS (
        DELETE FROM wasend.pending_statuses p
         USING c
         WHERE c.known AND p.wa_message_id = c.wa_message_id AND p.status = c.status
        RETURNING p.*),
    later AS (
        -- a checked_xmax beyond this snapshot's came with a dump of
        -- another cluster: checked again, from here
        UPDATE wasend.pending_statuses p
           SET checked_xmax = CASE WHEN c.checked_xmax IS NULL
                                     OR c.checked_xmax > pg_snapshot_xmax(pg_current_snapshot())
                                   THEN pg_snapshot_xmax(pg_current_snapshot())
                                   ELSE c.checked_xmax END,
               settled = c.checked_xmax IS NOT NULL
                         AND c.checked_xmax <= pg_snapshot_xmax(pg_current_snapshot())
          FROM c
         WHERE NOT c.known AND p.wa_message_id = c.wa_message_id AND p.status = c.status
           AND (c.checked_xmax IS NULL
                OR c.checked_xmax > pg_snapshot_xmax(pg_current_snapshot())
                OR pg_snapshot_xmin(pg_current_snapshot()) >= c.checked_xmax))
    SELECT jsonb_agg(jsonb_build_object('id', wa_message_id, 'status', status,
                                        'timestamp', extract(epoch FROM coalesce(at, received_at)),
                                        'recipient_id', recipient,
                                        'pricing', pricing,
                                        'errors', CASE WHEN error_code IS NOT NULL THEN
                                            jsonb_build_array(jsonb_build_object('code', error_code, 'title', error_title)) END)),
           count(*)
      INTO st, n FROM ready;
    IF n > 0 THEN
        PERFORM wasend._apply_statuses(st);
    END IF;
    RETURN n;
END
$$;

-- The senders' record: apply the waiting statuses of the wamids it just
-- recorded (found by the primary key).  Returns how many it applied.
CREATE FUNCTION wasend._apply_pending_statuses(wamids text[]) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st jsonb;
    n bigint;
BEGIN
    WITH ready AS (
        DELETE FROM wasend.pending_statuses p
         WHERE p.wa_message_id = ANY (wamids)
        RETURNING p.*)
    SELECT jsonb_agg(jsonb_build_object('id', wa_message_id, 'status', status,
                                        'timestamp', extract(epoch FROM coalesce(at, received_at)),
                                        'recipient_id', recipient,
                                        'pricing', pricing,
                                        'errors', CASE WHEN error_code IS NOT NULL THEN
                                            jsonb_build_array(jsonb_build_object('code', error_code, 'title', error_title)) END)),
           count(*)
      INTO st, n FROM ready;
    IF n > 0 THEN
        PERFORM wasend._apply_statuses(st);
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_pending_statuses(text[]) FROM PUBLIC;

-- The body of wasend_ingest_webhook once the signature is checked (see
-- 0.3.0).  New in 0.6.0: no payload joins the waiting statuses (the
-- senders apply them, see above); a status or message is refused, or its
-- time clamped, on its own (_apply_statuses, _webhook_time); a message
-- whose id is over 512 characters or whose sender is over 64 is not one of
-- Meta's and is skipped; should the statuses still fail on their data,
-- they are applied one by one and only the failing one is refused; an
-- account change that fails on its data is skipped with a WARNING.
CREATE OR REPLACE FUNCTION wasend._ingest_verified(raw_body text) RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload jsonb;
    sts jsonb;
    res jsonb;
    one jsonb;
    one_status jsonb;
    n_msgs bigint;
    n_new bigint;
    n_stop bigint;
    n_pref bigint;
    n_acct bigint := 0;
    n_camp bigint := 0;
    ch jsonb;
    keywords text[];
BEGIN
    BEGIN
        payload := raw_body::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'webhook body is not valid JSON'
            USING ERRCODE = 'invalid_text_representation',
                  HINT = 'Pass the raw request body exactly as Meta sent it.';
    END;
    IF jsonb_typeof(payload) <> 'object'
       OR jsonb_typeof(payload->'entry') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'webhook body is not a WhatsApp Business Account notification'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Expected {"object":"whatsapp_business_account","entry":[...]}.';
    END IF;

    sts := coalesce(
        (SELECT jsonb_agg(s) FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.statuses[*]') s),
        '[]');
    BEGIN
        res := wasend._apply_statuses(sts);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        -- one status must not cost the others: each on its own
        res := '{"applied": 0, "ignored": 0, "pending": 0, "refused": 0}';
        FOR one_status IN SELECT e FROM jsonb_array_elements(sts) e LOOP
            BEGIN
                one := wasend._apply_statuses(jsonb_build_array(one_status));
            EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
                RAISE WARNING 'wasend: a status webhook was refused: %', wasend._redact(SQLERRM);
                one := '{"refused": 1}';
            END;
            SELECT jsonb_object_agg(k, coalesce((res ->> k)::bigint, 0) + coalesce((one ->> k)::bigint, 0))
              INTO res FROM unnest(ARRAY['applied', 'ignored', 'pending', 'refused']) k;
        END LOOP;
    END;

    SELECT array_agg(upper(btrim(k))) INTO keywords
      FROM unnest(string_to_array(current_setting('wasend.stop_keywords'), ',')) k;
    WITH m AS (
        SELECT v #>> '{metadata,phone_number_id}' AS pnid, x AS msg
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') v
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(v->'messages', '[]')) x
         WHERE jsonb_typeof(x->'id') = 'string' AND jsonb_typeof(x->'from') = 'string'
           AND length(x->>'id') <= 512 AND length(x->>'from') <= 64),
    ins AS (
        INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body, sent_at, raw)
        SELECT msg->>'id', ltrim(msg->>'from', '+'), pnid, msg->>'type',
               coalesce(msg #>> '{text,body}', msg #>> '{button,text}',
                        msg #>> '{interactive,button_reply,title}',
                        msg #>> '{interactive,list_reply,title}'),
               wasend._webhook_time(msg->'timestamp'), msg
          FROM m
        ON CONFLICT (wa_message_id) DO NOTHING
        RETURNING from_number, body),
    stop AS (
        -- a STOP reply stops every campaign, also for a recipient who had
        -- only opted out of marketing
        INSERT INTO wasend.suppressions AS x (recipient, reason)
        SELECT DISTINCT ON (from_number) from_number, 'replied ' || upper(btrim(body))
          FROM ins WHERE upper(btrim(body)) = ANY (keywords)
        ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
         WHERE x.scope <> 'all'
        RETURNING 1)
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins), (SELECT count(*) FROM stop)
      INTO n_msgs, n_new, n_stop;

    -- marketing opt-outs: stop suppresses for marketing, resume
    -- lifts that (a suppression of scope all stays); the latest of a
    -- recipient's wins
    WITH p AS (
        SELECT DISTINCT ON (ltrim(x ->> 'wa_id', '+')) ltrim(x ->> 'wa_id', '+') AS recipient,
               lower(x ->> 'value') AS value
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.user_preferences[*]') x
         WHERE x ->> 'category' = 'marketing_messages' AND jsonb_typeof(x -> 'wa_id') = 'string'
           AND ltrim(x ->> 'wa_id', '+') ~ '^[0-9]{7,15}$'
         ORDER BY ltrim(x ->> 'wa_id', '+'), wasend._webhook_time(x -> 'timestamp') DESC NULLS LAST),
    stopped AS (
        INSERT INTO wasend.suppressions (recipient, reason, scope)
        SELECT p.recipient, 'user_preferences: stopped marketing messages', 'marketing'
          FROM p WHERE p.value = 'stop'
        ON CONFLICT DO NOTHING
        RETURNING 1),
    resumed AS (
        DELETE FROM wasend.suppressions s
         USING p
         WHERE s.recipient = p.recipient AND p.value = 'resume' AND s.scope = 'marketing'
        RETURNING 1)
    SELECT (SELECT count(*) FROM stopped) + (SELECT count(*) FROM resumed) INTO n_pref;

    FOR ch IN SELECT c FROM jsonb_path_query(payload, '$.entry[*].changes[*]') c
               WHERE c ->> 'field' IN ('message_template_status_update', 'phone_number_quality_update',
                                       'business_capability_update')
                 AND jsonb_typeof(c -> 'value') = 'object' LOOP
        BEGIN
            CASE ch ->> 'field'
                WHEN 'message_template_status_update' THEN
                    n_camp := n_camp + wasend._apply_template_status(ch -> 'value');
                WHEN 'phone_number_quality_update' THEN
                    n_camp := n_camp + wasend._apply_quality_update(ch -> 'value');
                ELSE
                    -- the portfolio's limit changed: read every number again
                    PERFORM wasend._limits_due_soon(NULL);
                    PERFORM wasend._wake_at_commit();
            END CASE;
            n_acct := n_acct + 1;
        EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
            RAISE WARNING 'wasend: a % webhook was skipped: %', left(ch ->> 'field', 64),
                wasend._redact(SQLERRM);
        END;
    END LOOP;

    RETURN jsonb_build_object(
        'statuses_applied', res->'applied',
        'statuses_ignored', res->'ignored',
        'statuses_pending', res->'pending',
        'statuses_refused', res->'refused',
        'messages_stored', n_new,
        'messages_duplicate', n_msgs - n_new,
        'recipients_suppressed', n_stop,
        'preferences_applied', n_pref,
        'account_updates', n_acct,
        'campaigns_changed', n_camp);
END
$$;
