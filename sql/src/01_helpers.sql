-- ---------------------------------------------------------------------
-- Internal helpers used by several topics
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

-- Write one line to the server log at LOG level (C), without the
-- statement or the PL/pgSQL context, so that each state change is one
-- line to grep, and never a statement that could carry a token (see
-- wasend._campaign_log, wasend._number_log).  Only their triggers call it.
CREATE FUNCTION wasend._log_line(line text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_log_line'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._log_line(text) FROM PUBLIC;

-- Is this session one of wasend's workers (a sender, the webhook
-- endpoint), rather than a person's session (C)?  The log lines of a
-- state change name the rule that made it in a worker, the user in a
-- person's session.
CREATE FUNCTION wasend._in_worker() RETURNS boolean
AS 'MODULE_PATHNAME', 'wasend_in_worker'
LANGUAGE C STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._in_worker() FROM PUBLIC;

-- The actor of a log line made in a person's session: user "<role>", the
-- role who logged in (session_user), as PostgreSQL quotes names in its
-- messages.
CREATE FUNCTION wasend._log_user() RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'user "' || replace(session_user::text, '"', '""') || '"'
$$;
REVOKE ALL ON FUNCTION wasend._log_user() FROM PUBLIC;

-- Text as one log line: control characters (a newline in an error
-- message Meta sent) become spaces, and it is cut at 1000 characters.
CREATE FUNCTION wasend._log_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT left(regexp_replace(t, '[[:cntrl:]]+', ' ', 'g'), 1000)
$$;
REVOKE ALL ON FUNCTION wasend._log_text(text) FROM PUBLIC;

-- A recipient is a phone number or a business-scoped user ID (BSUID).  A
-- phone number is 7-15 digits with an optional leading +; it is stored
-- without the +, so that "+15551234567" and "15551234567" are one
-- recipient.  A BSUID is Meta's name of a user for one business portfolio:
-- a two-letter ISO 3166 country, a dot, and up to 128 letters and digits,
-- with "ENT." after the country for a parent BSUID (US.13491208655302741918,
-- US.ENT.11815799212886844830); it is kept exactly as given, as Meta asks.
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
                  HINT = 'Give the phone number in international format, e.g. 15551234567, or the user''s BSUID, e.g. US.13491208655302741918.';
    END IF;
    IF recipient ~ '^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$' THEN
        RETURN recipient;
    END IF;
    IF recipient !~ '^\+?[0-9]{7,15}$' THEN
        RAISE EXCEPTION 'invalid recipient "%"', left(recipient, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A recipient is a phone number (7 to 15 digits with an optional leading "+") or a business-scoped user ID (two capital letters, a dot, and up to 128 letters and digits, "ENT." after the dot for a parent BSUID).',
                  HINT = 'Give the phone number in international format without spaces or dashes, e.g. 15551234567, or the BSUID exactly as Meta gave it, e.g. US.13491208655302741918.';
    END IF;
    RETURN ltrim(recipient, '+');
END
$$;
REVOKE ALL ON FUNCTION wasend._normalize_recipient(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._normalize_recipient(text) TO wasend_admin;

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
GRANT EXECUTE ON FUNCTION wasend._check_message(jsonb, text) TO wasend_admin;

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

-- The order of statuses: a row only moves forward.  'held' (accepted,
-- held by Meta for a quality assessment) comes before sent; failed
-- overrides sent and held only.
CREATE FUNCTION wasend._status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE status WHEN 'sending' THEN 0 WHEN 'held' THEN 1 WHEN 'sent' THEN 2
                       WHEN 'failed' THEN 3 WHEN 'delivered' THEN 4 WHEN 'read' THEN 5
                       ELSE -1 END
$$;
REVOKE ALL ON FUNCTION wasend._status_rank(text) FROM PUBLIC;

-- Is zone a time zone name of the server's time zone database?  Not an
-- abbreviation: those depend on the session's timezone_abbreviations,
-- which the caller sets and the senders do not share (src/sql_api.c).
CREATE FUNCTION wasend._is_zone_name(zone text) RETURNS boolean
AS 'MODULE_PATHNAME', 'wasend_is_zone_name'
LANGUAGE C STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._is_zone_name(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._is_zone_name(text) TO wasend_viewer;

-- Raise a clear error unless zone is a time zone name PostgreSQL knows.
-- Every zone a claim uses passed here, so no claim fails on one.
CREATE FUNCTION wasend._check_timezone(zone text, what text) RETURNS void
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF zone IS NULL OR btrim(zone) = '' THEN
        RAISE EXCEPTION '% must not be empty', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an IANA time zone name such as Europe/Berlin, see pg_timezone_names.';
    END IF;
    IF NOT wasend._is_zone_name(zone) THEN
        RAISE EXCEPTION 'unknown time zone "%" (%)', zone, what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an IANA time zone name such as Europe/Berlin or America/Sao_Paulo (see SELECT name FROM pg_timezone_names), not an abbreviation.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._check_timezone(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._check_timezone(text, text) TO wasend_admin;

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
