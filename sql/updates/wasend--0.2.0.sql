/*
 * wasend--0.2.0.sql — the extension's tables, views and SQL API.
 *
 * Tables live in schema wasend; the API functions are created in the
 * extension's schema (public by default) so that
 * SELECT wasend_start_campaign(42) works with the default search_path.
 *
 * Every API function validates its input and raises an ERROR with a hint,
 * changing nothing, when the call makes no sense.  Control changes wake the
 * senders when the transaction commits (wasend._wake_at_commit).
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
 *	  caller could have created first: 0.1.0's _apply_statuses created a
 *	  temp table "if not exists", so an operator's own table of that name,
 *	  with a trigger, ran as superuser.
 *	- Every wasend object is named with its schema.
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
-- and function below, and nobody but wasend_admin (and superusers) can
-- read access_token.
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

-- ---------------------------------------------------------------------
-- Internal helpers
-- ---------------------------------------------------------------------

-- Wake the senders when the current transaction commits (C).  Called by
-- the API functions and the send_queue statement trigger, which run as
-- the owner; nobody else may call it.
CREATE FUNCTION wasend._wake_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'wasend_wake_at_commit'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wasend._wake_at_commit() IS
'internal: wake the wasend senders when the current transaction commits';
REVOKE ALL ON FUNCTION wasend._wake_at_commit() FROM PUBLIC;

-- A recipient is 7-15 digits with an optional leading +; it is stored
-- without the +, so that "+15551234567" and "15551234567" are one recipient.
-- A pure validator: it runs as its caller.
CREATE FUNCTION wasend._normalize_recipient(recipient text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF recipient IS NULL THEN
        RAISE EXCEPTION 'recipient must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the phone number in international format, e.g. 15551234567.';
    END IF;
    IF recipient !~ '^\+?[0-9]{7,15}$' THEN
        RAISE EXCEPTION 'invalid recipient "%"', recipient
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A recipient is 7 to 15 digits with an optional leading "+".',
                  HINT = 'Give the phone number in international format without spaces or dashes, e.g. 15551234567.';
    END IF;
    RETURN ltrim(recipient, '+');
END
$$;
REVOKE ALL ON FUNCTION wasend._normalize_recipient(text) FROM PUBLIC;

-- A message is a Graph API message object (without messaging_product and
-- to): a JSON object with a string "type".  A pure validator: it runs as
-- its caller.
CREATE FUNCTION wasend._check_message(message jsonb, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF message IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give a Graph API message object, e.g. {"type":"template","template":{...}}.';
    END IF;
    IF jsonb_typeof(message) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, jsonb_typeof(message)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a Graph API message object, e.g. {"type":"template","template":{...}}.';
    END IF;
    IF jsonb_typeof(message -> 'type') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% has no "type"', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The Graph API needs the message type: template, text, image, interactive, ...',
                  HINT = 'Add a "type" key, e.g. {"type":"text","text":{"body":"Hello"}}.';
    END IF;
    IF octet_length(message::text) > 65536 THEN
        RAISE EXCEPTION '% is too large (% bytes)', what, octet_length(message::text)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A message object is at most 64 kB; send media by link or id, not inline.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._check_message(jsonb, text) FROM PUBLIC;

-- Replace anything shaped like a Meta access token ("EA" and 20 or more
-- letters and digits) in text that came from Meta before it is stored:
-- Graph API errors can quote the token they refused.  The senders store
-- their answers' error messages through the same pattern, and replace the
-- number's own token in C.
--
-- The only function without SET search_path, on purpose: a SET clause
-- keeps a SQL function from being inlined and costs a configuration
-- change on every call, and this one runs once per stored error.  Its body
-- is therefore written so that it resolves the same whatever the caller's
-- search_path: the one function it calls is named pg_catalog.regexp_replace,
-- it uses no operator, and its arguments are a column and literals.  It
-- runs as its caller (SECURITY INVOKER) and is immutable, so inlining it
-- changes nothing but its cost.
CREATE FUNCTION wasend._redact(msg text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SECURITY INVOKER
AS $$
    SELECT pg_catalog.regexp_replace(msg, 'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g')
$$;
COMMENT ON FUNCTION wasend._redact(text) IS
'internal: text with anything shaped like a Meta access token replaced by [redacted token]';
REVOKE ALL ON FUNCTION wasend._redact(text) FROM PUBLIC;

-- Order of statuses: a row only moves forward.  failed overrides sent only.
CREATE FUNCTION wasend._status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE status WHEN 'sending' THEN 0 WHEN 'sent' THEN 1 WHEN 'failed' THEN 2
                       WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE -1 END
$$;
REVOKE ALL ON FUNCTION wasend._status_rank(text) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Tables
--
-- Privileges: wasend_viewer reads every table but the tokens;
-- wasend_operator adds recipients (send_queue: campaign_id, recipient and
-- payload only, so that nobody can queue a row as already sent, claimed by
-- a sender, or under an id of its choosing); wasend_admin also edits
-- numbers (tokens included), campaigns, the error policy and
-- suppressions, and deletes old rows.  No role gets TRIGGER, TRUNCATE or
-- REFERENCES, nor anything on the sequences (an identity column needs
-- none).
-- ---------------------------------------------------------------------

CREATE TABLE wasend.whatsapp_numbers (
    id                      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    phone_number_id         text NOT NULL UNIQUE
                            CHECK (phone_number_id ~ '^[0-9]{1,32}$'),
    access_token            text NOT NULL CHECK (access_token ~ '^\S+$'),
    max_send_rate_per_sec   integer NOT NULL DEFAULT 80
                            CHECK (max_send_rate_per_sec BETWEEN 1 AND 1000),
    status                  text NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'paused')),
    pause_reason            text,
    paused_until            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at              timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wasend.whatsapp_numbers IS
'WhatsApp Business phone numbers: Graph API id, access token and allowed send rate';

CREATE TABLE wasend.campaigns (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (name <> ''),
    number_id       bigint NOT NULL REFERENCES wasend.whatsapp_numbers (id),
    message         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'scheduled', 'running', 'paused',
                                      'completed', 'cancelled')),
    start_at        timestamptz,
    pause_reason    text,
    -- circuit breaker: pause when more than error_threshold of the last
    -- error_window results failed
    error_threshold numeric NOT NULL DEFAULT 0.05
                    CHECK (error_threshold > 0::numeric AND error_threshold <= 1::numeric),
    error_window    integer NOT NULL DEFAULT 200
                    CHECK (error_window BETWEEN 10 AND 10000),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at      timestamptz,
    paused_at       timestamptz,
    completed_at    timestamptz,
    cancelled_at    timestamptz
);
CREATE INDEX campaigns_status_idx ON wasend.campaigns (status)
    WHERE status IN ('scheduled', 'running');
COMMENT ON TABLE wasend.campaigns IS
'Campaigns: one message (Graph API object without messaging_product and to) sent from one number';

CREATE TABLE wasend.send_queue (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    campaign_id     bigint NOT NULL REFERENCES wasend.campaigns (id),
    recipient       text NOT NULL,
    payload         jsonb,
    status          text NOT NULL DEFAULT 'ready'
                    CHECK (status IN ('ready', 'sending', 'sent', 'delivered',
                                      'read', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    wa_message_id   text,
    last_error_code integer,
    last_error_class text,
    last_error      text,
    uncertain       boolean NOT NULL DEFAULT false,
    claimed_by      bigint,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_at      timestamptz,
    sent_at         timestamptz,
    delivered_at    timestamptz,
    read_at         timestamptz,
    failed_at       timestamptz,
    UNIQUE (campaign_id, recipient)
) WITH (fillfactor = 50);
-- Rows not yet sent or failed (ready, sending, and the cancelled rows of a
-- cancelled campaign): what the senders claim, in order, what keeps a
-- campaign from completing, and what crash recovery looks at.  It holds
-- only rows still to do, so it stays small however many rows were sent.
--
-- No index names status, claimed_by, claimed_at or attempts, not even in a
-- predicate: so the claim (ready -> sending) is a HOT update, which writes
-- no index entry, when the row's page has room for the new version.
-- fillfactor 50 leaves that room.  bench/dbcost.sh measures it: 95% of
-- claims HOT, and over a 1M-message run fewer instructions and WAL per
-- message and a smaller table and indexes at the end than at fillfactor
-- 80 or 100 (figures in README, Performance).
CREATE INDEX send_queue_ready_idx ON wasend.send_queue (campaign_id, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX send_queue_wamid_idx ON wasend.send_queue (wa_message_id)
    WHERE wa_message_id IS NOT NULL;
COMMENT ON TABLE wasend.send_queue IS
'One row per message to send: recipient, optional per-recipient payload, and its outcome';
COMMENT ON COLUMN wasend.send_queue.claimed_by IS
'while the row is sending: the random 63-bit token of the sender start that claimed it (a new token each time a sender starts); NULL otherwise';

-- What a sender does with each error.  code is a Graph API error.code, or
-- a transport class: timeout, connect, reset, tls, http_5xx, bad_response,
-- transport; '*' is the rule for any code not listed.
--
-- origin says where a row comes from: 'builtin' as the extension ships it,
-- 'edited' a built-in code changed since, 'added' a code added.  pg_dump
-- dumps the edited and added rows only (CREATE EXTENSION makes the
-- built-in rows again on restore), and _error_policy_track keeps origin
-- up to date; nobody but superusers can write origin itself.  The default
-- is 'builtin' only while this script inserts the shipped rows.
CREATE TABLE wasend.error_policy (
    code            text PRIMARY KEY,
    action          text NOT NULL
                    CHECK (action IN ('retry', 'fail', 'pause_number', 'pause_campaign')),
    backoff         interval NOT NULL DEFAULT '2 seconds'
                    CHECK (backoff >= '0'::interval),
    backoff_factor  double precision NOT NULL DEFAULT 2
                    CHECK (backoff_factor >= 1::double precision),
    pause_for       interval CHECK (pause_for > '0'::interval),
    slow_down       boolean NOT NULL DEFAULT false,
    description     text,
    origin          text NOT NULL DEFAULT 'builtin'
                    CHECK (origin IN ('builtin', 'edited', 'added'))
);
COMMENT ON TABLE wasend.error_policy IS
'Per error code: retry (after backoff * backoff_factor^(attempt-1), +-20% jitter), fail, pause the number (for pause_for, or until resumed) or pause the campaign';
COMMENT ON COLUMN wasend.error_policy.origin IS
'builtin: as the extension ships it; edited: a built-in code changed since; added: a code added.  pg_dump keeps edited and added rows';

INSERT INTO wasend.error_policy (code, action, backoff, backoff_factor, pause_for, slow_down, description) VALUES
    ('130429', 'retry', '1 second', 1, NULL, true, 'throughput limit: slow the number down, retry'),
    ('131056', 'retry', '4 seconds', 4, NULL, false, 'pair rate limit: retry this recipient after 4^attempt s'),
    ('131057', 'retry', '10 seconds', 1, NULL, false, 'account in maintenance or throughput upgrade'),
    ('1', 'retry', '2 seconds', 2, NULL, false, 'temporary API error'),
    ('2', 'retry', '2 seconds', 2, NULL, false, 'temporary API error'),
    ('131000', 'retry', '2 seconds', 2, NULL, false, 'something went wrong'),
    ('131016', 'retry', '2 seconds', 2, NULL, false, 'service unavailable'),
    ('133004', 'retry', '2 seconds', 2, NULL, false, 'server temporarily unavailable'),
    ('4', 'pause_number', '2 seconds', 2, '10 minutes', false, 'app rate limit'),
    ('80007', 'pause_number', '2 seconds', 2, '10 minutes', false, 'WABA rate limit'),
    ('131048', 'pause_number', '2 seconds', 2, '10 minutes', false, 'spam rate limit: quality problem'),
    ('368', 'pause_number', '2 seconds', 2, NULL, false, 'account blocked for policy violations'),
    ('131031', 'pause_number', '2 seconds', 2, NULL, false, 'account locked'),
    ('131042', 'pause_number', '2 seconds', 2, NULL, false, 'payment problem'),
    ('133010', 'pause_number', '2 seconds', 2, NULL, false, 'phone number not registered'),
    ('131064', 'pause_number', '2 seconds', 2, NULL, false, 'template category violation'),
    ('0', 'pause_number', '2 seconds', 2, NULL, false, 'authentication exception'),
    ('190', 'pause_number', '2 seconds', 2, NULL, false, 'access token invalid or expired'),
    ('10', 'pause_number', '2 seconds', 2, NULL, false, 'permission denied'),
    ('100', 'fail', '2 seconds', 2, NULL, false, 'invalid parameter'),
    ('131051', 'fail', '2 seconds', 2, NULL, false, 'unsupported message type'),
    ('135000', 'fail', '2 seconds', 2, NULL, false, 'generic user error'),
    ('132000', 'pause_campaign', '2 seconds', 2, NULL, false, 'template parameter count mismatch'),
    ('132001', 'pause_campaign', '2 seconds', 2, NULL, false, 'template does not exist'),
    ('132012', 'pause_campaign', '2 seconds', 2, NULL, false, 'template parameter format mismatch'),
    ('132015', 'pause_campaign', '2 seconds', 2, NULL, false, 'template paused'),
    ('132016', 'pause_campaign', '2 seconds', 2, NULL, false, 'template disabled'),
    ('131026', 'fail', '2 seconds', 2, NULL, false, 'undeliverable'),
    ('131050', 'fail', '2 seconds', 2, NULL, false, 'recipient opted out of marketing'),
    ('130403', 'fail', '2 seconds', 2, NULL, false, 'recipient blocked by the business'),
    ('131049', 'fail', '2 seconds', 2, NULL, false, 'not delivered to keep the ecosystem healthy'),
    ('131047', 'fail', '2 seconds', 2, NULL, false, '24-hour window closed'),
    ('timeout', 'retry', '2 seconds', 2, NULL, false, 'no answer in wasend.request_timeout_ms (may have been sent)'),
    ('connect', 'retry', '2 seconds', 2, NULL, false, 'could not connect'),
    ('reset', 'retry', '2 seconds', 2, NULL, false, 'connection dropped (may have been sent)'),
    ('tls', 'retry', '2 seconds', 2, NULL, false, 'TLS failure'),
    ('transport', 'retry', '2 seconds', 2, NULL, false, 'other transport failure'),
    ('http_5xx', 'retry', '2 seconds', 2, NULL, false, 'HTTP 5xx without an error body'),
    ('bad_response', 'fail', '2 seconds', 2, NULL, false, 'answer without JSON or message id'),
    ('*', 'fail', '2 seconds', 2, NULL, false, 'any other error');
INSERT INTO wasend.error_policy (code, action, description)
SELECT g::text, 'pause_number', 'permission missing' FROM pg_catalog.generate_series(200, 299) g;
-- from now on, a row someone inserts is one they added
ALTER TABLE wasend.error_policy ALTER COLUMN origin SET DEFAULT 'added';

-- Replies and other messages users send to the business's numbers.
CREATE TABLE wasend.inbound_messages (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    wa_message_id   text NOT NULL UNIQUE,
    from_number     text NOT NULL,
    phone_number_id text,
    type            text,
    body            text,
    sent_at         timestamptz,
    received_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    raw             jsonb NOT NULL
);
COMMENT ON TABLE wasend.inbound_messages IS
'Messages users sent to the business, from webhooks; de-duplicated by wamid';

-- Statuses whose wamid is not (yet) on a row: a webhook can arrive before
-- the send's own commit.  Applied as soon as the wamid appears.
CREATE TABLE wasend.pending_statuses (
    wa_message_id   text NOT NULL,
    status          text NOT NULL,
    at              timestamptz,
    error_code      integer,
    error_title     text,
    recipient       text,
    received_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (wa_message_id, status)
);
COMMENT ON TABLE wasend.pending_statuses IS
'Status webhooks for wamids not yet known; applied when the wamid appears';

-- Recipients who must not be sent to: they said STOP, opted out (131050)
-- or are not on WhatsApp (131026).
CREATE TABLE wasend.suppressions (
    recipient       text PRIMARY KEY,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wasend.suppressions IS
'Recipients wasend_enqueue and INSERTs into send_queue skip';

-- What pg_dump dumps of the extension's data.  pg_restore loads the tables
-- in the order of their foreign keys (numbers, campaigns, send_queue).
-- The identity sequences are dumped too, so that ids continue after a
-- restore instead of starting again at 1.  Of the error policy, only the
-- rows users added or edited: CREATE EXTENSION makes the built-in rows,
-- and _error_policy_track turns a restored edit into an update of its
-- code.  (A built-in code a user deleted comes back after a restore.)
SELECT pg_catalog.pg_extension_config_dump('wasend.inbound_messages', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.suppressions', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.whatsapp_numbers', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.send_queue', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.error_policy', 'WHERE origin <> ''builtin''');
SELECT pg_catalog.pg_extension_config_dump('wasend.pending_statuses', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.whatsapp_numbers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaigns_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.send_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.inbound_messages_id_seq', '');

-- Privileges on the tables (see the start of this section).
REVOKE ALL ON ALL TABLES IN SCHEMA wasend FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA wasend FROM PUBLIC;
GRANT SELECT (id, phone_number_id, max_send_rate_per_sec, status, pause_reason,
              paused_until, created_at, updated_at)
    ON wasend.whatsapp_numbers TO wasend_viewer;
GRANT SELECT, INSERT, UPDATE, DELETE ON wasend.whatsapp_numbers TO wasend_admin;
GRANT SELECT ON wasend.campaigns TO wasend_viewer;
GRANT SELECT, INSERT, UPDATE, DELETE ON wasend.campaigns TO wasend_admin;
GRANT SELECT ON wasend.send_queue TO wasend_viewer;
GRANT INSERT (campaign_id, recipient, payload) ON wasend.send_queue TO wasend_operator;
GRANT DELETE ON wasend.send_queue TO wasend_admin;
GRANT SELECT ON wasend.error_policy TO wasend_viewer;
GRANT INSERT (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      UPDATE (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      DELETE
    ON wasend.error_policy TO wasend_admin;
GRANT SELECT ON wasend.inbound_messages TO wasend_viewer;
GRANT DELETE ON wasend.inbound_messages TO wasend_admin;
GRANT SELECT ON wasend.pending_statuses TO wasend_viewer;
GRANT SELECT ON wasend.suppressions TO wasend_viewer;
GRANT INSERT, UPDATE, DELETE ON wasend.suppressions TO wasend_admin;

-- ---------------------------------------------------------------------
-- Validation triggers: plain INSERTs get the same checks as the API
-- ---------------------------------------------------------------------

-- Numbers are validated by a trigger rather than by CHECK or NOT NULL
-- alone: a constraint violation's DETAIL shows the whole row, token included,
-- in the error and the server log; this trigger's errors never do.  It
-- runs as the writer: only wasend_admin, the owner and superusers can
-- write numbers, and they can read them.
CREATE FUNCTION wasend._number_check() RETURNS trigger
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
    IF NEW.access_token IS NULL THEN
        RAISE EXCEPTION 'access token must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the system user access token of the WhatsApp Business account.';
    END IF;
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
REVOKE ALL ON FUNCTION wasend._number_check() FROM PUBLIC;

CREATE TRIGGER number_check
    BEFORE INSERT OR UPDATE ON wasend.whatsapp_numbers
    FOR EACH ROW EXECUTE FUNCTION wasend._number_check();

-- Checks and normalizes every row written to wasend.send_queue.
--
-- A row that is being added now gets the checks of a new recipient: its
-- campaign must not be completed or cancelled, and a suppressed recipient
-- is skipped (counted, and reported once per statement by
-- _send_queue_wake).  Such a row is ready to send and its created_at is
-- this transaction's: users can write only campaign_id, recipient and
-- payload, so every row they add is one.  A row that carries a state of
-- its own, or a created_at from before, was copied from an existing queue
-- (pg_restore's COPY of a dump, run by a superuser): it keeps its state,
-- so that a dump of a completed campaign restores, and only its recipient,
-- payload and campaign are checked.  A row copied while a sender held it
-- (status 'sending': that sender is gone) is settled as the launcher
-- settles a stopped sender's rows: its outcome is unknown.
--
-- Runs as the owner: an operator's plain INSERT needs the campaign row
-- lock below, which a viewer's SELECT does not give.
CREATE FUNCTION wasend._send_queue_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    adding boolean;
BEGIN
    NEW.recipient := wasend._normalize_recipient(NEW.recipient);
    adding := TG_OP = 'INSERT' AND NEW.status = 'ready'
              AND NEW.sent_at IS NULL AND NEW.failed_at IS NULL
              AND NEW.created_at = now();
    IF adding AND EXISTS (SELECT 1 FROM wasend.suppressions s
                           WHERE s.recipient = NEW.recipient) THEN
        PERFORM set_config('wasend_state.suppressed_skipped',
                           (coalesce(nullif(current_setting('wasend_state.suppressed_skipped', true), ''), '0')::int + 1)::text,
                           true);
        RETURN NULL;
    END IF;
    IF NEW.payload IS NOT NULL THEN
        PERFORM wasend._check_message(NEW.payload, format('payload for recipient %s', NEW.recipient));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.campaign_id IS DISTINCT FROM OLD.campaign_id THEN
        -- the share lock keeps a sender from completing the campaign while
        -- rows are being added to it (see src/queue.sql, lock_done)
        SELECT c.status INTO st FROM wasend.campaigns c
         WHERE c.id = NEW.campaign_id FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'campaign % does not exist', NEW.campaign_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first with wasend_create_campaign().';
        END IF;
        IF st IN ('completed', 'cancelled')
           AND (adding OR (TG_OP = 'UPDATE' AND NEW.status = 'ready')) THEN
            RAISE EXCEPTION 'cannot add recipients to campaign %: it is %', NEW.campaign_id, st
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Create a new campaign with wasend_create_campaign().';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.status = 'sending' THEN
        NEW.claimed_by := NULL;
        NEW.uncertain := true;
        NEW.last_error_class := 'uncertain';
        NEW.last_error := 'outcome unknown: the message was claimed or in flight when the copy was taken';
        NEW.next_attempt_at := now();
        IF st = 'cancelled' THEN
            NEW.status := 'cancelled';
        ELSIF coalesce(current_setting('wasend.on_uncertain', true), 'retry') = 'fail'
              OR NEW.attempts >= coalesce(nullif(current_setting('wasend.max_attempts', true), '')::int, 5) THEN
            NEW.status := 'failed';
            NEW.failed_at := now();
        ELSE
            NEW.status := 'ready';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._send_queue_check() FROM PUBLIC;

CREATE TRIGGER send_queue_check
    BEFORE INSERT OR UPDATE OF recipient, payload, campaign_id ON wasend.send_queue
    FOR EACH ROW EXECUTE FUNCTION wasend._send_queue_check();

-- After each INSERT statement: report the suppressed recipients skipped,
-- and wake the senders at commit.  Runs as the owner, who alone may call
-- wasend._wake_at_commit.
CREATE FUNCTION wasend._send_queue_wake() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    skipped int := coalesce(nullif(current_setting('wasend_state.suppressed_skipped', true), ''), '0')::int;
BEGIN
    IF skipped > 0 THEN
        RAISE NOTICE 'skipped % suppressed recipient(s)', skipped
            USING HINT = 'See wasend.suppressions: they said STOP, opted out or are not on WhatsApp.';
        PERFORM set_config('wasend_state.suppressed_skipped', '0', true);
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._send_queue_wake() FROM PUBLIC;

CREATE TRIGGER send_queue_wake
    AFTER INSERT ON wasend.send_queue
    FOR EACH STATEMENT EXECUTE FUNCTION wasend._send_queue_wake();

-- A campaign's message must be a message object.  A pure check: it runs
-- as the writer.
CREATE FUNCTION wasend._campaign_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wasend._check_message(NEW.message, 'campaign message');
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._campaign_check() FROM PUBLIC;

CREATE TRIGGER campaign_check
    BEFORE INSERT OR UPDATE OF message ON wasend.campaigns
    FOR EACH ROW EXECUTE FUNCTION wasend._campaign_check();

-- Keeps wasend.error_policy.origin right, so that pg_dump dumps what
-- users changed: an UPDATE of a built-in row makes it 'edited' ('added'
-- if its code changed: the built-in code is gone).  An INSERT of a row
-- that says it is not 'added' comes from a restore (users cannot write
-- origin): if its code exists, made by CREATE EXTENSION, the row replaces
-- it instead of failing on the primary key.  A user's INSERT of an
-- existing code still fails.  Runs as the writer.
CREATE FUNCTION wasend._error_policy_track() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.origin = 'builtin' AND NEW.origin = 'builtin' THEN
            IF NEW.code IS DISTINCT FROM OLD.code THEN
                NEW.origin := 'added';
            ELSIF ROW(NEW.action, NEW.backoff, NEW.backoff_factor, NEW.pause_for,
                      NEW.slow_down, NEW.description)
                  IS DISTINCT FROM
                  ROW(OLD.action, OLD.backoff, OLD.backoff_factor, OLD.pause_for,
                      OLD.slow_down, OLD.description) THEN
                NEW.origin := 'edited';
            END IF;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.origin <> 'added' THEN
        UPDATE wasend.error_policy p
           SET action = NEW.action, backoff = NEW.backoff, backoff_factor = NEW.backoff_factor,
               pause_for = NEW.pause_for, slow_down = NEW.slow_down,
               description = NEW.description, origin = NEW.origin
         WHERE p.code = NEW.code;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._error_policy_track() FROM PUBLIC;

CREATE TRIGGER error_policy_track
    BEFORE INSERT OR UPDATE ON wasend.error_policy
    FOR EACH ROW EXECUTE FUNCTION wasend._error_policy_track();

-- ---------------------------------------------------------------------
-- SQL API
--
-- Each function runs as the extension owner (SECURITY DEFINER) and is
-- granted to the role that may call it.  The internal helpers run as their
-- caller: only these functions and the workers call them.
-- ---------------------------------------------------------------------

-- Fetch a campaign for a state change, locked, or raise a clear error.
CREATE FUNCTION wasend._campaign_for_update(campaign_id bigint)
RETURNS record
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT * INTO c FROM wasend.campaigns WHERE id = campaign_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    RETURN c;
END
$$;
REVOKE ALL ON FUNCTION wasend._campaign_for_update(bigint) FROM PUBLIC;

-- Fetch a number for a change, locked, or raise a clear error.
CREATE FUNCTION wasend._number_for_update(number_id bigint)
RETURNS record
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    SELECT id, phone_number_id, status, pause_reason INTO n
      FROM wasend.whatsapp_numbers WHERE id = number_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, phone_number_id, status FROM wasend.whatsapp_numbers.';
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._number_for_update(bigint) FROM PUBLIC;

-- Register a number (wasend_admin).  Takes a token: an error raised inside
-- must not log the calling statement, which contains it
-- (log_min_error_statement = panic).
CREATE FUNCTION wasend_add_number(phone_number_id text, access_token text,
                                  max_send_rate_per_sec integer DEFAULT 80)
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
    INSERT INTO wasend.whatsapp_numbers (phone_number_id, access_token, max_send_rate_per_sec)
    VALUES (phone_number_id, access_token, max_send_rate_per_sec)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend_add_number(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_add_number(text, text, integer) TO wasend_admin;

-- Change a number's token and/or rate (wasend_admin).  Takes a token (see
-- wasend_add_number).
CREATE FUNCTION wasend_update_number(number_id bigint, access_token text DEFAULT NULL,
                                     max_send_rate_per_sec integer DEFAULT NULL)
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
    IF access_token IS NULL AND max_send_rate_per_sec IS NULL THEN
        RAISE EXCEPTION 'nothing to update'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a new access_token, a new max_send_rate_per_sec, or both.';
    END IF;
    UPDATE wasend.whatsapp_numbers w
       SET access_token = coalesce(wasend_update_number.access_token, w.access_token),
           max_send_rate_per_sec = coalesce(wasend_update_number.max_send_rate_per_sec,
                                            w.max_send_rate_per_sec),
           updated_at = now()
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_update_number(bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_update_number(bigint, text, integer) TO wasend_admin;

-- Stop every campaign of a number from sending until it is resumed
-- (wasend_admin).
CREATE FUNCTION wasend_pause_number(number_id bigint, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    n := wasend._number_for_update(number_id);
    UPDATE wasend.whatsapp_numbers w
       SET status = 'paused', paused_until = NULL, updated_at = now(),
           pause_reason = coalesce(reason, 'paused by ' || session_user)
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_pause_number(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_pause_number(bigint, text) TO wasend_admin;

-- Resume a paused number, optionally with a new token (wasend_admin).
-- Takes a token (see wasend_add_number).
CREATE FUNCTION wasend_resume_number(number_id bigint, access_token text DEFAULT NULL)
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
    UPDATE wasend.whatsapp_numbers w
       SET status = 'active', pause_reason = NULL, paused_until = NULL, updated_at = now(),
           access_token = coalesce(wasend_resume_number.access_token, w.access_token)
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_resume_number(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_resume_number(bigint, text) TO wasend_admin;

-- A campaign in draft (wasend_operator).
CREATE FUNCTION wasend_create_campaign(name text, number_id bigint, message jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the campaign a name you will recognize in wasend.campaign_progress.';
    END IF;
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wasend.whatsapp_numbers n WHERE n.id = number_id) THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.';
    END IF;
    PERFORM wasend._check_message(message, 'campaign message');
    INSERT INTO wasend.campaigns (name, number_id, message)
    VALUES (name, number_id, message)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend_create_campaign(text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_create_campaign(text, bigint, jsonb) TO wasend_operator;

-- Queue recipients, with optional per-recipient payloads; returns the rows
-- added (wasend_operator).
CREATE FUNCTION wasend_enqueue(campaign_id bigint, recipients text[],
                               payloads jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    added bigint;
    dup text;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    IF recipients IS NULL THEN
        RAISE EXCEPTION 'recipients must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass an array of phone numbers, e.g. ARRAY[''15551234567''].';
    END IF;
    IF array_ndims(recipients) > 1 THEN
        RAISE EXCEPTION 'recipients must be a one-dimensional array'
            USING ERRCODE = 'array_subscript_error',
                  HINT = 'Pass an array of phone numbers, e.g. ARRAY[''15551234567''].';
    END IF;
    IF payloads IS NOT NULL AND
       coalesce(array_length(payloads, 1), 0) <> coalesce(array_length(recipients, 1), 0) THEN
        RAISE EXCEPTION 'payloads has % elements but recipients has %',
                        coalesce(array_length(payloads, 1), 0),
                        coalesce(array_length(recipients, 1), 0)
            USING ERRCODE = 'array_subscript_error',
                  HINT = 'Give one payload per recipient (NULL for the campaign''s message), or no payloads at all.';
    END IF;
    SELECT c.status INTO st FROM wasend.campaigns c
     WHERE c.id = wasend_enqueue.campaign_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Create it first with wasend_create_campaign().';
    END IF;
    IF st IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot add recipients to campaign %: it is %', campaign_id, st
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;

    SELECT x.r INTO dup
      FROM (SELECT wasend._normalize_recipient(u) AS r FROM unnest(recipients) u) x
     GROUP BY x.r HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'recipient "%" appears more than once in this call', dup
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Numbers are compared without their leading "+".',
                  HINT = 'Pass each recipient once (e.g. SELECT DISTINCT); recipients already queued in the campaign are skipped.';
    END IF;

    INSERT INTO wasend.send_queue (campaign_id, recipient, payload)
    SELECT wasend_enqueue.campaign_id, r.recipient, p.payload
      FROM unnest(recipients) WITH ORDINALITY AS r(recipient, i)
      LEFT JOIN unnest(payloads) WITH ORDINALITY AS p(payload, i) USING (i)
     ORDER BY r.i
    ON CONFLICT ON CONSTRAINT send_queue_campaign_id_recipient_key DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;
REVOKE ALL ON FUNCTION wasend_enqueue(bigint, text[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_enqueue(bigint, text[], jsonb[]) TO wasend_operator;

-- draft -> running, or scheduled if start_at is in the future
-- (wasend_operator).
CREATE FUNCTION wasend_start_campaign(campaign_id bigint,
                                      start_at timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n record;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF start_at IS NULL THEN
        RAISE EXCEPTION 'start_at must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Omit it to start now, or give a time to schedule the campaign.';
    END IF;
    IF c.status = 'running' THEN
        RAISE NOTICE 'campaign % is already running', campaign_id;
        RETURN;
    END IF;
    IF c.status = 'paused' THEN
        RAISE EXCEPTION 'campaign % is paused', campaign_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Use wasend_resume_campaign() to continue it.';
    END IF;
    IF c.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot start campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;
    SELECT * INTO n FROM wasend.whatsapp_numbers WHERE id = c.number_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot start campaign %: its number % does not exist', campaign_id, c.number_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register a number with wasend_add_number() and create the campaign on it.';
    END IF;
    IF n.status <> 'active' THEN
        RAISE NOTICE 'number % is paused (%); campaign % sends once the number is active again',
                     n.phone_number_id, coalesce(n.pause_reason, 'no reason given'), campaign_id;
    END IF;

    UPDATE wasend.campaigns
       SET status = CASE WHEN wasend_start_campaign.start_at > now() THEN 'scheduled' ELSE 'running' END,
           start_at = wasend_start_campaign.start_at,
           started_at = CASE WHEN wasend_start_campaign.start_at > now() THEN NULL ELSE now() END,
           pause_reason = NULL,
           updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_start_campaign(bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_start_campaign(bigint, timestamptz) TO wasend_operator;

-- running/scheduled -> paused (wasend_operator).
CREATE FUNCTION wasend_pause_campaign(campaign_id bigint) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status = 'paused' THEN
        RAISE NOTICE 'campaign % is already paused', campaign_id;
        RETURN;
    END IF;
    IF c.status NOT IN ('running', 'scheduled') THEN
        RAISE EXCEPTION 'cannot pause campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only a running or scheduled campaign can be paused.';
    END IF;
    UPDATE wasend.campaigns
       SET status = 'paused', paused_at = now(), pause_reason = 'paused by ' || session_user,
           updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_pause_campaign(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_pause_campaign(bigint) TO wasend_operator;

-- paused -> running, or back to scheduled (wasend_operator).
CREATE FUNCTION wasend_resume_campaign(campaign_id bigint) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status IN ('running', 'scheduled') THEN
        RAISE NOTICE 'campaign % is already %', campaign_id, c.status;
        RETURN;
    END IF;
    IF c.status <> 'paused' THEN
        RAISE EXCEPTION 'cannot resume campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE c.status
                         WHEN 'draft' THEN 'Use wasend_start_campaign() to start it.'
                         ELSE 'Only a paused campaign can be resumed; create a new campaign to send again.' END;
    END IF;
    UPDATE wasend.campaigns
       SET status = CASE WHEN c.start_at > now() THEN 'scheduled' ELSE 'running' END,
           started_at = coalesce(started_at, CASE WHEN c.start_at > now() THEN NULL ELSE now() END),
           pause_reason = NULL, paused_at = NULL, updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_resume_campaign(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_resume_campaign(bigint) TO wasend_operator;

-- -> cancelled; returns the rows cancelled at once (wasend_operator).
CREATE FUNCTION wasend_cancel_campaign(campaign_id bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n bigint;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot cancel campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only a campaign that has not finished can be cancelled.';
    END IF;
    UPDATE wasend.send_queue q
       SET status = 'cancelled'
     WHERE q.campaign_id = wasend_cancel_campaign.campaign_id AND q.status = 'ready'
       AND q.sent_at IS NULL AND q.failed_at IS NULL;   -- send_queue_ready_idx
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE wasend.campaigns
       SET status = 'cancelled', cancelled_at = now(), updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend_cancel_campaign(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_cancel_campaign(bigint) TO wasend_operator;

-- Queue a campaign's retryable failures again; a completed campaign runs
-- again (wasend_operator).
CREATE FUNCTION wasend_retry_failed(campaign_id bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n bigint;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status = 'cancelled' THEN
        RAISE EXCEPTION 'cannot retry campaign %: it is cancelled', campaign_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;
    -- retryable: the error's policy is retry (attempts ran out), or the
    -- outcome was unknown after a sender stopped
    UPDATE wasend.send_queue q
       SET status = 'ready', attempts = 0, next_attempt_at = now(), failed_at = NULL
     WHERE q.campaign_id = wasend_retry_failed.campaign_id AND q.status = 'failed'
       AND (q.last_error_class = 'uncertain'
            OR coalesce((SELECT p.action FROM wasend.error_policy p
                          WHERE p.code = coalesce(q.last_error_code::text, q.last_error_class)),
                        (SELECT p.action FROM wasend.error_policy p WHERE p.code = '*')) = 'retry');
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND c.status = 'completed' THEN
        UPDATE wasend.campaigns
           SET status = 'running', completed_at = NULL, updated_at = now()
         WHERE id = campaign_id;
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend_retry_failed(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_retry_failed(bigint) TO wasend_operator;

-- ---------------------------------------------------------------------
-- Webhooks
-- ---------------------------------------------------------------------

-- Raise an error unless signature is "sha256=" || hex HMAC-SHA256(body,
-- app secret); the secret comes from the file wasend.app_secret_file
-- names (C).  Called by wasend_ingest_webhook only.
CREATE FUNCTION wasend._verify_signature(body text, signature text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_verify_signature'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wasend._verify_signature(text, text) IS
'internal: raise an error unless signature is "sha256=" || hex HMAC-SHA256(body, the app secret in wasend.app_secret_file)';
REVOKE ALL ON FUNCTION wasend._verify_signature(text, text) FROM PUBLIC;

-- Apply the statuses of one payload: one set-based UPDATE, statuses whose
-- wamid is unknown kept aside, recipients whose message failed with
-- 131050 / 131026 suppressed.  Returns {applied, ignored, pending}.
--
-- One statement, no temporary table: the statuses are parsed once, in a
-- materialized CTE, and every step reads that.  (0.1.0 kept them in a temp
-- table it created "if not exists" and then truncated and filled, as
-- superuser; an operator's own temp table of that name, with a trigger,
-- made the operator a superuser.)  The error title is stored through
-- wasend._redact.  Runs as its caller: wasend_ingest_webhook (as the
-- owner), the webhook worker and the senders.
CREATE FUNCTION wasend._apply_statuses(st jsonb) RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res jsonb;
BEGIN
    WITH s AS MATERIALIZED (
        -- each status once: known says its wamid is on a row
        SELECT x ->> 'id' AS wamid, x ->> 'status' AS status,
               wasend._status_rank(x ->> 'status') AS rnk,
               to_timestamp((x ->> 'timestamp')::double precision) AS at,
               CASE WHEN jsonb_typeof(x #> '{errors,0,code}') = 'number'
                    THEN (x #>> '{errors,0,code}')::numeric::int END AS code,
               wasend._redact(x #>> '{errors,0,title}') AS title,
               x ->> 'recipient_id' AS recipient,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = x ->> 'id') AS known
          FROM jsonb_array_elements(st) x
         WHERE jsonb_typeof(x -> 'id') = 'string' AND jsonb_typeof(x -> 'status') = 'string'),
    best AS (
        -- per wamid, the furthest status of this payload
        SELECT DISTINCT ON (s.wamid) s.*
          FROM s
         WHERE s.known AND s.rnk > 0
         ORDER BY s.wamid, s.rnk DESC, s.at DESC),
    upd AS (
        UPDATE wasend.send_queue q
           SET status = b.status,
               delivered_at = CASE WHEN b.rnk >= 3 THEN coalesce(q.delivered_at, b.at)
                                   ELSE q.delivered_at END,
               read_at = CASE WHEN b.status = 'read' THEN coalesce(q.read_at, b.at) ELSE q.read_at END,
               failed_at = CASE WHEN b.status = 'failed' THEN b.at ELSE q.failed_at END,
               last_error_code = CASE WHEN b.status = 'failed' THEN b.code ELSE q.last_error_code END,
               last_error_class = CASE WHEN b.status = 'failed' THEN 'api' ELSE q.last_error_class END,
               last_error = CASE WHEN b.status = 'failed' THEN b.title ELSE q.last_error END
          FROM best b
         WHERE q.wa_message_id = b.wamid
           AND b.rnk > wasend._status_rank(q.status)
        RETURNING q.recipient, b.status, b.code),
    sup AS (
        INSERT INTO wasend.suppressions (recipient, reason)
        SELECT DISTINCT ON (u.recipient) u.recipient, format('message failed with %s', u.code)
          FROM upd u
         WHERE u.status = 'failed' AND u.code IN (131050, 131026)
        ON CONFLICT DO NOTHING),
    pend AS (
        INSERT INTO wasend.pending_statuses (wa_message_id, status, at, error_code, error_title, recipient)
        SELECT s.wamid, s.status, s.at, s.code, s.title, s.recipient
          FROM s
         WHERE NOT s.known
        ON CONFLICT DO NOTHING)
    SELECT jsonb_build_object(
               'applied', (SELECT count(*) FROM upd),
               'ignored', (SELECT count(*) FROM s WHERE s.known) - (SELECT count(*) FROM upd),
               'pending', (SELECT count(*) FROM s WHERE NOT s.known))
      INTO res;
    RETURN res;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_statuses(jsonb) FROM PUBLIC;

-- Apply the statuses kept aside whose wamid has appeared since (called by
-- the senders every second and by every ingest).  Runs as its caller.
CREATE FUNCTION wasend._apply_pending_statuses() RETURNS bigint
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
         USING wasend.send_queue q
         WHERE q.wa_message_id = p.wa_message_id
        RETURNING p.*),
    expired AS (
        -- statuses of messages wasend never sent do not wait forever
        DELETE FROM wasend.pending_statuses p WHERE p.received_at < now() - interval '7 days')
    SELECT jsonb_agg(jsonb_build_object('id', wa_message_id, 'status', status,
                                        'timestamp', extract(epoch FROM at),
                                        'recipient_id', recipient,
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
REVOKE ALL ON FUNCTION wasend._apply_pending_statuses() FROM PUBLIC;

-- The body of wasend_ingest_webhook once the signature is checked; the
-- webhook worker calls it for payloads it verified itself.  Runs as its
-- caller.  Inbound messages are stored as the user wrote them (they are
-- a customer's words, not an error of Meta's): nothing is redacted there.
CREATE FUNCTION wasend._ingest_verified(raw_body text) RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload jsonb;
    res jsonb;
    n_msgs bigint;
    n_new bigint;
    n_stop bigint;
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

    PERFORM wasend._apply_pending_statuses();
    res := wasend._apply_statuses(coalesce(
        (SELECT jsonb_agg(x) FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.statuses[*]') x),
        '[]'));

    SELECT array_agg(upper(btrim(k))) INTO keywords
      FROM unnest(string_to_array(current_setting('wasend.stop_keywords'), ',')) k;
    WITH m AS (
        SELECT v #>> '{metadata,phone_number_id}' AS pnid, x AS msg
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') v
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(v->'messages', '[]')) x
         WHERE jsonb_typeof(x->'id') = 'string' AND jsonb_typeof(x->'from') = 'string'),
    ins AS (
        INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body, sent_at, raw)
        SELECT msg->>'id', ltrim(msg->>'from', '+'), pnid, msg->>'type',
               coalesce(msg #>> '{text,body}', msg #>> '{button,text}',
                        msg #>> '{interactive,button_reply,title}',
                        msg #>> '{interactive,list_reply,title}'),
               to_timestamp((msg->>'timestamp')::double precision), msg
          FROM m
        ON CONFLICT (wa_message_id) DO NOTHING
        RETURNING from_number, body),
    stop AS (
        INSERT INTO wasend.suppressions (recipient, reason)
        SELECT DISTINCT from_number, 'replied ' || upper(btrim(body))
          FROM ins WHERE upper(btrim(body)) = ANY (keywords)
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins), (SELECT count(*) FROM stop)
      INTO n_msgs, n_new, n_stop;

    RETURN jsonb_build_object(
        'statuses_applied', res->'applied',
        'statuses_ignored', res->'ignored',
        'statuses_pending', res->'pending',
        'messages_stored', n_new,
        'messages_duplicate', n_msgs - n_new,
        'recipients_suppressed', n_stop);
END
$$;
REVOKE ALL ON FUNCTION wasend._ingest_verified(text) FROM PUBLIC;

-- Apply one Meta webhook POST whose X-Hub-Signature-256 value is
-- signature (wasend_operator: for a service that receives the webhooks
-- itself).
CREATE FUNCTION wasend_ingest_webhook(body text, signature text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wasend._verify_signature(body, signature);
    RETURN wasend._ingest_verified(body);
END
$$;
REVOKE ALL ON FUNCTION wasend_ingest_webhook(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_ingest_webhook(text, text) TO wasend_operator;

-- One row per sender, from shared memory (C; wasend_viewer).
CREATE FUNCTION wasend_worker_stats(
    OUT sender integer, OUT pid integer, OUT in_flight integer, OUT held integer,
    OUT sent bigint, OUT failed bigint,
    OUT connections_opened bigint, OUT connections_reused bigint,
    OUT mean_latency_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_worker_stats() TO wasend_viewer;

-- ---------------------------------------------------------------------
-- Progress
--
-- A view's functions and operators are bound when it is created, with
-- CREATE EXTENSION's search_path (the extension's schema, public by
-- default): so every function is named with pg_catalog, and every
-- operator has operands of exactly the types of a pg_catalog operator, so
-- that no function or operator someone put in public first can be a
-- better match.
-- ---------------------------------------------------------------------

CREATE VIEW wasend.campaign_progress AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       coalesce(c.pause_reason, CASE WHEN n.status <> 'active' THEN 'number paused: ' || coalesce(n.pause_reason, '') END) AS pause_reason,
       n.phone_number_id,
       coalesce(s.total, 0) AS total,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.sending, 0) AS sending,
       coalesce(s.sent, 0) AS sent,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(s.read, 0) AS read,
       coalesce(s.failed, 0) AS failed,
       coalesce(s.cancelled, 0) AS cancelled,
       coalesce(s.uncertain, 0) AS uncertain,
       CASE WHEN coalesce(s.total, 0) = 0 THEN 0
            ELSE pg_catalog.round(100.0 * (s.total - s.ready - s.sending)::numeric / s.total::numeric, 1) END AS percent_done,
       pg_catalog.round(coalesce(s.recent, 0)::numeric / r.window_s, 1) AS rate_per_sec,
       CASE WHEN coalesce(s.recent, 0) > 0 AND s.ready + s.sending > 0
            THEN pg_catalog.make_interval(secs => pg_catalog.round((s.ready + s.sending)::numeric / (s.recent::numeric / r.window_s))::double precision)
       END AS eta,
       e.errors_by_code
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS total,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready') AS ready,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sending') AS sending,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sent') AS sent,
               pg_catalog.count(*) FILTER (WHERE q.status = 'delivered') AS delivered,
               pg_catalog.count(*) FILTER (WHERE q.status = 'read') AS read,
               pg_catalog.count(*) FILTER (WHERE q.status = 'failed') AS failed,
               pg_catalog.count(*) FILTER (WHERE q.status = 'cancelled') AS cancelled,
               pg_catalog.count(*) FILTER (WHERE q.uncertain) AS uncertain,
               pg_catalog.count(*) FILTER (WHERE coalesce(q.sent_at, q.failed_at) > pg_catalog.clock_timestamp() - interval '10 s') AS recent
          FROM wasend.send_queue q WHERE q.campaign_id = c.id) s ON true
  -- the rate is measured over the last 10 s, or since the start if sooner
  CROSS JOIN LATERAL (
        SELECT greatest(least(10.0, extract(epoch FROM pg_catalog.clock_timestamp() - c.started_at)), 1.0) AS window_s) r
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(code, cnt) AS errors_by_code
          FROM (SELECT q.last_error_code::text AS code, pg_catalog.count(*) AS cnt
                  FROM wasend.send_queue q
                 WHERE q.campaign_id = c.id AND q.status = 'failed'
                 GROUP BY 1) x
         WHERE code IS NOT NULL) e ON true;
COMMENT ON VIEW wasend.campaign_progress IS
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code';
REVOKE ALL ON wasend.campaign_progress FROM PUBLIC;
GRANT SELECT ON wasend.campaign_progress TO wasend_viewer;
