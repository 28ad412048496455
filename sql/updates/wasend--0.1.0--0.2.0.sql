/*
 * wasend--0.1.0--0.2.0.sql — ALTER EXTENSION wasend UPDATE from 0.1.0 to
 * 0.2.0.  It brings a 0.1.0 install to exactly the schema and grants of a
 * fresh 0.2.0 install (test/t/020_upgrade.pl compares the two);
 * wasend--0.2.0.sql explains each object.
 *
 * Settings: the 0.2.0 library no longer has wasend.app_secret and
 * wasend.webhook_verify_token.  Secrets are never settings any more: put
 * the Meta app secret and the webhook verify token each in a file owned by
 * the server's operating system user and not readable by others (like
 * ssl_key_file), and name the files in wasend.app_secret_file and
 * wasend.webhook_verify_token_file (superuser only, reload).  Remove the
 * old names from postgresql.conf and postgresql.auto.conf (ALTER SYSTEM
 * RESET wasend.app_secret): until the new settings are set, webhook
 * signatures cannot be verified and requests carry no appsecret_proof.
 *
 * What this script changes:
 *	- every function is replaced, declaring where it is defined whether it
 *	  runs as its owner, and pinning search_path = pg_catalog, pg_temp
 *	  (0.1.0 set both afterwards, in a loop, and not for the C functions);
 *	  the internal helpers now run as their caller;
 *	- wasend._apply_statuses no longer uses a temporary table (an
 *	  operator's own temp table of that name, with a trigger, ran as
 *	  superuser);
 *	- new wasend._redact; text already stored that came from Meta is
 *	  redacted;
 *	- wasend.send_queue.claimed_by becomes bigint, a sender's claim token
 *	  (this rewrites the table);
 *	- wasend.error_policy.origin says which rows users added or edited, and
 *	  a trigger keeps it up to date; pg_dump also dumps those rows, the
 *	  pending statuses and the identity sequences;
 *	- wasend_admin loses TRIGGER, TRUNCATE and REFERENCES on every table,
 *	  and what else it did not need; wasend_operator may insert only
 *	  campaign_id, recipient and payload into wasend.send_queue;
 *	- the progress view names its functions with pg_catalog.
 */

\echo Use "ALTER EXTENSION wasend UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Functions: the definitions of wasend--0.2.0.sql.  CREATE OR REPLACE
-- resets SECURITY DEFINER / INVOKER and the SET clauses to what each
-- definition says, and keeps each function's privileges.
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION wasend._wake_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'wasend_wake_at_commit'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION wasend._normalize_recipient(recipient text) RETURNS text
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

CREATE OR REPLACE FUNCTION wasend._check_message(message jsonb, what text) RETURNS void
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

CREATE FUNCTION wasend._redact(msg text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SECURITY INVOKER
AS $$
    SELECT pg_catalog.regexp_replace(msg, 'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g')
$$;

CREATE OR REPLACE FUNCTION wasend._status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE status WHEN 'sending' THEN 0 WHEN 'sent' THEN 1 WHEN 'failed' THEN 2
                       WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE -1 END
$$;

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

CREATE OR REPLACE FUNCTION wasend._send_queue_check() RETURNS trigger
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

CREATE OR REPLACE FUNCTION wasend._send_queue_wake() RETURNS trigger
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

CREATE OR REPLACE FUNCTION wasend._campaign_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wasend._check_message(NEW.message, 'campaign message');
    RETURN NEW;
END
$$;

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

CREATE OR REPLACE FUNCTION wasend._campaign_for_update(campaign_id bigint)
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

CREATE OR REPLACE FUNCTION wasend._number_for_update(number_id bigint)
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

CREATE OR REPLACE FUNCTION wasend_add_number(phone_number_id text, access_token text,
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

CREATE OR REPLACE FUNCTION wasend_update_number(number_id bigint, access_token text DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION wasend_pause_number(number_id bigint, reason text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION wasend_resume_number(number_id bigint, access_token text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION wasend_create_campaign(name text, number_id bigint, message jsonb)
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

CREATE OR REPLACE FUNCTION wasend_enqueue(campaign_id bigint, recipients text[],
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

CREATE OR REPLACE FUNCTION wasend_start_campaign(campaign_id bigint,
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

CREATE OR REPLACE FUNCTION wasend_pause_campaign(campaign_id bigint) RETURNS void
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

CREATE OR REPLACE FUNCTION wasend_resume_campaign(campaign_id bigint) RETURNS void
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

CREATE OR REPLACE FUNCTION wasend_cancel_campaign(campaign_id bigint) RETURNS bigint
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

CREATE OR REPLACE FUNCTION wasend_retry_failed(campaign_id bigint) RETURNS bigint
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

CREATE OR REPLACE FUNCTION wasend._verify_signature(body text, signature text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_verify_signature'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION wasend._apply_statuses(st jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION wasend._apply_pending_statuses() RETURNS bigint
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

CREATE OR REPLACE FUNCTION wasend._ingest_verified(raw_body text) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION wasend_ingest_webhook(body text, signature text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION wasend_worker_stats(
    OUT sender integer, OUT pid integer, OUT in_flight integer, OUT held integer,
    OUT sent bigint, OUT failed bigint,
    OUT connections_opened bigint, OUT connections_reused bigint,
    OUT mean_latency_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION wasend._redact(text) IS
'internal: text with anything shaped like a Meta access token replaced by [redacted token]';
REVOKE ALL ON FUNCTION wasend._redact(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION wasend._error_policy_track() FROM PUBLIC;
COMMENT ON FUNCTION wasend._verify_signature(text, text) IS
'internal: raise an error unless signature is "sha256=" || hex HMAC-SHA256(body, the app secret in wasend.app_secret_file)';

-- ---------------------------------------------------------------------
-- wasend.send_queue.claimed_by: a sender's claim token (bigint).  Text
-- already stored that came from Meta goes through wasend._redact, as 0.2.0
-- stores it.
-- ---------------------------------------------------------------------

ALTER TABLE wasend.send_queue ALTER COLUMN claimed_by TYPE bigint;
COMMENT ON COLUMN wasend.send_queue.claimed_by IS
'while the row is sending: the random 63-bit token of the sender start that claimed it (a new token each time a sender starts); NULL otherwise';

UPDATE wasend.send_queue SET last_error = wasend._redact(last_error)
 WHERE last_error ~ 'EA[A-Za-z0-9]{20,}';
UPDATE wasend.pending_statuses SET error_title = wasend._redact(error_title)
 WHERE error_title ~ 'EA[A-Za-z0-9]{20,}';
UPDATE wasend.whatsapp_numbers SET pause_reason = wasend._redact(pause_reason)
 WHERE pause_reason ~ 'EA[A-Za-z0-9]{20,}';
UPDATE wasend.campaigns SET pause_reason = wasend._redact(pause_reason)
 WHERE pause_reason ~ 'EA[A-Za-z0-9]{20,}';

-- ---------------------------------------------------------------------
-- wasend.error_policy.origin.  An existing row is 'builtin' when it is
-- exactly as 0.1.0 shipped it, 'edited' when its code shipped with other
-- values, 'added' otherwise.  (The column is added without a default,
-- filled, and then given its default, so that the table ends up exactly
-- as in a fresh install.)
-- ---------------------------------------------------------------------

ALTER TABLE wasend.error_policy ADD COLUMN origin text;
WITH shipped (code, action, backoff, backoff_factor, pause_for, slow_down, description) AS (
    VALUES
        ('130429', 'retry', interval '1 second', 1::double precision, NULL::interval, true, 'throughput limit: slow the number down, retry'),
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
        ('*', 'fail', '2 seconds', 2, NULL, false, 'any other error')
    UNION ALL
    SELECT g::text, 'pause_number', interval '2 seconds', 2, NULL, false, 'permission missing'
      FROM pg_catalog.generate_series(200, 299) g)
UPDATE wasend.error_policy p
   SET origin = coalesce(
         (SELECT CASE WHEN ROW(s.action, s.backoff, s.backoff_factor, s.pause_for, s.slow_down, s.description)
                           IS NOT DISTINCT FROM
                           ROW(p.action, p.backoff, p.backoff_factor, p.pause_for, p.slow_down, p.description)
                      THEN 'builtin' ELSE 'edited' END
            FROM shipped s WHERE s.code = p.code),
         'added');
ALTER TABLE wasend.error_policy
    ALTER COLUMN origin SET DEFAULT 'added',
    ALTER COLUMN origin SET NOT NULL,
    ADD CONSTRAINT error_policy_origin_check CHECK (origin IN ('builtin', 'edited', 'added'));
COMMENT ON COLUMN wasend.error_policy.origin IS
'builtin: as the extension ships it; edited: a built-in code changed since; added: a code added.  pg_dump keeps edited and added rows';

CREATE TRIGGER error_policy_track
    BEFORE INSERT OR UPDATE ON wasend.error_policy
    FOR EACH ROW EXECUTE FUNCTION wasend._error_policy_track();

-- ---------------------------------------------------------------------
-- What pg_dump dumps: also the edited and added error policy rows, the
-- pending statuses and the identity sequences.
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('wasend.error_policy', 'WHERE origin <> ''builtin''');
SELECT pg_catalog.pg_extension_config_dump('wasend.pending_statuses', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.whatsapp_numbers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaigns_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.send_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.inbound_messages_id_seq', '');

-- ---------------------------------------------------------------------
-- Privileges: wasend_admin had ALL on every table, view and sequence
-- (TRIGGER, TRUNCATE and REFERENCES included), wasend_operator INSERT on
-- every column of wasend.send_queue.
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA wasend FROM wasend_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA wasend FROM wasend_admin;
REVOKE INSERT ON wasend.send_queue FROM wasend_operator;
GRANT SELECT, INSERT, UPDATE, DELETE ON wasend.whatsapp_numbers TO wasend_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON wasend.campaigns TO wasend_admin;
GRANT INSERT (campaign_id, recipient, payload) ON wasend.send_queue TO wasend_operator;
GRANT DELETE ON wasend.send_queue TO wasend_admin;
GRANT INSERT (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      UPDATE (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      DELETE
    ON wasend.error_policy TO wasend_admin;
GRANT DELETE ON wasend.inbound_messages TO wasend_admin;
GRANT INSERT, UPDATE, DELETE ON wasend.suppressions TO wasend_admin;

-- ---------------------------------------------------------------------
-- Progress
-- ---------------------------------------------------------------------

CREATE OR REPLACE VIEW wasend.campaign_progress AS
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
