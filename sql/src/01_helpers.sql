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
-- phone number is given in international format: its country calling
-- code first, 7-15 digits in all, with an optional leading +; it is
-- stored without the +, so that "+15551234567" and "15551234567" are one
-- recipient.  A BSUID is Meta's name of a user for one business portfolio:
-- a two-letter ISO 3166 country, a dot, and up to 128 letters and digits,
-- with "ENT." after the country for a parent BSUID (US.13491208655302741918,
-- US.ENT.11815799212886844830); it is kept exactly as given, as Meta asks.
--
-- The one judge of a recipient: every path that queues, sends, test-sends
-- or counts recipients (the send_queue trigger, wasend_enqueue,
-- wasend_send, wasend_test_send, wasend_dry_run, wasend_check_recipient)
-- asks it.  Returns the recipient as wasend stores it, or why it is not
-- one and how to fix it.  Refused: a leading 00 or 0 (an international or
-- a national prefix: which one needs a country, see
-- wasend.wasend_normalize_phone), anything but digits, a length outside
-- 7-15, and a number or BSUID whose country calling code or country
-- wasend.country_zones does not know (Meta could not deliver to it).  A
-- pure check (stable: it reads wasend.country_zones); it runs as its
-- caller.  Written in C (src/recipient.c), since every row queued
-- passes here: a well-formed number is judged without a query, from this
-- backend's copy of the table's calling codes and countries, which a
-- change of the table drops (wasend._country_zones_changed).
CREATE FUNCTION wasend._recipient_verdict(r text, OUT normalized text, OUT problem text, OUT hint text)
AS 'MODULE_PATHNAME', 'wasend_recipient_verdict'
LANGUAGE C STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._recipient_verdict(text) FROM PUBLIC;

-- A recipient as wasend stores it, or an error saying why it is not one
-- (wasend._recipient_verdict).  A pure check: it runs as its caller.
CREATE FUNCTION wasend._normalize_recipient(recipient text) RETURNS text
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v record;
BEGIN
    IF recipient IS NULL THEN
        RAISE EXCEPTION 'recipient must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the phone number in international format, e.g. 15551234567, or the user''s BSUID, e.g. US.13491208655302741918.';
    END IF;
    v := wasend._recipient_verdict(recipient);
    IF v.problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid recipient "%": %', left(recipient, 200), v.problem
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A recipient is a phone number in international format (country calling code first, 7 to 15 digits, an optional leading "+") or a business-scoped user ID (two capital letters, a dot, and up to 128 letters and digits, "ENT." after the dot for a parent BSUID).',
                  HINT = v.hint;
    END IF;
    RETURN v.normalized;
END
$$;
REVOKE ALL ON FUNCTION wasend._normalize_recipient(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._normalize_recipient(text) TO wasend_admin;

-- Is an invalid recipient skipped (wasend.invalid_recipients = skip)
-- rather than an error?  Without the library loaded the setting is
-- unknown: error.
CREATE FUNCTION wasend._skip_invalid_recipients() RETURNS boolean
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(current_setting('wasend.invalid_recipients', true), 'error') = 'skip'
$$;
REVOKE ALL ON FUNCTION wasend._skip_invalid_recipients() FROM PUBLIC;

-- The country calling code of a country: an ISO 3166 code (DE, case does
-- not matter) or a calling code in digits (49, +49).  A row of
-- wasend.country_zones may be a longer prefix inside another country's
-- plan (CA 1204, KZ 76, AX 35818): the calling code is the shortest
-- prefix of the country's shortest row that is a row's code (1, 7, 358),
-- else that row's first three digits.  An
-- error for a country wasend.country_zones does not list.
CREATE FUNCTION wasend._calling_code(country_or_code text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cc text;
BEGIN
    IF country_or_code ~ '^\+?[0-9]{1,3}$' THEN
        cc := ltrim(country_or_code, '+');
        IF EXISTS (SELECT 1 FROM wasend.country_zones z WHERE z.calling_code = cc) THEN
            RETURN cc;
        END IF;
    ELSIF country_or_code ~ '^[A-Za-z]{2}$' THEN
        SELECT coalesce((SELECT p.calling_code FROM wasend.country_zones p
                          WHERE p.calling_code IN (left(z.calling_code, 1), left(z.calling_code, 2),
                                                   left(z.calling_code, 3))
                          ORDER BY length(p.calling_code) LIMIT 1),
                        left(z.calling_code, 3))
          INTO cc
          FROM wasend.country_zones z
         WHERE z.country = upper(country_or_code)
         ORDER BY length(z.calling_code), z.calling_code LIMIT 1;
        IF cc IS NOT NULL THEN
            RETURN cc;
        END IF;
    END IF;
    RAISE EXCEPTION 'unknown default country "%"', left(coalesce(country_or_code, 'NULL'), 200)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Give an ISO 3166 country code that wasend.country_zones lists (e.g. DE) or its calling code in digits (e.g. 49).';
END
$$;
REVOKE ALL ON FUNCTION wasend._calling_code(text) FROM PUBLIC;

-- A number written as in a country (an ISO 3166 code, or a calling code
-- in digits: its main country) made international by Google's
-- libphonenumber (C, src/phone.cpp), which knows each country's trunk
-- prefix and the lengths of its numbers: normalized is its digits in
-- E.164 without the "+", or problem says why not.  A number is taken
-- when its length is one its country's numbers have (libphonenumber's
-- IsPossibleNumber), not only when its range is assigned: fictional
-- numbers (555 ones) pass.
CREATE FUNCTION wasend._phone_parse(phone text, country text, OUT normalized text, OUT problem text)
AS 'MODULE_PATHNAME', 'wasend_phone_parse_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._phone_parse(text, text) FROM PUBLIC;

-- A phone number in any common written form, made into a recipient as
-- wasend stores it, or why it cannot be (wasend._recipient_verdict then
-- judges the result).  An international number (a leading + or 00, or
-- digits without a default country) keeps its digits: spaces, dashes,
-- dots, slashes and brackets are dropped ("+49 (0)151" drops the "(0)").
-- With a default country, digits that start with its calling code are
-- international too (491512345678 and DE); any other number is a
-- national one, which libphonenumber makes international
-- (wasend._phone_parse: 01512345678 and DE is 491512345678, Italy keeps
-- its 0, Hungary's trunk prefix is 06, a North American number may start
-- with its trunk prefix 1 but never with 0).  A national number without
-- a default country is not guessed.  A BSUID is kept as given.
CREATE FUNCTION wasend._normalize_phone(phone text, default_country text,
                                        OUT normalized text, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text;
    cc text;
    p record;
BEGIN
    IF default_country IS NOT NULL THEN
        cc := wasend._calling_code(default_country);
    END IF;
    IF phone IS NULL OR phone ~ '^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$' THEN
        SELECT * INTO normalized, problem, hint FROM wasend._recipient_verdict(phone);
        RETURN;
    END IF;
    s := regexp_replace(btrim(phone), '^(\+|00)\s*([0-9]{1,3})[\s.-]*\(0\)', '\1\2');
    s := regexp_replace(s, '[\s./()-]', '', 'g');
    IF left(s, 1) = '+' THEN
        s := substr(s, 2);
    ELSIF left(s, 2) = '00' THEN
        s := substr(s, 3);
    ELSIF cc IS NOT NULL AND s ~ '^[0-9]+$' AND NOT (s ~ '^[1-9]' AND starts_with(s, cc)) THEN
        p := wasend._phone_parse(phone,
                                 CASE WHEN default_country ~ '^[A-Za-z]{2}$' THEN upper(default_country) ELSE cc END);
        IF p.problem IS NOT NULL THEN
            problem := p.problem;
            hint := 'Check the number and its country; a number in international format (+ and its country code) is taken as it is.';
            RETURN;
        END IF;
        s := p.normalized;
    END IF;
    SELECT * INTO normalized, problem, hint FROM wasend._recipient_verdict(s);
END
$$;
REVOKE ALL ON FUNCTION wasend._normalize_phone(text, text) FROM PUBLIC;

-- A message is a Graph API message object (without messaging_product and
-- to): a JSON object whose "type" is one Meta documents, with the fields
-- that type needs (Meta refuses the message without them, and a typo in
-- the type would also make a template campaign a service one):
--   text: text.body; template: template.name and template.language.code;
--   image, video, document, audio, sticker: <type>.link or <type>.id;
--   interactive: interactive.type; location: location.latitude and
--   location.longitude; reaction: reaction.message_id and reaction.emoji;
--   contacts: a non-empty contacts array.
-- Every message wasend takes (a campaign's, a queue row's payload,
-- wasend_send's) passes here.  A pure validator: it runs as its caller.
CREATE FUNCTION wasend._check_message(message jsonb, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
    o jsonb;
    missing text;
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
    t := message ->> 'type';
    IF t NOT IN ('text', 'template', 'image', 'video', 'document', 'audio', 'sticker',
                 'interactive', 'location', 'reaction', 'contacts') THEN
        RAISE EXCEPTION '% has an unknown type "%"', what, left(t, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The message types are text, template, image, video, document, audio, sticker, interactive, location, reaction and contacts.';
    END IF;
    o := message -> t;
    IF t = 'contacts' THEN
        IF jsonb_typeof(o) IS DISTINCT FROM 'array' OR jsonb_array_length(o) = 0 THEN
            missing := 'contacts (a non-empty array)';
        END IF;
    ELSIF jsonb_typeof(o) IS DISTINCT FROM 'object' THEN
        missing := format('%s (an object)', t);
    ELSIF t = 'text' THEN
        IF jsonb_typeof(o -> 'body') IS DISTINCT FROM 'string' THEN
            missing := 'text.body';
        END IF;
    ELSIF t = 'template' THEN
        IF jsonb_typeof(o -> 'name') IS DISTINCT FROM 'string' OR o ->> 'name' = '' THEN
            missing := 'template.name';
        ELSIF jsonb_typeof(o #> '{language,code}') IS DISTINCT FROM 'string' OR o #>> '{language,code}' = '' THEN
            missing := 'template.language.code';
        END IF;
    ELSIF t IN ('image', 'video', 'document', 'audio', 'sticker') THEN
        IF jsonb_typeof(o -> 'link') IS DISTINCT FROM 'string' AND jsonb_typeof(o -> 'id') IS DISTINCT FROM 'string' THEN
            missing := format('%s.link or %s.id', t, t);
        END IF;
    ELSIF t = 'interactive' THEN
        IF jsonb_typeof(o -> 'type') IS DISTINCT FROM 'string' THEN
            missing := 'interactive.type';
        END IF;
    ELSIF t = 'location' THEN
        IF coalesce(jsonb_typeof(o -> 'latitude'), 'null') NOT IN ('number', 'string') THEN
            missing := 'location.latitude';
        ELSIF coalesce(jsonb_typeof(o -> 'longitude'), 'null') NOT IN ('number', 'string') THEN
            missing := 'location.longitude';
        END IF;
    ELSIF t = 'reaction' THEN
        IF jsonb_typeof(o -> 'message_id') IS DISTINCT FROM 'string' THEN
            missing := 'reaction.message_id';
        ELSIF jsonb_typeof(o -> 'emoji') IS DISTINCT FROM 'string' THEN
            missing := 'reaction.emoji';
        END IF;
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION '% of type % has no %', what, t, missing
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE t
                      WHEN 'text' THEN 'E.g. {"type":"text","text":{"body":"Hello"}}.'
                      WHEN 'template' THEN 'E.g. {"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}.'
                      WHEN 'interactive' THEN 'E.g. {"type":"interactive","interactive":{"type":"button","body":{"text":"..."},"action":{...}}}.'
                      WHEN 'location' THEN 'E.g. {"type":"location","location":{"latitude":52.52,"longitude":13.40}}.'
                      WHEN 'reaction' THEN 'E.g. {"type":"reaction","reaction":{"message_id":"wamid...","emoji":"..."}}.'
                      WHEN 'contacts' THEN 'E.g. {"type":"contacts","contacts":[{"name":{"formatted_name":"Ana"},"phones":[{"phone":"+15551234567"}]}]}.'
                      ELSE format('E.g. {"type":"%s","%s":{"link":"https://..."}}, or "id" with a media id instead of "link".', t, t) END;
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
