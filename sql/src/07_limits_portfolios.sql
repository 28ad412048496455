-- ---------------------------------------------------------------------
-- Meta's account limits: portfolios, the 24 h window, quality, templates
-- README: "Meta's account limits".
-- ---------------------------------------------------------------------

-- One row per business portfolio: the lock the claims take before they
-- spend its budget (SKIP LOCKED, so that two senders never spend the same
-- slot and none waits), and the portfolio's limit: the lowest of its
-- numbers' limits (they should agree; the lowest is the safe one), NULL
-- when every number is unlimited.  A number without business_id is a
-- portfolio of its own, "number:<id>".  Kept by a trigger on the numbers;
-- not dumped (a restore's numbers make it again).  When a portfolio's
-- limit rises, its rows waiting for the limit are tried again at once.
CREATE TABLE wasend.portfolios (
    portfolio       text PRIMARY KEY,
    messaging_limit integer,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wasend.portfolios IS
'Business portfolios of the numbers and their messaging limit (the lowest of their numbers''; NULL = unlimited); kept by a trigger';
REVOKE ALL ON wasend.portfolios FROM PUBLIC;
GRANT SELECT ON wasend.portfolios TO wasend_viewer;

-- Unique recipients a portfolio started a message to, and when last: the
-- moving 24 h window of the messaging limit.  Written by the claims of
-- limited portfolios only.
CREATE TABLE wasend.recipient_window (
    portfolio       text NOT NULL,
    recipient       text NOT NULL,
    last_at         timestamptz NOT NULL,
    PRIMARY KEY (portfolio, recipient)
);
CREATE INDEX recipient_window_last_idx ON wasend.recipient_window (portfolio, last_at);
COMMENT ON TABLE wasend.recipient_window IS
'Per portfolio with a messaging limit: each recipient a message was started to, and when last (the 24 h window)';
REVOKE ALL ON wasend.recipient_window FROM PUBLIC;
GRANT SELECT ON wasend.recipient_window TO wasend_viewer;
GRANT DELETE ON wasend.recipient_window TO wasend_admin;

-- Locks the senders take so that claims that must see each other's rows
-- run one after the other: 'frequency_cap', taken by every claim of a
-- marketing campaign while a campaign with a frequency cap runs (see
-- claim_lock in src/queue.sql).  Only the owner can lock a row here.
CREATE TABLE wasend.claim_locks (
    name            text PRIMARY KEY
);
INSERT INTO wasend.claim_locks VALUES ('frequency_cap');
COMMENT ON TABLE wasend.claim_locks IS
'internal: rows the senders lock so that some claims run one after the other';
REVOKE ALL ON wasend.claim_locks FROM PUBLIC;

-- The last status Meta gave each template (message_template_status_update).
CREATE TABLE wasend.templates (
    name            text NOT NULL,
    language        text NOT NULL,
    status          text NOT NULL,
    reason          text,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (name, language)
);
COMMENT ON TABLE wasend.templates IS
'Template statuses from message_template_status_update webhooks (APPROVED, PAUSED, DISABLED, ...)';
REVOKE ALL ON wasend.templates FROM PUBLIC;
GRANT SELECT ON wasend.templates TO wasend_viewer;

-- Recompute the portfolios a number belonged to and belongs to.  Runs as
-- the owner: an admin writes numbers but not portfolios.
CREATE FUNCTION wasend._portfolio_sync() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    old_limit integer;
    new_limit integer;
BEGIN
    FOREACH k IN ARRAY ARRAY[
        CASE WHEN TG_OP <> 'INSERT' THEN coalesce(OLD.business_id, 'number:' || OLD.id::text) END,
        CASE WHEN TG_OP <> 'DELETE' THEN coalesce(NEW.business_id, 'number:' || NEW.id::text) END] LOOP
        CONTINUE WHEN k IS NULL;
        IF EXISTS (SELECT 1 FROM wasend.whatsapp_numbers n
                    WHERE coalesce(n.business_id, 'number:' || n.id::text) = k) THEN
            SELECT p.messaging_limit INTO old_limit FROM wasend.portfolios p WHERE p.portfolio = k;
            SELECT min(n.messaging_limit) INTO new_limit
              FROM wasend.whatsapp_numbers n
             WHERE coalesce(n.business_id, 'number:' || n.id::text) = k;
            INSERT INTO wasend.portfolios AS p (portfolio, messaging_limit)
            VALUES (k, new_limit)
            ON CONFLICT (portfolio) DO UPDATE
               SET messaging_limit = excluded.messaging_limit, updated_at = now()
             WHERE p.messaging_limit IS DISTINCT FROM excluded.messaging_limit;
            IF old_limit IS NULL AND new_limit IS NOT NULL THEN
                -- the portfolio gains a limit: the recipients it started
                -- while it had none (or before 0.3.0) count from now on
                -- (a person once, by their key: wasend._recipient_names)
                INSERT INTO wasend.recipient_window AS r (portfolio, recipient, last_at)
                SELECT k, (wasend._recipient_names(q.recipient))[1], max(coalesce(q.sent_at, q.claimed_at))
                  FROM wasend.send_queue q
                  JOIN wasend.campaigns c ON c.id = q.campaign_id
                  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                 WHERE coalesce(n.business_id, 'number:' || n.id::text) = k
                   AND q.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                   AND coalesce(q.sent_at, q.claimed_at) > now() - interval '24 hours'
                 GROUP BY 2
                ON CONFLICT (portfolio, recipient) DO UPDATE
                   SET last_at = greatest(r.last_at, excluded.last_at);
            END IF;
            IF old_limit IS NOT NULL AND (new_limit IS NULL OR new_limit > old_limit) THEN
                UPDATE wasend.send_queue q
                   SET next_attempt_at = now()
                  FROM wasend.campaigns c
                  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                 WHERE coalesce(n.business_id, 'number:' || n.id::text) = k
                   AND c.status IN ('running', 'paused', 'scheduled')
                   AND q.campaign_id = c.id
                   AND q.sent_at IS NULL AND q.failed_at IS NULL
                   AND q.status = 'ready' AND q.waiting_for = 'messaging_limit'
                   AND q.next_attempt_at > now();
                PERFORM wasend._wake_at_commit();
            END IF;
        ELSE
            DELETE FROM wasend.portfolios p WHERE p.portfolio = k;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._portfolio_sync() FROM PUBLIC;

CREATE TRIGGER portfolio_sync
    AFTER INSERT OR DELETE OR UPDATE OF business_id, messaging_limit ON wasend.whatsapp_numbers
    FOR EACH ROW EXECUTE FUNCTION wasend._portfolio_sync();

-- Pause the running marketing campaigns of a number that follow the
-- quality rule (pause_on_quality), saying why.  Returns how many.  Called
-- when the number's quality turns RED or its tier is lowered.
CREATE FUNCTION wasend._pause_for_quality(number_id bigint, reason text) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE wasend.campaigns c
       SET status = 'paused', paused_at = now(), updated_at = now(),
           pause_rule = 'quality', pause_reason = 'quality: ' || reason
     WHERE c.number_id = _pause_for_quality.number_id AND c.status = 'running'
       AND c.category = 'marketing' AND c.pause_on_quality;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- a campaign paused for its template now waits for quality too: the
    -- template's APPROVED must not resume it
    UPDATE wasend.campaigns c
       SET pause_rule = 'quality', updated_at = now(),
           pause_reason = 'quality: ' || reason || ' (was: ' || coalesce(c.pause_reason, 'template') || ')'
     WHERE c.number_id = _pause_for_quality.number_id AND c.status = 'paused'
       AND c.pause_rule = 'template' AND c.category = 'marketing' AND c.pause_on_quality;
    IF n > 0 THEN
        RAISE LOG 'wasend paused % marketing campaign(s) of number %: %', n, number_id, reason;
        PERFORM wasend._wake_at_commit();
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._pause_for_quality(bigint, text) FROM PUBLIC;

-- Store what the Graph API said of a number's account
-- (GET /{phone-number-id}?fields=whatsapp_business_manager_messaging_limit,
-- quality_rating,health_status,display_phone_number,throughput) and apply
-- its rules: the messaging limit (unless overridden), the throughput level
-- (a number that follows it sends at 1000 a second when HIGH, 80 when
-- STANDARD; any other level leaves its rate), a RED rating or a lowered tier
-- pauses the number's marketing campaigns, a BLOCKED number pauses, and a
-- number this rule paused resumes once it may send again.  An answer that
-- is not that (an error, an unknown tier or rating) raises an error and
-- changes nothing; the sender then keeps the previous values and stores
-- the error in limits_error (wasend._number_limits_failed).  Runs as its
-- caller (the senders).
CREATE FUNCTION wasend._apply_number_limits(number_id bigint, http integer, answer text)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
    j jsonb;
    tier text;
    lim integer;
    q text;
    health text;
    disp text;
    level text;
    rate integer;
    lowered boolean := false;
BEGIN
    SELECT * INTO n FROM wasend.whatsapp_numbers w WHERE w.id = number_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    BEGIN
        j := answer::jsonb;
    EXCEPTION WHEN OTHERS THEN
        j := NULL;
    END;
    IF http IS DISTINCT FROM 200 OR jsonb_typeof(j) IS DISTINCT FROM 'object' OR j ? 'error' THEN
        RAISE EXCEPTION 'could not read the messaging limit of number %: %', n.phone_number_id,
                        wasend._redact(coalesce(j #>> '{error,message}',
                                                'HTTP ' || coalesce(http::text, 'none') || ', ' || left(coalesce(answer, 'no answer'), 200)))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The number keeps its previous limit, quality and health; wasend reads them again in a minute.';
    END IF;
    tier := j ->> 'whatsapp_business_manager_messaging_limit';
    IF tier IS NOT NULL THEN
        lim := wasend._tier_limit(tier);
    END IF;
    q := j ->> 'quality_rating';
    IF q IS NOT NULL AND q NOT IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN') THEN
        RAISE EXCEPTION 'unknown quality rating "%" for number %', q, n.phone_number_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known ratings: GREEN, YELLOW, RED, UNKNOWN.';
    END IF;
    health := j #>> '{health_status,can_send_message}';
    IF health IS NOT NULL AND health NOT IN ('AVAILABLE', 'LIMITED', 'BLOCKED') THEN
        RAISE EXCEPTION 'unknown health status "%" for number %', health, n.phone_number_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known values of health_status.can_send_message: AVAILABLE, LIMITED, BLOCKED.';
    END IF;
    level := j #>> '{throughput,level}';
    IF level IS NOT NULL AND level !~ '^[A-Z][A-Z0-9_]{0,63}$' THEN
        RAISE EXCEPTION 'unknown throughput level "%" for number %', left(level, 64), n.phone_number_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known levels: STANDARD, HIGH.';
    END IF;
    rate := CASE WHEN NOT n.follow_throughput THEN NULL
                 WHEN level = 'HIGH' THEN 1000
                 WHEN level = 'STANDARD' THEN 80 END;
    disp := nullif(regexp_replace(coalesce(j ->> 'display_phone_number', ''), '[^0-9]', '', 'g'), '');
    lowered := wasend._tier_lowered(n.messaging_tier, tier);

    UPDATE wasend.whatsapp_numbers w
       SET messaging_tier = coalesce(tier, w.messaging_tier),
           messaging_limit = CASE WHEN w.messaging_limit_override IS NOT NULL THEN w.messaging_limit_override
                                  WHEN tier IS NOT NULL THEN lim ELSE w.messaging_limit END,
           quality_rating = coalesce(q, w.quality_rating),
           can_send_message = coalesce(health, w.can_send_message),
           display_phone_number = coalesce(disp, w.display_phone_number),
           throughput_level = coalesce(level, w.throughput_level),
           max_send_rate_per_sec = coalesce(rate, w.max_send_rate_per_sec),
           limits_checked_at = now(),
           limits_due_at = now() + make_interval(secs => wasend._limits_interval()),
           limits_error = NULL,
           status = CASE WHEN health = 'BLOCKED' AND (w.status = 'active' OR w.paused_until IS NOT NULL) THEN 'paused'
                         WHEN health IN ('AVAILABLE', 'LIMITED') AND w.pause_rule = 'health' THEN 'active'
                         ELSE w.status END,
           pause_rule = CASE WHEN health = 'BLOCKED' AND (w.status = 'active' OR w.paused_until IS NOT NULL) THEN 'health'
                             WHEN health IN ('AVAILABLE', 'LIMITED') AND w.pause_rule = 'health' THEN NULL
                             ELSE w.pause_rule END,
           pause_reason = CASE WHEN health = 'BLOCKED' AND (w.status = 'active' OR w.paused_until IS NOT NULL)
                                    THEN 'health: health_status.can_send_message is BLOCKED'
                               WHEN health IN ('AVAILABLE', 'LIMITED') AND w.pause_rule = 'health' THEN NULL
                               ELSE w.pause_reason END,
           paused_until = CASE WHEN health = 'BLOCKED' AND (w.status = 'active' OR w.paused_until IS NOT NULL) THEN NULL ELSE w.paused_until END
     WHERE w.id = number_id;

    IF q = 'RED' AND n.quality_rating IS DISTINCT FROM 'RED' THEN
        PERFORM wasend._pause_for_quality(number_id, 'quality rating of number ' || n.phone_number_id || ' is RED');
    ELSIF lowered THEN
        PERFORM wasend._pause_for_quality(number_id,
            format('messaging limit of number %s lowered from %s to %s', n.phone_number_id, n.messaging_tier, tier));
    END IF;
    IF health = 'BLOCKED' AND (n.status = 'active' OR n.paused_until IS NOT NULL) THEN
        RAISE LOG 'wasend paused number %: health_status.can_send_message is BLOCKED', n.phone_number_id;
    END IF;
    IF rate IS DISTINCT FROM n.max_send_rate_per_sec AND rate IS NOT NULL THEN
        RAISE LOG 'wasend: number % now sends at most % messages a second (throughput level %)',
                  n.phone_number_id, rate, level;
    END IF;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_number_limits(bigint, integer, text) FROM PUBLIC;

-- The read of a number's limits failed (wasend._apply_number_limits
-- raised message): keep the previous values, say why, read again in a
-- minute.  The number counts as read, so that its campaigns are not held
-- up by an API that cannot tell its tier.
CREATE FUNCTION wasend._number_limits_failed(number_id bigint, message text)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE wasend.whatsapp_numbers w
       SET limits_error = wasend._redact(left(message, 1000)),
           limits_checked_at = coalesce(w.limits_checked_at, now()),
           limits_due_at = now() + interval '1 minute'
     WHERE w.id = number_id
$$;
REVOKE ALL ON FUNCTION wasend._number_limits_failed(bigint, text) FROM PUBLIC;

-- wasend.limits_refresh_interval in seconds (900 when the library is not
-- loaded, as in a session without shared_preload_libraries); at least a
-- minute.  The setting reads with its unit ("15min"), hence the interval.
CREATE FUNCTION wasend._limits_interval() RETURNS integer
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(coalesce(extract(epoch FROM nullif(current_setting('wasend.limits_refresh_interval', true), '')::interval)::integer,
                             900), 60)
$$;
REVOKE ALL ON FUNCTION wasend._limits_interval() FROM PUBLIC;

-- A webhook said a number's limits changed: read them again soon, at most
-- once a minute per number.  numbers NULL means every number.
CREATE FUNCTION wasend._limits_due_soon(numbers bigint[]) RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE wasend.whatsapp_numbers w
       SET limits_due_at = least(w.limits_due_at,
                                 greatest(now(), coalesce(w.limits_checked_at, '-infinity') + interval '1 minute'))
     WHERE numbers IS NULL OR w.id = ANY (numbers)
$$;
REVOKE ALL ON FUNCTION wasend._limits_due_soon(bigint[]) FROM PUBLIC;

-- Apply a message_template_status_update: remember the status; PAUSED or
-- DISABLED pauses every running campaign whose message is that template;
-- APPROVED (or REINSTATED) resumes those this rule paused.  Returns how
-- many campaigns changed.
CREATE FUNCTION wasend._apply_template_status(v jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nm text := v ->> 'message_template_name';
    lang text := v ->> 'message_template_language';
    ev text := upper(v ->> 'event');
    why text := wasend._redact(left(v ->> 'reason', 500));
    n bigint := 0;
BEGIN
    IF nm IS NULL OR lang IS NULL OR ev IS NULL THEN
        RETURN 0;
    END IF;
    IF length(nm) > 512 OR length(lang) > 64 OR length(ev) > 64 THEN
        -- Meta's names are at most 512 characters: not a template update
        RAISE WARNING 'wasend: message_template_status_update with a name of % characters ignored', length(nm);
        RETURN 0;
    END IF;
    INSERT INTO wasend.templates AS t (name, language, status, reason)
    VALUES (nm, lang, ev, why)
    ON CONFLICT (name, language) DO UPDATE
       SET status = excluded.status, reason = excluded.reason, updated_at = now();
    IF ev IN ('PAUSED', 'DISABLED') THEN
        UPDATE wasend.campaigns c
           SET status = 'paused', paused_at = now(), updated_at = now(), pause_rule = 'template',
               pause_reason = format('template %s (%s) %s by Meta%s', nm, lang, lower(ev),
                                     CASE WHEN nullif(why, '') IS NOT NULL AND why <> 'NONE'
                                          THEN ': ' || why ELSE '' END)
         WHERE c.template_name = nm AND c.template_language = lang
           AND c.status = 'running';
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSIF ev IN ('APPROVED', 'REINSTATED') THEN
        UPDATE wasend.campaigns c
           SET status = 'running', paused_at = NULL, updated_at = now(), pause_rule = NULL,
               pause_reason = NULL
         WHERE c.template_name = nm AND c.template_language = lang
           AND c.status = 'paused' AND c.pause_rule = 'template';
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF n > 0 THEN
        PERFORM wasend._wake_at_commit();
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_template_status(jsonb) FROM PUBLIC;

-- The tier a webhook's limit names.  Meta gives it as a tier string
-- (TIER_2K, in phone_number_quality_update) or as a number of recipients
-- (2000, -1 for unlimited, in business_capability_update); either form is
-- taken in either webhook.  NULL for no limit (a JSON null or nothing); a
-- tier wasend does not know raises wasend._tier_limit's error.
CREATE FUNCTION wasend._tier_of(v jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    t := left(v #>> '{}', 64);
    IF jsonb_typeof(v) IN ('number', 'string') AND t ~ '^-?[0-9]{1,9}$' THEN
        t := CASE t::integer
            WHEN -1 THEN 'TIER_UNLIMITED'
            WHEN 50 THEN 'TIER_50'
            WHEN 250 THEN 'TIER_250'
            WHEN 2000 THEN 'TIER_2K'
            WHEN 10000 THEN 'TIER_10K'
            WHEN 100000 THEN 'TIER_100K'
            ELSE t END;
    END IF;
    PERFORM wasend._tier_limit(t);
    RETURN t;
END
$$;
REVOKE ALL ON FUNCTION wasend._tier_of(jsonb) FROM PUBLIC;

-- Apply a phone_number_quality_update: the number (found by its display
-- number) gets the new tier at once, is read again soon, and a lowered
-- tier (event DOWNGRADE, or a smaller limit) pauses its marketing
-- campaigns.  The tier is max_daily_conversations_per_business (since
-- February 2026), else current_limit (older payloads).  A tier wasend
-- does not know is not guessed: the number is only read again.  A display
-- number wasend does not know makes every number be read again.
CREATE FUNCTION wasend._apply_quality_update(v jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    disp text := nullif(regexp_replace(coalesce(v ->> 'display_phone_number', ''), '[^0-9]', '', 'g'), '');
    raw jsonb := coalesce(nullif(v -> 'max_daily_conversations_per_business', 'null'),
                          nullif(v -> 'current_limit', 'null'), v -> 'messaging_limit_tier');
    tier text;
    ev text := upper(coalesce(v ->> 'event', ''));
    lim integer;
    known boolean := true;
    r record;
    n bigint := 0;
BEGIN
    BEGIN
        tier := wasend._tier_of(raw);
        IF tier IS NOT NULL THEN
            lim := wasend._tier_limit(tier);
        END IF;
    EXCEPTION WHEN invalid_parameter_value THEN
        known := false;
        tier := left(raw #>> '{}', 64);
        RAISE WARNING 'wasend: phone_number_quality_update with unknown tier "%" ignored; the number is read again', tier;
    END;
    IF NOT EXISTS (SELECT 1 FROM wasend.whatsapp_numbers w WHERE w.display_phone_number = disp) THEN
        PERFORM wasend._limits_due_soon(NULL);
        RETURN 0;
    END IF;
    FOR r IN SELECT * FROM wasend.whatsapp_numbers w WHERE w.display_phone_number = disp
              ORDER BY w.id FOR UPDATE LOOP
        IF tier IS NOT NULL AND known THEN
            UPDATE wasend.whatsapp_numbers w
               SET messaging_tier = tier,
                   messaging_limit = coalesce(w.messaging_limit_override, lim)
             WHERE w.id = r.id;
        END IF;
        -- lowered: Meta says DOWNGRADE, or a known tier goes down
        IF ev = 'DOWNGRADE' OR (known AND wasend._tier_lowered(r.messaging_tier, tier)) THEN
            n := n + wasend._pause_for_quality(r.id,
                format('messaging limit of number %s lowered from %s to %s (phone_number_quality_update %s)',
                       r.phone_number_id, coalesce(r.messaging_tier, 'unknown'), coalesce(tier, 'unknown'),
                       coalesce(nullif(ev, ''), 'without event')));
        END IF;
        PERFORM wasend._limits_due_soon(ARRAY[r.id]);
    END LOOP;
    PERFORM wasend._wake_at_commit();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_quality_update(jsonb) FROM PUBLIC;

-- Apply a business_capability_update of the WhatsApp Business Account
-- waba (the webhook's entry.id): its max_daily_conversations_per_business
-- (else max_daily_conversation_per_phone, of older payloads) is the limit
-- of the account's portfolio, so every number of that portfolio (the
-- numbers of the account, and those sharing a business_id with them) gets
-- the tier at once and is read again soon; a lowered tier pauses their
-- marketing campaigns, as the account read does.  An account no number
-- knows (waba_id), or a tier wasend does not know, makes every number be
-- read again instead.  Returns how many campaigns were paused.
CREATE FUNCTION wasend._apply_capability_update(waba text, v jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw jsonb := coalesce(nullif(v -> 'max_daily_conversations_per_business', 'null'),
                          v -> 'max_daily_conversation_per_phone');
    tier text;
    lim integer;
    r record;
    n bigint := 0;
BEGIN
    BEGIN
        tier := wasend._tier_of(raw);
        IF tier IS NOT NULL THEN
            lim := wasend._tier_limit(tier);
        END IF;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE WARNING 'wasend: business_capability_update with unknown limit "%" ignored; every number is read again',
            left(raw #>> '{}', 64);
        tier := NULL;
        waba := NULL;
    END;
    IF tier IS NULL OR NOT EXISTS (SELECT 1 FROM wasend.whatsapp_numbers w WHERE w.waba_id = waba) THEN
        PERFORM wasend._limits_due_soon(NULL);
        PERFORM wasend._wake_at_commit();
        RETURN 0;
    END IF;
    FOR r IN SELECT * FROM wasend.whatsapp_numbers w
              WHERE w.waba_id = waba
                 OR w.business_id IN (SELECT x.business_id FROM wasend.whatsapp_numbers x
                                       WHERE x.waba_id = waba AND x.business_id IS NOT NULL)
              ORDER BY w.id FOR UPDATE LOOP
        UPDATE wasend.whatsapp_numbers w
           SET messaging_tier = tier,
               messaging_limit = coalesce(w.messaging_limit_override, lim)
         WHERE w.id = r.id;
        IF wasend._tier_lowered(r.messaging_tier, tier) THEN
            n := n + wasend._pause_for_quality(r.id,
                format('messaging limit of number %s lowered from %s to %s (business_capability_update of WhatsApp Business Account %s)',
                       r.phone_number_id, r.messaging_tier, tier, waba));
        END IF;
        PERFORM wasend._limits_due_soon(ARRAY[r.id]);
    END LOOP;
    PERFORM wasend._wake_at_commit();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_capability_update(text, jsonb) FROM PUBLIC;

-- Learn the WhatsApp Business Account of the numbers a webhook POST names:
-- each entry's id is the account of the numbers in its changes'
-- metadata.phone_number_id.  Only numeric ids are taken, and a number's
-- row is written only when its account changes.
CREATE FUNCTION wasend._learn_wabas(payload jsonb) RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE wasend.whatsapp_numbers w
       SET waba_id = x.waba
      FROM (SELECT DISTINCT ON (c #>> '{value,metadata,phone_number_id}')
                   c #>> '{value,metadata,phone_number_id}' AS pnid, e ->> 'id' AS waba
              FROM jsonb_path_query(payload, '$.entry[*]') e
             CROSS JOIN LATERAL jsonb_path_query(e, '$.changes[*]') c
             WHERE jsonb_typeof(e -> 'id') = 'string' AND (e ->> 'id') ~ '^[0-9]{1,32}$'
               AND jsonb_typeof(c #> '{value,metadata,phone_number_id}') = 'string'
             ORDER BY c #>> '{value,metadata,phone_number_id}') x
     WHERE w.phone_number_id = x.pnid AND w.waba_id IS DISTINCT FROM x.waba
$$;
REVOKE ALL ON FUNCTION wasend._learn_wabas(jsonb) FROM PUBLIC;
