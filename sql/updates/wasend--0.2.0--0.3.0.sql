/*
 * wasend--0.2.0--0.3.0.sql — Meta's account limits beyond messages per
 * second (0.3.0).
 *
 * There is no wasend--0.3.0.sql: like PostgreSQL's contrib modules,
 * CREATE EXTENSION wasend installs 0.2.0 and runs this script, so a fresh
 * install and an upgraded one are the same by construction
 * (test/t/020_upgrade.pl still compares them).  wasend--0.2.0.sql explains
 * the objects this script does not touch and the security rules every
 * function follows (SECURITY DEFINER or INVOKER said where it is defined,
 * SET search_path = pg_catalog, pg_temp, every object schema-qualified, no
 * temporary tables).
 *
 * What it adds (README: "Meta's account limits"; the facts and their Meta
 * pages are in the README too):
 *
 *	1. Messaging limits (tiers).  A number belongs to a business portfolio
 *	   (business_id); the senders read each number's tier, quality and
 *	   health from the Graph API and keep them on wasend.whatsapp_numbers.
 *	   Claims never start a message to a new unique recipient beyond the
 *	   portfolio's budget (wasend.recipient_window); such rows wait.
 *	2. Quality and number health: a RED rating or a lowered tier pauses
 *	   marketing campaigns (per campaign: pause_on_quality); a BLOCKED
 *	   number pauses.
 *	3. Template status and pacing: a paused or disabled template pauses its
 *	   campaigns, APPROVED resumes them; answers held for quality
 *	   assessment are 'held'; campaigns hold back while Meta holds their
 *	   messages (pacing).
 *	4. Per-user marketing limits: 131049 waits 24 h and is tried once more;
 *	   marketing opt-outs suppress for marketing only; an optional
 *	   frequency cap per recipient across campaigns.
 *	5. Cost: pricing from status webhooks on the row, wasend.prices and
 *	   the wasend.campaign_report view.
 */

\echo Use "ALTER EXTENSION wasend UPDATE TO '0.3.0'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- Order of statuses: a row only moves forward.  'held' (accepted, held by
-- Meta for a quality assessment) comes before sent; failed overrides sent
-- and held only.
CREATE OR REPLACE FUNCTION wasend._status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE status WHEN 'sending' THEN 0 WHEN 'held' THEN 1 WHEN 'sent' THEN 2
                       WHEN 'failed' THEN 3 WHEN 'delivered' THEN 4 WHEN 'read' THEN 5
                       ELSE -1 END
$$;

-- The unique-recipient limit of a messaging tier as the Graph API names it
-- (whatsapp_business_manager_messaging_limit); NULL is unlimited.  Any
-- other string is an error: a sender must not guess a budget.
CREATE FUNCTION wasend._tier_limit(tier text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE tier
        WHEN 'TIER_250' THEN 250
        WHEN 'TIER_2K' THEN 2000
        WHEN 'TIER_10K' THEN 10000
        WHEN 'TIER_100K' THEN 100000
        WHEN 'TIER_UNLIMITED' THEN NULL
        ELSE wasend._raise_unknown_tier(tier) END;
END
$$;

-- The error of wasend._tier_limit (a function, so that it can sit in a
-- CASE).
CREATE FUNCTION wasend._raise_unknown_tier(tier text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'unknown messaging limit tier "%"', coalesce(tier, 'NULL')
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'Known tiers: TIER_250, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED.',
              HINT = 'The number keeps its previous limit; set one by hand with wasend_update_number(id, messaging_limit => n) until wasend knows this tier.';
END
$$;
REVOKE ALL ON FUNCTION wasend._tier_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION wasend._raise_unknown_tier(text) FROM PUBLIC;

-- Is new_tier lower than old_tier?  An unread tier (NULL) going to any
-- tier, or any tier going to unlimited, is no downgrade.  Both tiers must
-- be known ones (stored tiers are: they passed wasend._tier_limit).  The
-- rule of the account read and of the phone_number_quality_update webhook.
CREATE FUNCTION wasend._tier_lowered(old_tier text, new_tier text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF old_tier IS NULL OR new_tier IS NULL OR new_tier = 'TIER_UNLIMITED' THEN
        RETURN false;
    END IF;
    RETURN old_tier = 'TIER_UNLIMITED' OR wasend._tier_limit(new_tier) < wasend._tier_limit(old_tier);
END
$$;
REVOKE ALL ON FUNCTION wasend._tier_lowered(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Numbers: portfolio, tier, quality, health
-- ---------------------------------------------------------------------

ALTER TABLE wasend.whatsapp_numbers
    ADD COLUMN business_id text
        CONSTRAINT whatsapp_numbers_business_id_check CHECK (business_id ~ '^[0-9]{1,32}$'),
    ADD COLUMN messaging_tier text,
    ADD COLUMN messaging_limit integer
        CONSTRAINT whatsapp_numbers_messaging_limit_check CHECK (messaging_limit >= 0),
    ADD COLUMN messaging_limit_override integer
        CONSTRAINT whatsapp_numbers_messaging_limit_override_check CHECK (messaging_limit_override >= 0),
    ADD COLUMN quality_rating text
        CONSTRAINT whatsapp_numbers_quality_rating_check
        CHECK (quality_rating IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN')),
    ADD COLUMN can_send_message text
        CONSTRAINT whatsapp_numbers_can_send_message_check
        CHECK (can_send_message IN ('AVAILABLE', 'LIMITED', 'BLOCKED')),
    ADD COLUMN display_phone_number text,
    ADD COLUMN limits_checked_at timestamptz,
    ADD COLUMN limits_due_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN limits_error text,
    ADD COLUMN pause_rule text
        CONSTRAINT whatsapp_numbers_pause_rule_check CHECK (pause_rule IN ('health'));
COMMENT ON COLUMN wasend.whatsapp_numbers.business_id IS
'the business portfolio (Meta business id); numbers that share it share one messaging-limit budget';
COMMENT ON COLUMN wasend.whatsapp_numbers.messaging_limit IS
'unique recipients the portfolio may start conversations with in a moving 24 h: the override, else the tier''s; NULL = unlimited';
COMMENT ON COLUMN wasend.whatsapp_numbers.messaging_tier IS
'whatsapp_business_manager_messaging_limit as the Graph API last said it (TIER_250 ... TIER_UNLIMITED)';
COMMENT ON COLUMN wasend.whatsapp_numbers.limits_due_at IS
'when a sender reads the tier, quality and health again (every wasend.limits_refresh_interval, and soon after a webhook says they changed)';
GRANT SELECT (business_id, messaging_tier, messaging_limit, messaging_limit_override,
              quality_rating, can_send_message, display_phone_number,
              limits_checked_at, limits_due_at, limits_error, pause_rule)
    ON wasend.whatsapp_numbers TO wasend_viewer;

-- Numbers are validated by a trigger, not by CHECK alone: a constraint
-- violation's DETAIL shows the whole row, token included (see 0.2.0).
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
                INSERT INTO wasend.recipient_window AS r (portfolio, recipient, last_at)
                SELECT k, q.recipient, max(coalesce(q.sent_at, q.claimed_at))
                  FROM wasend.send_queue q
                  JOIN wasend.campaigns c ON c.id = q.campaign_id
                  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                 WHERE coalesce(n.business_id, 'number:' || n.id::text) = k
                   AND q.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                   AND coalesce(q.sent_at, q.claimed_at) > now() - interval '24 hours'
                 GROUP BY q.recipient
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

-- (id::text: text || bigint would let a better-matching ||(text, bigint)
-- planted in public run here, as the superuser running the update)
INSERT INTO wasend.portfolios (portfolio, messaging_limit)
SELECT coalesce(n.business_id, 'number:' OPERATOR(pg_catalog.||) n.id::text), min(n.messaging_limit)
  FROM wasend.whatsapp_numbers n GROUP BY 1;

-- Register a number (wasend_admin); business_id is its portfolio.  Takes
-- a token: an error raised inside must not log the calling statement
-- (log_min_error_statement = panic).
DROP FUNCTION wasend_add_number(text, text, integer);
CREATE FUNCTION wasend_add_number(phone_number_id text, access_token text,
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
    PERFORM wasend._wake_at_commit();
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend_add_number(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_add_number(text, text, integer, text) TO wasend_admin;

-- Change a number (wasend_admin): its token, rate, portfolio, or its
-- messaging limit (an override of Meta's tier, until
-- reset_messaging_limit).  Takes a token (see wasend_add_number).
DROP FUNCTION wasend_update_number(bigint, text, integer);
CREATE FUNCTION wasend_update_number(number_id bigint, access_token text DEFAULT NULL,
                                     max_send_rate_per_sec integer DEFAULT NULL,
                                     business_id text DEFAULT NULL,
                                     messaging_limit integer DEFAULT NULL,
                                     reset_messaging_limit boolean DEFAULT false)
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
    IF access_token IS NULL AND max_send_rate_per_sec IS NULL AND business_id IS NULL
       AND messaging_limit IS NULL AND NOT coalesce(reset_messaging_limit, false) THEN
        RAISE EXCEPTION 'nothing to update'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a new access_token, max_send_rate_per_sec, business_id or messaging_limit, or reset_messaging_limit => true.';
    END IF;
    IF messaging_limit IS NOT NULL AND coalesce(reset_messaging_limit, false) THEN
        RAISE EXCEPTION 'messaging_limit and reset_messaging_limit contradict each other'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give messaging_limit => n to override Meta''s tier, or reset_messaging_limit => true to follow it again.';
    END IF;
    IF messaging_limit < 0 THEN
        RAISE EXCEPTION 'messaging_limit must not be negative, not %', messaging_limit
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number of unique recipients the portfolio may reach in 24 h (e.g. 250, 2000), or reset_messaging_limit => true to follow Meta''s tier.';
    END IF;
    UPDATE wasend.whatsapp_numbers w
       SET access_token = coalesce(wasend_update_number.access_token, w.access_token),
           max_send_rate_per_sec = coalesce(wasend_update_number.max_send_rate_per_sec,
                                            w.max_send_rate_per_sec),
           business_id = coalesce(wasend_update_number.business_id, w.business_id),
           messaging_limit_override = CASE WHEN reset_messaging_limit THEN NULL
                                           ELSE coalesce(wasend_update_number.messaging_limit,
                                                         w.messaging_limit_override) END,
           messaging_limit = CASE
               WHEN wasend_update_number.messaging_limit IS NOT NULL THEN wasend_update_number.messaging_limit
               WHEN reset_messaging_limit THEN
                    CASE WHEN w.messaging_tier IS NULL THEN NULL
                         ELSE wasend._tier_limit(w.messaging_tier) END
               ELSE w.messaging_limit END,
           updated_at = now()
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_update_number(bigint, text, integer, text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_update_number(bigint, text, integer, text, integer, boolean) TO wasend_admin;

-- Resume a paused number, optionally with a new token (wasend_admin).
-- Takes a token (see wasend_add_number).
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
       SET status = 'active', pause_reason = NULL, paused_until = NULL, pause_rule = NULL,
           updated_at = now(),
           access_token = coalesce(wasend_resume_number.access_token, w.access_token)
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;

-- Stop every campaign of a number from sending until it is resumed
-- (wasend_admin).
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
       SET status = 'paused', paused_until = NULL, updated_at = now(), pause_rule = NULL,
           pause_reason = coalesce(reason, 'paused by ' || session_user)
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;

-- ---------------------------------------------------------------------
-- Campaigns: category, quality rule, pacing, frequency cap
-- ---------------------------------------------------------------------

ALTER TABLE wasend.campaigns
    ADD COLUMN category text NOT NULL DEFAULT 'marketing'
        CONSTRAINT campaigns_category_check
        CHECK (category IN ('marketing', 'utility', 'authentication', 'service')),
    ADD COLUMN pause_on_quality boolean NOT NULL DEFAULT true,
    ADD COLUMN pacing text NOT NULL DEFAULT 'meta'
        CONSTRAINT campaigns_pacing_check CHECK (pacing IN ('meta', 'sample', 'off')),
    ADD COLUMN pacing_sample integer NOT NULL DEFAULT 1000
        CONSTRAINT campaigns_pacing_sample_check CHECK (pacing_sample > 0),
    ADD COLUMN pacing_hold interval NOT NULL DEFAULT '15 minutes'
        CONSTRAINT campaigns_pacing_hold_check
        CHECK (pacing_hold > '0'::interval AND pacing_hold <= '1 year'::interval),
    ADD COLUMN paced_until timestamptz,
    ADD COLUMN sample_left integer,
    ADD COLUMN frequency_cap integer
        CONSTRAINT campaigns_frequency_cap_check CHECK (frequency_cap > 0),
    ADD COLUMN frequency_window interval NOT NULL DEFAULT '7 days'
        CONSTRAINT campaigns_frequency_window_check
        CHECK (frequency_window > '0'::interval AND frequency_window <= '1 year'::interval),
    ADD COLUMN pause_rule text
        CONSTRAINT campaigns_pause_rule_check CHECK (pause_rule IN ('quality', 'template')),
    -- the operators named with their schema and the paths typed: this
    -- expression is bound now, with the script's search_path (the
    -- extension's schema first), where an operator #>>(jsonb, text) that
    -- someone planted in public would match an untyped literal better
    -- (test/t/020_upgrade.pl plants one)
    ADD COLUMN template_name text
        GENERATED ALWAYS AS (message OPERATOR(pg_catalog.#>>) '{template,name}'::text[]) STORED,
    ADD COLUMN template_language text
        GENERATED ALWAYS AS (message OPERATOR(pg_catalog.#>>) '{template,language,code}'::text[]) STORED;
CREATE INDEX campaigns_template_idx ON wasend.campaigns (template_name, template_language)
    WHERE template_name IS NOT NULL;
-- campaigns made before 0.3.0: a template is presumed marketing (the
-- strict choice), anything else is a service message
UPDATE wasend.campaigns SET category = 'service'
 WHERE (message OPERATOR(pg_catalog.->>) 'type'::text) IS DISTINCT FROM 'template'::text;
COMMENT ON COLUMN wasend.campaigns.category IS
'Meta''s template category: marketing (the rules of marketing messages apply), utility, authentication, or service (not a template)';
COMMENT ON COLUMN wasend.campaigns.pacing IS
'meta: hold back while Meta holds messages for a quality assessment (at most pacing_hold after the last hold); sample: also stop after pacing_sample rows of a template no earlier campaign used, for pacing_hold; off: never hold back';
COMMENT ON COLUMN wasend.campaigns.frequency_cap IS
'at most this many marketing messages per recipient per frequency_window, across campaigns; rows over it wait; NULL = no cap';

-- Check the campaign options of wasend_create_campaign and
-- wasend_update_campaign; raises a clear error for the first bad one.
CREATE FUNCTION wasend._check_campaign_options(category text, pacing text, pacing_sample integer,
                                               pacing_hold interval, frequency_cap integer,
                                               frequency_window interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF category NOT IN ('marketing', 'utility', 'authentication', 'service') THEN
        RAISE EXCEPTION 'unknown campaign category "%"', category
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the category Meta approved the template under: marketing, utility or authentication; service for a message that is not a template.';
    END IF;
    IF pacing NOT IN ('meta', 'sample', 'off') THEN
        RAISE EXCEPTION 'unknown pacing "%"', pacing
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use meta (hold back while Meta holds messages), sample (also stop after a first sample of a new template) or off.';
    END IF;
    IF pacing_sample <= 0 THEN
        RAISE EXCEPTION 'pacing_sample must be positive, not %', pacing_sample
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how many messages of a new template go out before the campaign waits for feedback, e.g. 1000.';
    END IF;
    IF pacing_hold <= '0'::interval OR pacing_hold > '1 year'::interval THEN
        RAISE EXCEPTION 'pacing_hold must be positive and at most a year, not %', pacing_hold
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Meta releases held messages after about 15 minutes; give e.g. ''15 minutes''.';
    END IF;
    IF frequency_cap <= 0 THEN
        RAISE EXCEPTION 'frequency_cap must be positive, not %', frequency_cap
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the most marketing messages one recipient may get per frequency_window, or NULL for no cap.';
    END IF;
    IF frequency_window <= '0'::interval OR frequency_window > '1 year'::interval THEN
        RAISE EXCEPTION 'frequency_window must be positive and at most a year, not %', frequency_window
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the rolling window of the frequency cap, e.g. ''7 days''.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._check_campaign_options(text, text, integer, interval, integer, interval) FROM PUBLIC;

-- A campaign in draft (wasend_operator).  category defaults to marketing
-- for a template and service otherwise.
DROP FUNCTION wasend_create_campaign(text, bigint, jsonb);
CREATE FUNCTION wasend_create_campaign(name text, number_id bigint, message jsonb,
                                       category text DEFAULT NULL,
                                       pause_on_quality boolean DEFAULT true,
                                       pacing text DEFAULT 'meta',
                                       frequency_cap integer DEFAULT NULL,
                                       frequency_window interval DEFAULT '7 days')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
    cat text;
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
    cat := coalesce(category, CASE WHEN message ->> 'type' = 'template' THEN 'marketing' ELSE 'service' END);
    IF pause_on_quality IS NULL OR pacing IS NULL OR frequency_window IS NULL THEN
        RAISE EXCEPTION 'pause_on_quality, pacing and frequency_window must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave them out for the defaults (true, meta, 7 days).';
    END IF;
    PERFORM wasend._check_campaign_options(cat, pacing, 1, '1 s', frequency_cap, frequency_window);
    INSERT INTO wasend.campaigns (name, number_id, message, category, pause_on_quality, pacing,
                                  frequency_cap, frequency_window)
    VALUES (name, number_id, message, cat, pause_on_quality, pacing, frequency_cap, frequency_window)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_create_campaign(text, bigint, jsonb, text, boolean, text, integer, interval) TO wasend_operator;

-- Change a campaign's options (wasend_operator); NULL keeps an option.
-- frequency_cap => 0 removes the cap.
CREATE FUNCTION wasend_update_campaign(campaign_id bigint,
                                       category text DEFAULT NULL,
                                       pause_on_quality boolean DEFAULT NULL,
                                       pacing text DEFAULT NULL,
                                       pacing_sample integer DEFAULT NULL,
                                       pacing_hold interval DEFAULT NULL,
                                       frequency_cap integer DEFAULT NULL,
                                       frequency_window interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot change campaign %: it is %', campaign_id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create a new campaign with wasend_create_campaign().';
    END IF;
    IF frequency_cap < 0 THEN
        RAISE EXCEPTION 'frequency_cap must not be negative, not %', frequency_cap
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the most marketing messages one recipient may get per frequency_window, or 0 to remove the cap.';
    END IF;
    PERFORM wasend._check_campaign_options(coalesce(category, c.category), coalesce(pacing, c.pacing),
                                           coalesce(pacing_sample, c.pacing_sample),
                                           coalesce(pacing_hold, c.pacing_hold),
                                           nullif(coalesce(frequency_cap, c.frequency_cap), 0),
                                           coalesce(frequency_window, c.frequency_window));
    UPDATE wasend.campaigns x
       SET category = coalesce(wasend_update_campaign.category, x.category),
           pause_on_quality = coalesce(wasend_update_campaign.pause_on_quality, x.pause_on_quality),
           pacing = coalesce(wasend_update_campaign.pacing, x.pacing),
           pacing_sample = coalesce(wasend_update_campaign.pacing_sample, x.pacing_sample),
           pacing_hold = coalesce(wasend_update_campaign.pacing_hold, x.pacing_hold),
           frequency_cap = nullif(coalesce(wasend_update_campaign.frequency_cap, x.frequency_cap), 0),
           frequency_window = coalesce(wasend_update_campaign.frequency_window, x.frequency_window),
           paced_until = CASE WHEN coalesce(wasend_update_campaign.pacing, x.pacing) = 'off' THEN NULL
                              ELSE x.paced_until END,
           sample_left = CASE WHEN coalesce(wasend_update_campaign.pacing, x.pacing) = 'sample' THEN x.sample_left END,
           updated_at = now()
     WHERE x.id = campaign_id;
    -- rows waiting for the old cap are looked at again under the new one
    IF frequency_cap IS NOT NULL OR frequency_window IS NOT NULL OR category IS NOT NULL THEN
        UPDATE wasend.send_queue q
           SET next_attempt_at = now()
         WHERE q.campaign_id = wasend_update_campaign.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL
           AND q.status = 'ready' AND q.waiting_for = 'frequency_cap';
    END IF;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend_update_campaign(bigint, text, boolean, text, integer, interval, integer, interval) TO wasend_operator;

-- draft -> running, or scheduled if start_at is in the future
-- (wasend_operator).  With pacing 'sample', a template no earlier campaign
-- used starts with a sample of pacing_sample rows.
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

    UPDATE wasend.campaigns x
       SET status = CASE WHEN wasend_start_campaign.start_at > now() THEN 'scheduled' ELSE 'running' END,
           start_at = wasend_start_campaign.start_at,
           started_at = CASE WHEN wasend_start_campaign.start_at > now() THEN NULL ELSE now() END,
           pause_reason = NULL,
           sample_left = CASE WHEN x.pacing = 'sample' AND x.template_name IS NOT NULL
                               AND NOT EXISTS (SELECT 1 FROM wasend.campaigns o
                                                WHERE o.template_name = x.template_name
                                                  AND o.template_language IS NOT DISTINCT FROM x.template_language
                                                  AND o.id <> x.id AND o.started_at IS NOT NULL)
                              THEN x.pacing_sample END,
           updated_at = now()
     WHERE x.id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;

-- running/scheduled -> paused (wasend_operator).
CREATE OR REPLACE FUNCTION wasend_pause_campaign(campaign_id bigint) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    c := wasend._campaign_for_update(campaign_id);
    IF c.status = 'paused' AND c.pause_rule IS NOT NULL THEN
        -- paused by a rule (template, quality): now by the user, so that
        -- the rule's all-clear does not resume it
        UPDATE wasend.campaigns
           SET pause_rule = NULL, pause_reason = 'paused by ' || session_user || ' (was: ' || pause_reason || ')',
               updated_at = now()
         WHERE id = campaign_id;
        RETURN;
    END IF;
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
           pause_rule = NULL, updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;

-- paused -> running, or back to scheduled (wasend_operator).
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
           pause_reason = NULL, paused_at = NULL, pause_rule = NULL, updated_at = now()
     WHERE id = campaign_id;
    PERFORM wasend._wake_at_commit();
END
$$;

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
-- quality_rating,health_status,display_phone_number) and apply its rules:
-- the messaging limit (unless overridden), a RED rating or a lowered tier
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
    lowered boolean := false;
BEGIN
    SELECT * INTO n FROM wasend.whatsapp_numbers w WHERE w.id = number_id FOR UPDATE;
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
    disp := nullif(regexp_replace(coalesce(j ->> 'display_phone_number', ''), '[^0-9]', '', 'g'), '');
    lowered := wasend._tier_lowered(n.messaging_tier, tier);

    UPDATE wasend.whatsapp_numbers w
       SET messaging_tier = coalesce(tier, w.messaging_tier),
           messaging_limit = CASE WHEN w.messaging_limit_override IS NOT NULL THEN w.messaging_limit_override
                                  WHEN tier IS NOT NULL THEN lim ELSE w.messaging_limit END,
           quality_rating = coalesce(q, w.quality_rating),
           can_send_message = coalesce(health, w.can_send_message),
           display_phone_number = coalesce(disp, w.display_phone_number),
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

-- ---------------------------------------------------------------------
-- Templates
-- ---------------------------------------------------------------------

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

-- Messages Meta holds for a quality assessment, per campaign: what pacing
-- waits for.  A row leaves when its status webhook settles it.
CREATE TABLE wasend.held_messages (
    row_id          bigint PRIMARY KEY,
    campaign_id     bigint NOT NULL,
    held_at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX held_messages_campaign_idx ON wasend.held_messages (campaign_id);
COMMENT ON TABLE wasend.held_messages IS
'Rows answered held_for_quality_assessment whose sent or failed status has not come yet';

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

-- Apply a phone_number_quality_update: the number (found by its display
-- number) gets the new tier at once, is read again soon, and a lowered
-- tier (event DOWNGRADE, or a smaller limit) pauses its marketing
-- campaigns.  A tier wasend does not know is not guessed: the number is
-- only read again.  A display number wasend does not know makes every
-- number be read again.
CREATE FUNCTION wasend._apply_quality_update(v jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    disp text := nullif(regexp_replace(coalesce(v ->> 'display_phone_number', ''), '[^0-9]', '', 'g'), '');
    tier text := coalesce(v ->> 'current_limit', v ->> 'messaging_limit_tier');
    ev text := upper(coalesce(v ->> 'event', ''));
    lim integer;
    known boolean := true;
    r record;
    n bigint := 0;
BEGIN
    IF tier IS NOT NULL THEN
        BEGIN
            lim := wasend._tier_limit(tier);
        EXCEPTION WHEN invalid_parameter_value THEN
            known := false;
            RAISE WARNING 'wasend: phone_number_quality_update with unknown tier "%" ignored; the number is read again', tier;
        END;
    END IF;
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

-- ---------------------------------------------------------------------
-- Queue rows: held, waiting, pricing; suppressions by scope
-- ---------------------------------------------------------------------

ALTER TABLE wasend.send_queue DROP CONSTRAINT send_queue_status_check;
ALTER TABLE wasend.send_queue ADD CONSTRAINT send_queue_status_check
    CHECK (status IN ('ready', 'sending', 'held', 'sent', 'delivered', 'read', 'failed', 'cancelled'));
ALTER TABLE wasend.send_queue
    ADD COLUMN waiting_for text
        CONSTRAINT send_queue_waiting_for_check CHECK (waiting_for IN ('messaging_limit', 'frequency_cap')),
    ADD COLUMN pricing_billable boolean,
    ADD COLUMN pricing_model text,
    ADD COLUMN pricing_category text,
    ADD COLUMN pricing_type text;
COMMENT ON COLUMN wasend.send_queue.waiting_for IS
'why a ready row waits until next_attempt_at: messaging_limit (the portfolio''s 24 h budget of new recipients) or frequency_cap';
-- the frequency cap counts a recipient's recent marketing messages
CREATE INDEX send_queue_recipient_idx ON wasend.send_queue (recipient);

ALTER TABLE wasend.pending_statuses ADD COLUMN pricing jsonb;

ALTER TABLE wasend.suppressions
    ADD COLUMN scope text NOT NULL DEFAULT 'all'
        CONSTRAINT suppressions_scope_check CHECK (scope IN ('all', 'marketing'));
COMMENT ON COLUMN wasend.suppressions.scope IS
'all: no campaign sends to the recipient; marketing: only marketing campaigns skip it (131050, user_preferences stop)';

-- Checks and normalizes every row written to wasend.send_queue (see
-- 0.2.0).  A suppression of scope 'marketing' skips the recipient only in
-- marketing campaigns.
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
                           WHERE s.recipient = NEW.recipient
                             AND (s.scope = 'all'
                                  OR EXISTS (SELECT 1 FROM wasend.campaigns c
                                              WHERE c.id = NEW.campaign_id
                                                AND c.category = 'marketing'))) THEN
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

-- ---------------------------------------------------------------------
-- Error policy: 131049 waits 24 h and is tried once more
-- ---------------------------------------------------------------------

ALTER TABLE wasend.error_policy
    ADD COLUMN retry_once boolean NOT NULL DEFAULT false,
    ADD COLUMN jitter double precision NOT NULL DEFAULT 0.2
        CONSTRAINT error_policy_jitter_check CHECK (jitter >= 0::double precision AND jitter <= 1::double precision);
COMMENT ON COLUMN wasend.error_policy.retry_once IS
'retry: a row whose previous attempt already failed with this code fails instead';
COMMENT ON COLUMN wasend.error_policy.jitter IS
'retry: the wait is backoff * factor^(attempt-1) times a random factor in [1 - jitter, 1 + jitter]';
GRANT INSERT (retry_once, jitter), UPDATE (retry_once, jitter) ON wasend.error_policy TO wasend_admin;

-- Keeps wasend.error_policy.origin right (see 0.2.0); the new columns
-- count as edits too.
CREATE OR REPLACE FUNCTION wasend._error_policy_track() RETURNS trigger
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
                      NEW.slow_down, NEW.description, NEW.retry_once, NEW.jitter)
                  IS DISTINCT FROM
                  ROW(OLD.action, OLD.backoff, OLD.backoff_factor, OLD.pause_for,
                      OLD.slow_down, OLD.description, OLD.retry_once, OLD.jitter) THEN
                NEW.origin := 'edited';
            END IF;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.origin <> 'added' THEN
        UPDATE wasend.error_policy p
           SET action = NEW.action, backoff = NEW.backoff, backoff_factor = NEW.backoff_factor,
               pause_for = NEW.pause_for, slow_down = NEW.slow_down,
               description = NEW.description, retry_once = NEW.retry_once, jitter = NEW.jitter,
               origin = NEW.origin
         WHERE p.code = NEW.code;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- the shipped rule for 131049, unless a user changed it (the trigger is
-- off so that the built-in row stays built in)
ALTER TABLE wasend.error_policy DISABLE TRIGGER error_policy_track;
UPDATE wasend.error_policy
   SET action = 'retry', backoff = '24 hours', backoff_factor = 1, jitter = 0, retry_once = true,
       description = 'per-user marketing limit: wait 24 hours, try once more'
 WHERE code = '131049' AND origin = 'builtin';
UPDATE wasend.error_policy
   SET description = 'recipient stopped marketing messages: fail, suppress for marketing'
 WHERE code = '131050' AND origin = 'builtin';
ALTER TABLE wasend.error_policy ENABLE TRIGGER error_policy_track;

-- ---------------------------------------------------------------------
-- Prices and the campaign report
-- ---------------------------------------------------------------------

-- What a billable message costs, per pricing category and recipient
-- country calling code prefix ('' = any country); the longest matching
-- prefix wins.  Empty by default: wasend does not know your rates.
CREATE TABLE wasend.prices (
    category        text NOT NULL,
    country_prefix  text NOT NULL DEFAULT '',
    price           numeric NOT NULL CONSTRAINT prices_price_check CHECK (price >= 0::numeric),
    PRIMARY KEY (category, country_prefix)
);
COMMENT ON TABLE wasend.prices IS
'Price per billable message by pricing category and country calling code prefix ('''' = any); empty by default: fill it with your rate card';

-- Prices are checked by a trigger so that a bad row gets a clear error.
CREATE FUNCTION wasend._price_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.category IS NULL OR btrim(NEW.category) = '' THEN
        RAISE EXCEPTION 'a price needs a category'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use the pricing category of the status webhooks: marketing, marketing_lite, utility, authentication, authentication_international or service.';
    END IF;
    IF NEW.category NOT IN ('marketing', 'marketing_lite', 'utility', 'authentication',
                            'authentication_international', 'service', 'referral_conversion') THEN
        RAISE EXCEPTION 'unknown pricing category "%"', NEW.category
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the pricing category of the status webhooks: marketing, marketing_lite, utility, authentication, authentication_international or service.';
    END IF;
    IF coalesce(NEW.country_prefix, '') !~ '^\+?[0-9]{0,6}$' THEN
        RAISE EXCEPTION 'invalid country_prefix "%"', NEW.country_prefix
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the country calling code, e.g. 44 or 1 (digits only), or '''' for any country.';
    END IF;
    NEW.country_prefix := ltrim(coalesce(NEW.country_prefix, ''), '+');
    IF NEW.price IS NULL OR NEW.price < 0 THEN
        RAISE EXCEPTION 'a price must be zero or more, not %', coalesce(NEW.price::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the price of one billable message in your currency, e.g. 0.0250.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._price_check() FROM PUBLIC;

CREATE TRIGGER price_check
    BEFORE INSERT OR UPDATE ON wasend.prices
    FOR EACH ROW EXECUTE FUNCTION wasend._price_check();

-- ---------------------------------------------------------------------
-- Webhooks
-- ---------------------------------------------------------------------

-- Apply the statuses of one payload (see 0.2.0).  New in 0.3.0: a 'held'
-- row is settled by its sent, delivered or read status (sent_at set) or
-- failed; pricing is stored on the row (also from a status that does not
-- move the row forward, if the row has none yet); a settled held row
-- leaves wasend.held_messages, and a campaign that no longer has held rows
-- stops holding back; 131050 suppresses for marketing, 131026 for all.
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
               CASE WHEN jsonb_typeof(x -> 'pricing') = 'object' THEN x -> 'pricing' END AS pricing,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = x ->> 'id') AS known
          FROM jsonb_array_elements(st) x
         WHERE jsonb_typeof(x -> 'id') = 'string' AND jsonb_typeof(x -> 'status') = 'string'),
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

-- Apply the statuses kept aside whose wamid has appeared since (see 0.2.0);
-- now with their pricing.
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

-- The body of wasend_ingest_webhook once the signature is checked (see
-- 0.2.0).  New in 0.3.0, the account webhooks: message_template_status_update,
-- phone_number_quality_update, business_capability_update, and the
-- user_preferences of messages (marketing stop / resume).
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
    -- lifts that (a suppression of scope all stays)
    WITH p AS (
        SELECT DISTINCT ON (ltrim(x ->> 'wa_id', '+')) ltrim(x ->> 'wa_id', '+') AS recipient,
               lower(x ->> 'value') AS value
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.user_preferences[*]') x
         WHERE x ->> 'category' = 'marketing_messages' AND jsonb_typeof(x -> 'wa_id') = 'string'
           AND ltrim(x ->> 'wa_id', '+') ~ '^[0-9]{7,15}$'
         ORDER BY ltrim(x ->> 'wa_id', '+'), (x ->> 'timestamp') DESC NULLS LAST),
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
        n_acct := n_acct + 1;
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
    END LOOP;

    RETURN jsonb_build_object(
        'statuses_applied', res->'applied',
        'statuses_ignored', res->'ignored',
        'statuses_pending', res->'pending',
        'messages_stored', n_new,
        'messages_duplicate', n_msgs - n_new,
        'recipients_suppressed', n_stop,
        'preferences_applied', n_pref,
        'account_updates', n_acct,
        'campaigns_changed', n_camp);
END
$$;

-- the new columns' inbound lookups: was the recipient in touch in 24 h?
CREATE INDEX inbound_messages_from_idx ON wasend.inbound_messages (from_number, received_at);

-- ---------------------------------------------------------------------
-- Progress and report (see 0.2.0 for how the views name functions and
-- operators)
-- ---------------------------------------------------------------------

-- campaign_progress gains held (messages Meta holds for a quality
-- assessment) and waiting: why rows that are ready do not go out now.
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
       e.errors_by_code,
       coalesce(s.held, 0) AS held,
       pg_catalog.concat_ws('; ',
           CASE WHEN c.paced_until > pg_catalog.now()
                THEN pg_catalog.format('pacing: %s held for a quality assessment, new rows wait until %s at the latest',
                                       coalesce(s.held, 0), c.paced_until) END,
           CASE WHEN s.wait_limit > 0
                THEN pg_catalog.format('messaging limit %s/24h, next slot at %s (%s rows)',
                                       coalesce(p.messaging_limit::text, 'unlimited'), s.wait_limit_next, s.wait_limit) END,
           CASE WHEN s.wait_cap > 0
                THEN pg_catalog.format('frequency cap %s per %s, next at %s (%s rows)',
                                       c.frequency_cap, c.frequency_window, s.wait_cap_next, s.wait_cap) END,
           CASE WHEN s.wait_131049 > 0
                THEN pg_catalog.format('per-user marketing limit (131049), retry at %s (%s rows)',
                                       s.wait_131049_next, s.wait_131049) END) AS waiting
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
  LEFT JOIN wasend.portfolios p ON p.portfolio = coalesce(n.business_id, 'number:' || n.id::text)
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS total,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready') AS ready,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sending') AS sending,
               pg_catalog.count(*) FILTER (WHERE q.status = 'sent') AS sent,
               pg_catalog.count(*) FILTER (WHERE q.status = 'delivered') AS delivered,
               pg_catalog.count(*) FILTER (WHERE q.status = 'read') AS read,
               pg_catalog.count(*) FILTER (WHERE q.status = 'failed') AS failed,
               pg_catalog.count(*) FILTER (WHERE q.status = 'cancelled') AS cancelled,
               pg_catalog.count(*) FILTER (WHERE q.status = 'held') AS held,
               pg_catalog.count(*) FILTER (WHERE q.uncertain) AS uncertain,
               pg_catalog.count(*) FILTER (WHERE coalesce(q.sent_at, q.failed_at) > pg_catalog.clock_timestamp() - interval '10 s') AS recent,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'messaging_limit'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_limit,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'messaging_limit'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_limit_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'frequency_cap'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_cap,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'frequency_cap'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_cap_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.last_error_code = 131049
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_131049,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.last_error_code = 131049
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next
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
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages and why ready rows wait';

-- One row per campaign: the delivery funnel, failures by code with Meta's
-- title, messages by pricing category, and an estimated cost from
-- wasend.prices (NULL while no billable message has a price).
CREATE VIEW wasend.campaign_report AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       c.category,
       coalesce(f.total, 0) AS total,
       coalesce(f.sent, 0) AS sent,
       coalesce(f.delivered, 0) AS delivered,
       coalesce(f.read, 0) AS read,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.held, 0) AS held,
       CASE WHEN coalesce(f.sent, 0) > 0
            THEN pg_catalog.round(100.0 * f.delivered::numeric / f.sent::numeric, 1) END AS delivered_pct,
       CASE WHEN coalesce(f.delivered, 0) > 0
            THEN pg_catalog.round(100.0 * f.read::numeric / f.delivered::numeric, 1) END AS read_pct,
       fc.failures,
       pc.by_pricing_category,
       coalesce(f.billable, 0) AS billable,
       coalesce(pc.unpriced, 0) AS unpriced,
       pc.estimated_cost
  FROM wasend.campaigns c
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS total,
               pg_catalog.count(*) FILTER (WHERE q.sent_at IS NOT NULL) AS sent,
               pg_catalog.count(*) FILTER (WHERE q.delivered_at IS NOT NULL) AS delivered,
               pg_catalog.count(*) FILTER (WHERE q.read_at IS NOT NULL) AS read,
               pg_catalog.count(*) FILTER (WHERE q.status = 'failed') AS failed,
               pg_catalog.count(*) FILTER (WHERE q.status = 'held') AS held,
               pg_catalog.count(*) FILTER (WHERE q.pricing_billable) AS billable
          FROM wasend.send_queue q WHERE q.campaign_id = c.id) f ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(x.code, pg_catalog.jsonb_build_object('count', x.cnt, 'title', x.title)) AS failures
          FROM (SELECT coalesce(q.last_error_code::text, q.last_error_class, 'unknown') AS code,
                       pg_catalog.count(*) AS cnt, pg_catalog.min(q.last_error) AS title
                  FROM wasend.send_queue q
                 WHERE q.campaign_id = c.id AND q.status = 'failed'
                 GROUP BY 1) x) fc ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(y.category,
                   pg_catalog.jsonb_build_object('billable', y.billable, 'free', y.free)) AS by_pricing_category,
               pg_catalog.sum(y.unpriced) AS unpriced,
               pg_catalog.sum(y.cost) AS estimated_cost
          FROM (SELECT q.pricing_category AS category,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable) AS billable,
                       pg_catalog.count(*) FILTER (WHERE NOT q.pricing_billable) AS free,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable AND pr.price IS NULL) AS unpriced,
                       pg_catalog.sum(pr.price) FILTER (WHERE q.pricing_billable) AS cost
                  FROM wasend.send_queue q
                  LEFT JOIN LATERAL (
                        SELECT p.price FROM wasend.prices p
                         WHERE p.category = q.pricing_category
                           AND pg_catalog.starts_with(q.recipient, p.country_prefix)
                         ORDER BY pg_catalog.length(p.country_prefix) DESC
                         LIMIT 1) pr ON true
                 WHERE q.campaign_id = c.id AND q.pricing_category IS NOT NULL
                 GROUP BY 1) y) pc ON true;
COMMENT ON VIEW wasend.campaign_report IS
'Per campaign: delivery funnel (sent, delivered, read), failures by code with Meta''s title, messages by pricing category, billable count and estimated cost from wasend.prices';

-- ---------------------------------------------------------------------
-- Privileges and what pg_dump dumps
-- ---------------------------------------------------------------------

REVOKE ALL ON wasend.claim_locks FROM PUBLIC;
REVOKE ALL ON wasend.portfolios, wasend.recipient_window, wasend.templates,
              wasend.held_messages, wasend.prices, wasend.campaign_report FROM PUBLIC;
GRANT SELECT ON wasend.portfolios, wasend.recipient_window, wasend.templates,
                wasend.held_messages, wasend.prices, wasend.campaign_report TO wasend_viewer;
GRANT INSERT, UPDATE, DELETE ON wasend.prices TO wasend_admin;
GRANT DELETE ON wasend.recipient_window TO wasend_admin;

SELECT pg_catalog.pg_extension_config_dump('wasend.recipient_window', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.templates', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.held_messages', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.prices', '');
