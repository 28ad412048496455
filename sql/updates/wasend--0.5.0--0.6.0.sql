/*
 * wasend--0.5.0--0.6.0.sql — 0.6.0: the API in schema wasend.
 *
 * CREATE EXTENSION wasend runs wasend--0.6.0.sql, which make builds from
 * sql/src/; every change here is made there too (sql/README.md), and
 * test/t/020_upgrade.pl compares a fresh install with an updated one.
 * The security rules of sql/src/00_schemas_roles.sql hold here too.
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
-- One campaign's bad row holds up only that campaign
-- ---------------------------------------------------------------------

/*
 * A value the senders' statements cannot use in one campaign's row (a
 * send_timezone that is no time zone, a negative sample_left, written by
 * a plain UPDATE) made every read of the running set, or every claim of
 * the number's sender, fail: no campaign and no wasend_send of the
 * database went out.  The senders now find the campaign at fault and set
 * it aside for a back-off (src/db_cycle.c); campaign_faults says which,
 * why and until when, and campaign_progress.waiting shows it.  Only the
 * senders write it; wasend_viewer reads it.
 *
 * campaign_progress showed nothing at all when one campaign's fixed
 * send_timezone was no time zone (_window_opens raised for the whole
 * view): such a window is now not evaluated, and the senders' error says
 * why the campaign waits.  _is_zone_name is granted to wasend_viewer for
 * that, as _window_opens is.
 */
CREATE TABLE wasend.campaign_faults (
    campaign_id bigint PRIMARY KEY,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL,
    retry_at    timestamptz NOT NULL
);
COMMENT ON TABLE wasend.campaign_faults IS
'Campaigns the senders set aside because a statement failed on their data (a row of the campaign, or of its rows): the error, and when they are tried again';
GRANT SELECT ON wasend.campaign_faults TO wasend_viewer;
GRANT EXECUTE ON FUNCTION wasend._is_zone_name(text) TO wasend_viewer;

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
                                       s.wait_131049_next, s.wait_131049) END,
           CASE WHEN w.opens IS NOT NULL AND s.ready > 0
                THEN pg_catalog.format('send window %s-%s %s: opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, c.send_timezone, w.opens, s.ready)
                WHEN s.wait_window > 0
                THEN pg_catalog.format('send window %s-%s in the recipients'' time zones, next opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, s.wait_window_next, s.wait_window) END,
           CASE WHEN f.campaign_id IS NOT NULL
                THEN pg_catalog.format('set aside by the senders, tried again at %s: %s',
                                       f.retry_at, f.error) END) AS waiting,
       CASE WHEN w.opens IS NOT NULL THEN coalesce(s.ready, 0) ELSE coalesce(s.wait_window, 0) END AS waiting_window,
       c.kind,
       c.priority
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
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_window,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_window_next
          FROM wasend.send_queue q WHERE q.campaign_id = c.id) s ON true
  -- a window in a fixed zone holds back the whole campaign (src/queue.sql, running)
  CROSS JOIN LATERAL (
        SELECT CASE WHEN c.send_timezone <> 'recipient' AND c.kind = 'campaign'
                         AND wasend._is_zone_name(c.send_timezone)
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) END AS opens) w
  -- a campaign the senders set aside (src/db_cycle.c, set_aside)
  LEFT JOIN wasend.campaign_faults f
         ON f.campaign_id = c.id AND c.status = 'running'
        AND f.retry_at > pg_catalog.now() - interval '1 minute'
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
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages, why ready rows wait (a campaign the senders set aside too), rows waiting for their send window, kind and priority';

-- ---------------------------------------------------------------------
-- Every column a role may write is checked, with the API's messages
-- ---------------------------------------------------------------------

/*
 * A plain UPDATE by an administrator could write what the API refuses (a
 * send_timezone with a typo, a negative sample_left), and one such row
 * stopped every sender of the database.  The validation triggers now
 * check every column wasend_admin may write (campaigns, whatsapp_numbers,
 * error_policy, country_zones, prices, suppressions) and the four that
 * wasend_operator may insert into send_queue, with the rules and messages
 * of the API functions: an ERROR with a hint, before any constraint (a
 * constraint's message has no hint, and its DETAIL would show the row).
 * On an UPDATE only the columns that change are checked, so that the
 * senders' own updates of a row never fail on an old value of another
 * column.
 *
 * The trigger functions run as the caller, who must be able to run the
 * checks they call: wasend_admin could not (its UPDATE of a campaign's
 * message, or of a country's zone, failed with "permission denied for
 * function"), and gets EXECUTE on them.  They are pure checks.
 *
 * Rows written before this version are not checked again: CHECK
 * constraints cannot express these rules (a time zone name depends on the
 * server's time zone database, which is not immutable).  The upgrade
 * lists every existing row that breaks a rule in a WARNING and changes
 * nothing; the senders set such a campaign aside (see campaign_faults
 * above) until it is corrected.
 */
GRANT EXECUTE ON FUNCTION wasend._check_message(jsonb, text) TO wasend_admin;
GRANT EXECUTE ON FUNCTION wasend._check_timezone(text, text) TO wasend_admin;
GRANT EXECUTE ON FUNCTION wasend._check_campaign_options(text, text, integer, interval, integer, interval) TO wasend_admin;
GRANT EXECUTE ON FUNCTION wasend._check_lane_options(integer, time, time, text) TO wasend_admin;
GRANT EXECUTE ON FUNCTION wasend._normalize_recipient(text) TO wasend_admin;

-- Refuse a campaign row the API would not write.  Returns the first
-- problem as (SQLSTATE, message, hint), or NULL: the trigger raises it, the upgrade
-- lists it.  c_old is NULL for a new row; otherwise only the columns that
-- differ from it are checked.
CREATE FUNCTION wasend._campaign_problem(c wasend.campaigns, c_old wasend.campaigns)
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ins boolean := c_old IS NULL;
    e_state text;
    e_msg text;
    e_hint text;
BEGIN
    IF ins OR c.name IS DISTINCT FROM c_old.name THEN
        IF c.name IS NULL OR btrim(c.name) = '' THEN
            RETURN ARRAY['22023', 'campaign name must not be empty',
                         'Give the campaign a name you will recognize in wasend.campaign_progress.'];
        END IF;
    END IF;
    IF ins OR c.number_id IS DISTINCT FROM c_old.number_id THEN
        IF c.number_id IS NULL THEN
            RETURN ARRAY['22004', 'number id must not be null',
                         'Pass the id returned by wasend_add_number().'];
        END IF;
        IF NOT EXISTS (SELECT 1 FROM wasend.whatsapp_numbers n WHERE n.id = c.number_id) THEN
            RETURN ARRAY['23503', format('number %s does not exist', c.number_id),
                         'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.'];
        END IF;
    END IF;
    IF ins OR c.status IS DISTINCT FROM c_old.status THEN
        IF c.status IS NULL OR c.status NOT IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled') THEN
            RETURN ARRAY['22023', format('campaign status must be draft, scheduled, running, paused, completed or cancelled, not %s', coalesce(c.status, 'NULL')),
                         'Use wasend_start_campaign(), wasend_pause_campaign(), wasend_resume_campaign() and wasend_cancel_campaign().'];
        END IF;
    END IF;
    IF ins OR c.kind IS DISTINCT FROM c_old.kind THEN
        IF c.kind IS NULL OR c.kind NOT IN ('campaign', 'transactional') THEN
            RETURN ARRAY['22023', format('campaign kind must be campaign or transactional, not %s', coalesce(c.kind, 'NULL')),
                         'A number''s transactional lane is made by wasend_send(); every other campaign is of kind campaign.'];
        END IF;
    END IF;
    IF ins OR c.error_threshold IS DISTINCT FROM c_old.error_threshold THEN
        IF c.error_threshold IS NULL OR NOT (c.error_threshold > 0 AND c.error_threshold <= 1) THEN
            RETURN ARRAY['22023', format('error_threshold must be above 0 and at most 1, not %s', coalesce(c.error_threshold::text, 'NULL')),
                         'It is the share of failed results that pauses the campaign, e.g. 0.05 for 5%.'];
        END IF;
    END IF;
    IF ins OR c.error_window IS DISTINCT FROM c_old.error_window THEN
        IF c.error_window IS NULL OR c.error_window NOT BETWEEN 10 AND 10000 THEN
            RETURN ARRAY['22023', format('error_window must be between 10 and 10000, not %s', coalesce(c.error_window::text, 'NULL')),
                         'It is how many of the last results the circuit breaker counts, e.g. 200.'];
        END IF;
    END IF;
    IF ins OR c.pause_on_quality IS DISTINCT FROM c_old.pause_on_quality
       OR c.pacing IS DISTINCT FROM c_old.pacing OR c.frequency_window IS DISTINCT FROM c_old.frequency_window
       OR c.pacing_hold IS DISTINCT FROM c_old.pacing_hold OR c.pacing_sample IS DISTINCT FROM c_old.pacing_sample THEN
        IF c.pause_on_quality IS NULL OR c.pacing IS NULL OR c.frequency_window IS NULL
           OR c.pacing_hold IS NULL OR c.pacing_sample IS NULL THEN
            RETURN ARRAY['22004', 'pause_on_quality, pacing, pacing_sample, pacing_hold and frequency_window must not be null',
                         'Leave them out for the defaults (true, meta, 1000, 15 minutes, 7 days).'];
        END IF;
    END IF;
    IF ins OR c.category IS DISTINCT FROM c_old.category THEN
        IF c.category IS NULL THEN
            RETURN ARRAY['22004', 'category must not be null',
                         'Use the category Meta approved the template under: marketing, utility or authentication; service for a message that is not a template.'];
        END IF;
    END IF;
    IF ins OR ROW(c.category, c.pacing, c.pacing_sample, c.pacing_hold, c.frequency_cap, c.frequency_window)
              IS DISTINCT FROM
              ROW(c_old.category, c_old.pacing, c_old.pacing_sample, c_old.pacing_hold, c_old.frequency_cap, c_old.frequency_window) THEN
        BEGIN
            PERFORM wasend._check_campaign_options(c.category, c.pacing, c.pacing_sample, c.pacing_hold,
                                                   c.frequency_cap, c.frequency_window);
        EXCEPTION WHEN invalid_parameter_value OR null_value_not_allowed THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT, e_hint = PG_EXCEPTION_HINT;
            RETURN ARRAY[e_state, e_msg, e_hint];
        END;
    END IF;
    IF ins OR c.sample_left IS DISTINCT FROM c_old.sample_left THEN
        IF c.sample_left <= 0 THEN
            RETURN ARRAY['22023', format('sample_left must be positive or NULL, not %s', c.sample_left),
                         'It counts down the first sample of a new template (pacing sample); NULL sends without one.'];
        END IF;
    END IF;
    IF ins OR c.pause_rule IS DISTINCT FROM c_old.pause_rule THEN
        IF c.pause_rule NOT IN ('quality', 'template') THEN
            RETURN ARRAY['22023', format('pause_rule must be quality, template or NULL, not %s', c.pause_rule),
                         'It says which all-clear resumes a campaign the senders paused; NULL for one only a person resumes.'];
        END IF;
    END IF;
    IF ins OR ROW(c.priority, c.send_window_start, c.send_window_end, c.send_timezone)
              IS DISTINCT FROM
              ROW(c_old.priority, c_old.send_window_start, c_old.send_window_end, c_old.send_timezone) THEN
        BEGIN
            PERFORM wasend._check_lane_options(c.priority, c.send_window_start, c.send_window_end, c.send_timezone);
        EXCEPTION WHEN invalid_parameter_value OR null_value_not_allowed THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT, e_hint = PG_EXCEPTION_HINT;
            RETURN ARRAY[e_state, e_msg, e_hint];
        END;
    END IF;
    IF ins OR c.started_at IS DISTINCT FROM c_old.started_at OR c.created_at IS DISTINCT FROM c_old.created_at
       OR c.updated_at IS DISTINCT FROM c_old.updated_at THEN
        IF c.created_at IS NULL OR c.updated_at IS NULL THEN
            RETURN ARRAY['22004', 'created_at and updated_at must not be null',
                         'Leave them to wasend: updated_at = now() marks a change.'];
        END IF;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._campaign_problem(wasend.campaigns, wasend.campaigns) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._campaign_problem(wasend.campaigns, wasend.campaigns) TO wasend_admin;

-- campaigns: the message as before, and every other column
CREATE OR REPLACE FUNCTION wasend._campaign_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text[];
BEGIN
    IF TG_OP = 'INSERT' OR NEW.message IS DISTINCT FROM OLD.message THEN
        PERFORM wasend._check_message(NEW.message, 'campaign message');
    END IF;
    p := wasend._campaign_problem(NEW, OLD);
    IF p IS NOT NULL THEN
        RAISE EXCEPTION '%', p[2] USING ERRCODE = p[1], HINT = p[3];
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER campaign_check ON wasend.campaigns;
CREATE TRIGGER campaign_check BEFORE INSERT OR UPDATE ON wasend.campaigns
    FOR EACH ROW EXECUTE FUNCTION wasend._campaign_check();

-- whatsapp_numbers: as before, and the columns the senders write from
-- Meta's answers and the ones that must not be null (a NOT NULL
-- constraint's DETAIL would show the row, token included)
CREATE OR REPLACE FUNCTION wasend._number_check() RETURNS trigger
LANGUAGE plpgsql
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
    -- a NULL token is the number's token file (wasend.token_directory,
    -- see below: the column may be NULL since 0.6.0)
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
    IF TG_OP = 'INSERT' OR NEW.quality_rating IS DISTINCT FROM OLD.quality_rating THEN
        IF NEW.quality_rating NOT IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN') THEN
            RAISE EXCEPTION 'quality_rating must be GREEN, YELLOW, RED, UNKNOWN or NULL, not %', NEW.quality_rating
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.can_send_message IS DISTINCT FROM OLD.can_send_message THEN
        IF NEW.can_send_message NOT IN ('AVAILABLE', 'LIMITED', 'BLOCKED') THEN
            RAISE EXCEPTION 'can_send_message must be AVAILABLE, LIMITED, BLOCKED or NULL, not %', NEW.can_send_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.pause_rule IS DISTINCT FROM OLD.pause_rule THEN
        IF NEW.pause_rule <> 'health' THEN
            RAISE EXCEPTION 'pause_rule of a number must be health or NULL, not %', NEW.pause_rule
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'health: the number''s health all-clear resumes it; NULL: only wasend_resume_number() does.';
        END IF;
    END IF;
    IF NEW.limits_due_at IS NULL OR NEW.created_at IS NULL OR NEW.updated_at IS NULL THEN
        RAISE EXCEPTION 'limits_due_at, created_at and updated_at of a number must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Set limits_due_at = now() to have its messaging limit read again soon; leave the others to wasend.';
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

-- error_policy: the policy columns an administrator edits.  The backoff
-- and pause are bounded so that no answer's retry time or pause can
-- overflow (the record would fail on it).
CREATE FUNCTION wasend._error_policy_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.code IS NULL OR NEW.code !~ '^(\*|-?[0-9]{1,9}|[a-z][a-z0-9_]{0,63})$' THEN
        RAISE EXCEPTION 'invalid error policy code "%"', coalesce(NEW.code, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a Graph API error code (e.g. 131056), a transport class (timeout, connect, reset, tls, http_5xx, bad_response, transport), or * for every other error.';
    END IF;
    IF NEW.action IS NULL OR NEW.action NOT IN ('retry', 'fail', 'pause_number', 'pause_campaign') THEN
        RAISE EXCEPTION 'error policy action must be retry, fail, pause_number or pause_campaign, not %', coalesce(NEW.action, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'retry puts the row back after a backoff, fail fails it, pause_number and pause_campaign pause with the reason stored.';
    END IF;
    IF NEW.backoff IS NULL OR NEW.backoff < '0'::interval OR NEW.backoff > '1 year'::interval THEN
        RAISE EXCEPTION 'backoff must be between 0 and a year, not %', coalesce(NEW.backoff::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the wait before the first retry, e.g. ''2 seconds''; later retries multiply it by backoff_factor, up to 24 hours.';
    END IF;
    IF NEW.backoff_factor IS NULL OR NEW.backoff_factor = 'NaN'::float8
       OR NOT (NEW.backoff_factor BETWEEN 1 AND 1000) THEN
        RAISE EXCEPTION 'backoff_factor must be between 1 and 1000, not %', coalesce(NEW.backoff_factor::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each retry waits backoff_factor times longer than the one before, e.g. 2.';
    END IF;
    IF NEW.pause_for <= '0'::interval OR NEW.pause_for > '1 year'::interval THEN
        RAISE EXCEPTION 'pause_for must be positive and at most a year, not %', NEW.pause_for
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long a pause_number lasts, e.g. ''10 minutes'', or NULL for a pause until a person resumes the number.';
    END IF;
    IF NEW.slow_down IS NULL OR NEW.retry_once IS NULL THEN
        RAISE EXCEPTION 'slow_down and retry_once must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give true or false.';
    END IF;
    IF NEW.jitter IS NULL OR NEW.jitter = 'NaN'::float8 OR NOT (NEW.jitter BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'jitter must be between 0 and 1, not %', coalesce(NEW.jitter::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the share by which a backoff may vary either way, e.g. 0.2 for 20%, or 0 for none.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._error_policy_check() FROM PUBLIC;
-- named so that it fires before error_policy_track (triggers fire by name)
CREATE TRIGGER error_policy_check BEFORE INSERT OR UPDATE ON wasend.error_policy
    FOR EACH ROW EXECUTE FUNCTION wasend._error_policy_check();

-- country_zones: the calling code and country too
CREATE OR REPLACE FUNCTION wasend._country_zone_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.calling_code IS NULL OR NEW.calling_code !~ '^[0-9]{1,7}$' THEN
        RAISE EXCEPTION 'invalid calling code "%"', coalesce(NEW.calling_code, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the country calling code in digits, e.g. 49 or 1.';
    END IF;
    IF NEW.country IS NULL OR btrim(NEW.country) = '' THEN
        RAISE EXCEPTION 'the country of calling code % must not be empty', NEW.calling_code
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the country''s ISO code, e.g. DE.';
    END IF;
    IF NEW.builtin IS NULL THEN
        RAISE EXCEPTION 'builtin must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave it out: a zone you add or change is not built in (false).';
    END IF;
    PERFORM wasend._check_timezone(NEW.zone, format('zone of calling code %s', NEW.calling_code));
    RETURN NEW;
END
$$;

-- prices: a price must be a finite number
CREATE OR REPLACE FUNCTION wasend._price_check() RETURNS trigger
LANGUAGE plpgsql
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
    IF NEW.price IS NULL OR NEW.price < 0 OR NEW.price IN ('NaN', 'Infinity') THEN
        RAISE EXCEPTION 'a price must be zero or more, not %', coalesce(NEW.price::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the price of one billable message in your currency, e.g. 0.0250.';
    END IF;
    RETURN NEW;
END
$$;

-- suppressions: reason and scope (the recipient is left as given: the
-- webhook suppresses whatever sender Meta names, and a recipient that is
-- no phone number matches no row)
CREATE FUNCTION wasend._suppression_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.recipient IS NULL OR btrim(NEW.recipient) = '' THEN
        RAISE EXCEPTION 'recipient must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the phone number in international format, e.g. 15551234567.';
    END IF;
    IF NEW.reason IS NULL OR btrim(NEW.reason) = '' THEN
        RAISE EXCEPTION 'a suppression needs a reason'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Say why, e.g. ''asked by phone''.';
    END IF;
    IF NEW.scope IS NULL OR NEW.scope NOT IN ('all', 'marketing') THEN
        RAISE EXCEPTION 'suppression scope must be all or marketing, not %', coalesce(NEW.scope, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'all: no campaign sends to the recipient; marketing: only a marketing campaign skips it.';
    END IF;
    IF NEW.created_at IS NULL THEN
        RAISE EXCEPTION 'created_at must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave it out: it defaults to now().';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._suppression_check() FROM PUBLIC;
CREATE TRIGGER suppression_check BEFORE INSERT OR UPDATE ON wasend.suppressions
    FOR EACH ROW EXECUTE FUNCTION wasend._suppression_check();

-- The rows written before that break a rule: listed, not changed.
DO $$
DECLARE
    r record;
    p text[];
    m text;
BEGIN
    FOR r IN SELECT c FROM wasend.campaigns c ORDER BY c.id LOOP
        BEGIN
            PERFORM wasend._check_message((r.c).message, 'campaign message');
            p := wasend._campaign_problem(r.c, NULL);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS m = MESSAGE_TEXT;
            p := ARRAY[NULL, m];
        END;
        IF p IS NOT NULL THEN
            RAISE WARNING 'campaign % breaks a rule of wasend 0.6.0: %', (r.c).id, p[2]
                USING HINT = 'Correct it with an UPDATE or wasend_update_campaign(); until then the senders may set it aside (wasend.campaign_progress.waiting says why).';
        END IF;
    END LOOP;
    FOR r IN SELECT c.calling_code, c.zone FROM wasend.country_zones c
              WHERE NOT coalesce(wasend._is_zone_name(c.zone), false) ORDER BY 1 LOOP
        RAISE WARNING 'country zone of calling code % is no time zone: %', r.calling_code, r.zone
            USING HINT = 'Correct it with an UPDATE of wasend.country_zones.';
    END LOOP;
END
$$;

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

/*
 * The claim reads only rows that are due.
 *
 * send_queue_ready_idx was (campaign_id, id): a claim walked a campaign's
 * rows in id order and filtered out those whose next_attempt_at was still
 * to come, so rows that wait (a closed send window, a spent messaging
 * limit, a frequency cap, a retry's backoff) were read again at every
 * claim, and rows that could go waited behind them.  With next_attempt_at
 * in the index, a claim reads a range that ends at now(): waiting rows
 * cost nothing until they are due (src/queue.sql, claim).  The claim still
 * sets status alone when it claims a row, so that update stays HOT.
 */
DROP INDEX wasend.send_queue_ready_idx;
CREATE INDEX send_queue_ready_idx ON wasend.send_queue (campaign_id, next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;

/*
 * Applying a number's limits answer locks its row FOR NO KEY UPDATE, not
 * FOR UPDATE: a user adding campaigns holds FOR KEY SHARE on the numbers
 * they reference (the foreign key), which FOR UPDATE waits for and FOR NO
 * KEY UPDATE does not.  With FOR UPDATE, a sender applying the answers of
 * many numbers in one cycle waited up to its lock_timeout on each number
 * such a user held, while holding the numbers it had applied: the user's
 * statement waited on the sender long enough for PostgreSQL's deadlock
 * check, which ended it.
 */
CREATE OR REPLACE FUNCTION wasend._apply_number_limits(number_id bigint, http integer, answer text)
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

/*
 * send_queue.waiting_for's comment names every reason its check allows
 * (send_window was missing).
 */
COMMENT ON COLUMN wasend.send_queue.waiting_for IS
'why a ready row waits until next_attempt_at: messaging_limit (the portfolio''s 24 h budget of new recipients), frequency_cap (the recipient''s recent marketing messages) or send_window (outside the campaign''s send window)';

/*
 * Messaging tiers of 2026.
 *
 * TIER_50 is a tier of Meta's (a new or low-quality portfolio, 50 unique
 * recipients in 24 h): wasend._tier_limit refused it as unknown, so an
 * account read or a webhook naming it changed nothing.  Since February
 * 2026 phone_number_quality_update carries the limit in
 * max_daily_conversations_per_business instead of current_limit (still
 * read for older payloads), as a tier or a number (wasend._tier_of).
 * business_capability_update made every number be read again; it now
 * applies its limit to the portfolio of the WhatsApp Business Account it
 * is about (entry.id): the numbers of that account, learned from the
 * webhooks' metadata into whatsapp_numbers.waba_id (or set by an admin),
 * and those sharing their business_id.  A lowered tier pauses their
 * marketing campaigns as the account read does.
 */
ALTER TABLE wasend.whatsapp_numbers
    ADD COLUMN waba_id text
        CONSTRAINT whatsapp_numbers_waba_id_check CHECK (waba_id ~ '^[0-9]{1,32}$');
COMMENT ON COLUMN wasend.whatsapp_numbers.waba_id IS
'the WhatsApp Business Account of the number (entry.id of the webhooks about it, learned from them, or set by an admin): a business_capability_update of that account changes the limit of the number''s portfolio';
GRANT SELECT (waba_id) ON wasend.whatsapp_numbers TO wasend_viewer;

CREATE OR REPLACE FUNCTION wasend._tier_limit(tier text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE tier
        WHEN 'TIER_50' THEN 50
        WHEN 'TIER_250' THEN 250
        WHEN 'TIER_2K' THEN 2000
        WHEN 'TIER_10K' THEN 10000
        WHEN 'TIER_100K' THEN 100000
        WHEN 'TIER_UNLIMITED' THEN NULL
        ELSE wasend._raise_unknown_tier(tier) END;
END
$$;
REVOKE ALL ON FUNCTION wasend._tier_limit(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._raise_unknown_tier(tier text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'unknown messaging limit tier "%"', coalesce(tier, 'NULL')
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'Known tiers: TIER_50, TIER_250, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED.',
              HINT = 'The number keeps its previous limit; set one by hand with wasend_update_number(id, messaging_limit => n) until wasend knows this tier.';
END
$$;
REVOKE ALL ON FUNCTION wasend._raise_unknown_tier(text) FROM PUBLIC;

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
    -- a NULL token is the number's token file (wasend.token_directory,
    -- see below: the column may be NULL since 0.6.0)
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
    IF NEW.waba_id IS NOT NULL AND NEW.waba_id !~ '^[0-9]{1,32}$' THEN
        RAISE EXCEPTION 'invalid waba_id "%"', NEW.waba_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the numeric id of the WhatsApp Business Account (WhatsApp Manager, Account tools), or NULL: wasend learns it from the webhooks.';
    END IF;
    IF NEW.messaging_limit_override < 0 OR NEW.messaging_limit < 0 THEN
        RAISE EXCEPTION 'messaging_limit must not be negative, not %',
                        coalesce(NEW.messaging_limit_override, NEW.messaging_limit)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number of unique recipients the portfolio may reach in 24 h (e.g. 250, 2000), or reset_messaging_limit => true to follow Meta''s tier.';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.quality_rating IS DISTINCT FROM OLD.quality_rating THEN
        IF NEW.quality_rating NOT IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN') THEN
            RAISE EXCEPTION 'quality_rating must be GREEN, YELLOW, RED, UNKNOWN or NULL, not %', NEW.quality_rating
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.can_send_message IS DISTINCT FROM OLD.can_send_message THEN
        IF NEW.can_send_message NOT IN ('AVAILABLE', 'LIMITED', 'BLOCKED') THEN
            RAISE EXCEPTION 'can_send_message must be AVAILABLE, LIMITED, BLOCKED or NULL, not %', NEW.can_send_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.pause_rule IS DISTINCT FROM OLD.pause_rule THEN
        IF NEW.pause_rule <> 'health' THEN
            RAISE EXCEPTION 'pause_rule of a number must be health or NULL, not %', NEW.pause_rule
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'health: the number''s health all-clear resumes it; NULL: only wasend_resume_number() does.';
        END IF;
    END IF;
    IF NEW.limits_due_at IS NULL OR NEW.created_at IS NULL OR NEW.updated_at IS NULL THEN
        RAISE EXCEPTION 'limits_due_at, created_at and updated_at of a number must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Set limits_due_at = now() to have its messaging limit read again soon; leave the others to wasend.';
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

CREATE OR REPLACE FUNCTION wasend._tier_of(v jsonb) RETURNS text
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

CREATE OR REPLACE FUNCTION wasend._apply_quality_update(v jsonb) RETURNS bigint
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

CREATE OR REPLACE FUNCTION wasend._apply_capability_update(waba text, v jsonb) RETURNS bigint
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

CREATE OR REPLACE FUNCTION wasend._learn_wabas(payload jsonb) RETURNS void
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

    -- the WhatsApp Business Account of the numbers it names
    PERFORM wasend._learn_wabas(payload);
    -- each change with the id of its entry (the account it is about)
    FOR ch IN SELECT c || jsonb_build_object('entry_id', e -> 'id')
                FROM jsonb_path_query(payload, '$.entry[*]') e
               CROSS JOIN LATERAL jsonb_path_query(e, '$.changes[*]') c
               WHERE jsonb_typeof(c) = 'object' AND c ->> 'field' IN ('message_template_status_update', 'phone_number_quality_update',
                                       'business_capability_update')
                 AND jsonb_typeof(c -> 'value') = 'object' LOOP
        BEGIN
            CASE ch ->> 'field'
                WHEN 'message_template_status_update' THEN
                    n_camp := n_camp + wasend._apply_template_status(ch -> 'value');
                WHEN 'phone_number_quality_update' THEN
                    n_camp := n_camp + wasend._apply_quality_update(ch -> 'value');
                ELSE
                    -- the limit of the account's portfolio changed
                    n_camp := n_camp + wasend._apply_capability_update(
                        CASE WHEN jsonb_typeof(ch -> 'entry_id') = 'string' THEN ch ->> 'entry_id' END,
                        ch -> 'value');
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
REVOKE ALL ON FUNCTION wasend._ingest_verified(text) FROM PUBLIC;

/*
 * Throughput level.
 *
 * Meta raises a number from 80 to 1,000 messages a second by itself
 * (throughput.level HIGH; STANDARD is 80).  The account read asks for the
 * level too and stores it in whatsapp_numbers.throughput_level.  A number
 * with follow_throughput (false by default: a rate set by hand is never
 * touched) sends at 1000 a second while the level is HIGH and at 80 when it
 * is STANDARD; any other level leaves its rate.  wasend_add_number and
 * wasend_update_number take follow_throughput (a new last parameter, so
 * both are made again with their grants).
 */
ALTER TABLE wasend.whatsapp_numbers
    ADD COLUMN throughput_level text
        CONSTRAINT whatsapp_numbers_throughput_level_check CHECK (throughput_level ~ '^[A-Z][A-Z0-9_]{0,63}$'),
    ADD COLUMN follow_throughput boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN wasend.whatsapp_numbers.throughput_level IS
'throughput.level as the Graph API last said it: STANDARD (80 messages per second), HIGH (1,000 after Meta''s upgrade), ...';
COMMENT ON COLUMN wasend.whatsapp_numbers.follow_throughput IS
'true: max_send_rate_per_sec follows Meta''s throughput level (HIGH 1000, STANDARD 80); false: it stays as set';
GRANT SELECT (throughput_level, follow_throughput) ON wasend.whatsapp_numbers TO wasend_viewer;

DROP FUNCTION wasend.wasend_add_number(text, text, integer, text);
DROP FUNCTION wasend.wasend_update_number(bigint, text, integer, text, integer, boolean);

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
    -- a NULL token is the number's token file (wasend.token_directory,
    -- see below: the column may be NULL since 0.6.0)
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
    IF NEW.waba_id IS NOT NULL AND NEW.waba_id !~ '^[0-9]{1,32}$' THEN
        RAISE EXCEPTION 'invalid waba_id "%"', NEW.waba_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use the numeric id of the WhatsApp Business Account (WhatsApp Manager, Account tools), or NULL: wasend learns it from the webhooks.';
    END IF;
    IF NEW.throughput_level !~ '^[A-Z][A-Z0-9_]{0,63}$' THEN
        RAISE EXCEPTION 'invalid throughput_level "%"', left(NEW.throughput_level, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The senders read it from the Graph API; leave it to them.';
    END IF;
    IF NEW.follow_throughput IS NULL THEN
        RAISE EXCEPTION 'follow_throughput must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give true to have the rate follow Meta''s throughput level, false to keep max_send_rate_per_sec as set.';
    END IF;
    IF NEW.messaging_limit_override < 0 OR NEW.messaging_limit < 0 THEN
        RAISE EXCEPTION 'messaging_limit must not be negative, not %',
                        coalesce(NEW.messaging_limit_override, NEW.messaging_limit)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number of unique recipients the portfolio may reach in 24 h (e.g. 250, 2000), or reset_messaging_limit => true to follow Meta''s tier.';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.quality_rating IS DISTINCT FROM OLD.quality_rating THEN
        IF NEW.quality_rating NOT IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN') THEN
            RAISE EXCEPTION 'quality_rating must be GREEN, YELLOW, RED, UNKNOWN or NULL, not %', NEW.quality_rating
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.can_send_message IS DISTINCT FROM OLD.can_send_message THEN
        IF NEW.can_send_message NOT IN ('AVAILABLE', 'LIMITED', 'BLOCKED') THEN
            RAISE EXCEPTION 'can_send_message must be AVAILABLE, LIMITED, BLOCKED or NULL, not %', NEW.can_send_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The senders read it from the Graph API; leave it to them.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.pause_rule IS DISTINCT FROM OLD.pause_rule THEN
        IF NEW.pause_rule <> 'health' THEN
            RAISE EXCEPTION 'pause_rule of a number must be health or NULL, not %', NEW.pause_rule
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'health: the number''s health all-clear resumes it; NULL: only wasend_resume_number() does.';
        END IF;
    END IF;
    IF NEW.limits_due_at IS NULL OR NEW.created_at IS NULL OR NEW.updated_at IS NULL THEN
        RAISE EXCEPTION 'limits_due_at, created_at and updated_at of a number must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Set limits_due_at = now() to have its messaging limit read again soon; leave the others to wasend.';
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

CREATE FUNCTION wasend.wasend_add_number(phone_number_id text, access_token text DEFAULT NULL,
                                                    max_send_rate_per_sec integer DEFAULT 80,
                                                    business_id text DEFAULT NULL,
                                                    follow_throughput boolean DEFAULT false)
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
                                         business_id, follow_throughput)
    VALUES (phone_number_id, access_token, max_send_rate_per_sec, business_id, follow_throughput)
    RETURNING id INTO new_id;
    IF access_token IS NULL THEN
        PERFORM wasend._check_token_file(phone_number_id);
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN new_id;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_add_number(text, text, integer, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_add_number(text, text, integer, text, boolean) TO wasend_admin;

CREATE FUNCTION wasend.wasend_update_number(number_id bigint, access_token text DEFAULT NULL,
                                     max_send_rate_per_sec integer DEFAULT NULL,
                                     business_id text DEFAULT NULL,
                                     messaging_limit integer DEFAULT NULL,
                                     reset_messaging_limit boolean DEFAULT false,
                                     follow_throughput boolean DEFAULT NULL)
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
       AND messaging_limit IS NULL AND NOT coalesce(reset_messaging_limit, false)
       AND follow_throughput IS NULL THEN
        RAISE EXCEPTION 'nothing to update'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a new access_token, max_send_rate_per_sec, business_id, messaging_limit or follow_throughput, or reset_messaging_limit => true.';
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
           -- turned on once the level is known: the rate follows it now,
           -- not at the next read of the limits
           max_send_rate_per_sec = coalesce(wasend_update_number.max_send_rate_per_sec,
                                            CASE WHEN wasend_update_number.follow_throughput
                                                 THEN CASE w.throughput_level WHEN 'HIGH' THEN 1000
                                                                              WHEN 'STANDARD' THEN 80 END END,
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
           follow_throughput = coalesce(wasend_update_number.follow_throughput, w.follow_throughput),
           updated_at = now()
     WHERE w.id = number_id;
    PERFORM wasend._wake_at_commit();
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_update_number(bigint, text, integer, text, integer, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_update_number(bigint, text, integer, text, integer, boolean, boolean) TO wasend_admin;

CREATE OR REPLACE FUNCTION wasend._apply_number_limits(number_id bigint, http integer, answer text)
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

/*
 * Errors that belong to one row fail that row.
 *
 * 132000 (template parameter count mismatch) and 132012 (parameter
 * format mismatch) are errors of one row's own message, yet paused the
 * whole campaign: every resume tried that row again and paused again, so
 * the campaign never completed.  They now fail the row, as 100, 131051
 * and 135000 do; a campaign whose rows keep failing is paused by its
 * circuit breaker.  The template's own errors (132001 missing, 132015
 * paused, 132016 disabled) still pause the campaign.  The descriptions
 * say which is which.  New built-in codes: 131062 (business-scoped user
 * id recipients not supported for this message: fail the row) and 131055
 * (Marketing Messages API terms not accepted: pause the number until a
 * person accepted them).  Only rows still as shipped change (origin
 * 'builtin', with the trigger off so that they stay built in); a code a
 * user already added keeps the user's row.
 */
ALTER TABLE wasend.error_policy DISABLE TRIGGER error_policy_track;
UPDATE wasend.error_policy p
   SET action = v.action, description = v.description
  FROM (VALUES
    ('100', 'fail', 'invalid parameter: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('131051', 'fail', 'unsupported message type: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('135000', 'fail', 'generic user error: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132000', 'fail', 'template parameter count mismatch in this row''s message: fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132001', 'pause_campaign', 'template does not exist: the template itself, pause the campaign'),
    ('132012', 'fail', 'template parameter format mismatch in this row''s message: fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132015', 'pause_campaign', 'template paused: the template itself, pause the campaign'),
    ('132016', 'pause_campaign', 'template disabled: the template itself, pause the campaign'))
    AS v (code, action, description)
 WHERE p.code = v.code AND p.origin = 'builtin';
INSERT INTO wasend.error_policy AS p (code, action, backoff, backoff_factor, pause_for, slow_down, description, origin) VALUES
    ('131062', 'fail', '2 seconds', 2, NULL, false, 'business-scoped user id recipients are not supported for this message (authentication one-tap, zero-tap and copy-code templates): fail the row; send it to the phone number', 'builtin'),
    ('131055', 'pause_number', '2 seconds', 2, NULL, false, 'Marketing Messages API terms not accepted: a person must accept them in WhatsApp Manager, then resume the number', 'builtin')
ON CONFLICT (code) DO NOTHING;
ALTER TABLE wasend.error_policy ENABLE TRIGGER error_policy_track;

/*
 * Usernames and business-scoped user IDs (BSUIDs).
 *
 * Since 2026 a WhatsApp user may hide their phone number behind a
 * username, and Meta names every user to a business by a BSUID
 * (US.13491208655302741918; a parent BSUID shared by linked portfolios:
 * US.ENT.11815799212886844830).  Webhooks may carry the BSUID alone, and
 * a message may be sent to a BSUID with Meta's "recipient" field.
 *
 * - A recipient may be a BSUID (kept exactly as given), in
 *   wasend_enqueue, INSERTs into send_queue, wasend_send and
 *   wasend_test_send; the senders send it as "recipient" instead of "to".
 *   A BSUID's send window zone is its country's (_recipient_zone, through
 *   the new index on country_zones.country).
 * - wasend.identities pairs a BSUID with the phone number, parent BSUID
 *   and username Meta gave with it, learned from every webhook
 *   (_remember_identities) and from BSUID changes (user_id_update, the
 *   system messages user_changed_user_id / user_changed_number:
 *   _apply_user_id_updates).  Dumped.
 * - Every rule on recipients looks at all of a person's names
 *   (_recipient_names): suppressions (enqueue, wasend_send, test sends,
 *   the claims), the messaging-limit window (a person counts once,
 *   however addressed: _portfolio_sync's backfill, test sends, claims),
 *   the frequency cap, the free window of an inbound message, the dry
 *   run; the campaign report prices a BSUID by its paired phone number or
 *   its country (_price_digits).
 * - Inbound messages without a phone number are stored under the
 *   sender's BSUID (inbound_messages.from_user_id is new); a STOP
 *   suppresses every name the message gives; user_preferences with only
 *   a user_id apply; statuses keep the recipient's BSUID on the row
 *   (send_queue.user_id, pending_statuses.user_id are new).
 */

CREATE OR REPLACE FUNCTION wasend._normalize_recipient(recipient text) RETURNS text
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

ALTER TABLE wasend.send_queue ADD COLUMN user_id text;
COMMENT ON COLUMN wasend.send_queue.user_id IS
'the recipient''s business-scoped user ID (BSUID) as Meta''s status webhooks named it; NULL until one did';
ALTER TABLE wasend.inbound_messages ADD COLUMN from_user_id text;
COMMENT ON COLUMN wasend.inbound_messages.from_number IS
'the sender''s phone number, or their BSUID when Meta gave no phone number (a user with a username)';
COMMENT ON COLUMN wasend.inbound_messages.from_user_id IS
'the sender''s business-scoped user ID (BSUID), when Meta gave it';
ALTER TABLE wasend.pending_statuses ADD COLUMN user_id text;
-- a BSUID's zone is its country's (wasend._recipient_zone)
CREATE INDEX country_zones_country_idx ON wasend.country_zones (country);

-- Who is who.  Meta names a WhatsApp user by phone number and, since
-- 2026, by a business-scoped user ID (BSUID, wasend._normalize_recipient);
-- a user with a username may hide the phone number, and webhooks then
-- carry the BSUID alone.  Each webhook that names a user both ways
-- (inbound contacts and messages, statuses, user_preferences) pairs them
-- here, with the parent BSUID and the username when Meta gives them; a
-- user_id_update (the user changed phone number: Meta gives a new BSUID)
-- links the new BSUID to the old one and takes the old phone number off.
-- Every rule that looks at a recipient (suppressions, the messaging-limit
-- window, the frequency cap, the free 24 h window of an inbound message)
-- looks at all of a person's names: wasend._recipient_names.  Dumped: a
-- restore keeps what Meta said.  An administrator may add pairs known
-- from elsewhere (a CRM), or delete a wrong one.
CREATE TABLE wasend.identities (
    user_id         text PRIMARY KEY,
    phone           text,
    parent_user_id  text,
    username        text,
    previous_user_id text,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX identities_phone_idx ON wasend.identities (phone) WHERE phone IS NOT NULL;
CREATE INDEX identities_parent_idx ON wasend.identities (parent_user_id) WHERE parent_user_id IS NOT NULL;
CREATE INDEX identities_previous_idx ON wasend.identities (previous_user_id) WHERE previous_user_id IS NOT NULL;
COMMENT ON TABLE wasend.identities IS
'A user''s BSUID and the phone number, parent BSUID and username Meta paired it with; the rules on recipients treat all of them as one person';
COMMENT ON COLUMN wasend.identities.previous_user_id IS
'the BSUID this one replaced when the user changed phone number (user_id_update)';
REVOKE ALL ON wasend.identities FROM PUBLIC;
GRANT SELECT ON wasend.identities TO wasend_viewer;
GRANT INSERT, UPDATE, DELETE ON wasend.identities TO wasend_admin;

-- Validates every pair: a BSUID, a phone number (stored without its +),
-- a parent BSUID (with "ENT."), a username of at most 64 characters.  A
-- phone number or parent BSUID names one user, with one BSUID per
-- portfolio: more than 20 BSUIDs on one is not Meta's data (a placeholder
-- number in an import) and would make one person of many, so the 21st
-- is refused.  Its lookups keep to the indexes (see _identity_names_sync).
CREATE FUNCTION wasend._identity_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    IF NEW.user_id IS NULL OR NEW.user_id !~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$' THEN
        RAISE EXCEPTION 'invalid BSUID "%"', left(coalesce(NEW.user_id, 'NULL'), 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the business-scoped user ID exactly as Meta gave it: two capital letters, a dot, up to 128 letters and digits, e.g. US.13491208655302741918.';
    END IF;
    IF NEW.phone IS NOT NULL AND NEW.phone !~ '^\+?[0-9]{7,15}$' THEN
        RAISE EXCEPTION 'invalid phone number "%"', left(NEW.phone, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the phone number in international format without spaces or dashes, e.g. 15551234567, or NULL.';
    END IF;
    NEW.phone := ltrim(NEW.phone, '+');
    IF NEW.parent_user_id IS NOT NULL AND NEW.parent_user_id !~ '^[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}$' THEN
        RAISE EXCEPTION 'invalid parent BSUID "%"', left(NEW.parent_user_id, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A parent BSUID has "ENT." after the country, e.g. US.ENT.11815799212886844830; or give NULL.';
    END IF;
    IF NEW.previous_user_id IS NOT NULL
       AND NEW.previous_user_id !~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$' THEN
        RAISE EXCEPTION 'invalid previous BSUID "%"', left(NEW.previous_user_id, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the BSUID the user had before, exactly as Meta gave it, or NULL.';
    END IF;
    IF length(NEW.username) > 64 THEN
        RAISE EXCEPTION 'a username is at most 64 characters'
            USING ERRCODE = 'string_data_right_truncation',
                  HINT = 'Give the username as Meta gave it, or NULL.';
    END IF;
    IF NEW.phone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.phone IS DISTINCT FROM OLD.phone)
       AND (SELECT count(*) FROM (SELECT 1 FROM wasend.identities i
                                   WHERE i.phone = NEW.phone AND i.user_id <> NEW.user_id
                                   LIMIT 20) x) >= 20 THEN
        RAISE EXCEPTION 'phone number "%" is already paired with 20 BSUIDs', NEW.phone
            USING ERRCODE = 'check_violation',
                  HINT = 'A phone number is one user, with one BSUID per business portfolio; pair it with the right BSUID only.';
    END IF;
    IF NEW.parent_user_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.parent_user_id IS DISTINCT FROM OLD.parent_user_id)
       AND (SELECT count(*) FROM (SELECT 1 FROM wasend.identities i
                                   WHERE i.parent_user_id = NEW.parent_user_id AND i.user_id <> NEW.user_id
                                   LIMIT 20) x) >= 20 THEN
        RAISE EXCEPTION 'parent BSUID "%" is already paired with 20 BSUIDs', NEW.parent_user_id
            USING ERRCODE = 'check_violation',
                  HINT = 'A parent BSUID is one user, with one BSUID per business portfolio.';
    END IF;
    IF NEW.updated_at IS NULL THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._identity_check() FROM PUBLIC;
CREATE TRIGGER identity_check BEFORE INSERT OR UPDATE ON wasend.identities
    FOR EACH ROW EXECUTE FUNCTION wasend._identity_check();

-- Every name that is paired with another, and its person: the first of
-- the person's names in C order (a phone number when one is known:
-- digits sort first, so a phone-only recipient keeps its own name as
-- key).  A person is every name linked to the first through the pairs of
-- wasend.identities (a BSUID with its phone number, parent BSUID and the
-- BSUID it replaced), however many steps out: a parent BSUID links the
-- BSUIDs of a user's portfolios, a changed BSUID the old one.  A name in
-- no pair is a person alone and not listed.  Kept by a trigger on
-- wasend.identities (_identity_names_sync), so that the rules read a
-- person's names with two index lookups (wasend._recipient_names, and
-- the claim in src/queue.sql) instead of walking the pairs; not dumped (a
-- restore's identities make it again).
CREATE TABLE wasend.identity_names (
    name            text PRIMARY KEY,
    person          text NOT NULL
);
CREATE INDEX identity_names_person_idx ON wasend.identity_names (person);
COMMENT ON TABLE wasend.identity_names IS
'internal: every name in a pair of wasend.identities and its person''s key (the first of the person''s names); kept by a trigger';
REVOKE ALL ON wasend.identity_names FROM PUBLIC;
GRANT SELECT ON wasend.identity_names TO wasend_viewer;

-- Keep wasend.identity_names right after a change of a pair: the people
-- of the names the change touches (its old and new names, and everyone
-- they were one person with) are worked out again from the pairs, one
-- person at a time, each from a name not yet placed; only names whose
-- person changed are written.  Writers of pairs take turns: the SHARE ROW
-- EXCLUSIVE lock on identity_names (which conflicts with itself, not with
-- the readers' ACCESS SHARE: no claim waits for it) is held to the end
-- of the transaction, and each statement below sees the pairs the writer
-- before committed (READ COMMITTED), so two transactions pairing names of
-- one person cannot each write half of it.  Runs as the
-- extension's owner (SECURITY DEFINER): an administrator who writes a pair
-- may not write wasend.identity_names itself; it touches only these two
-- tables of schema wasend, by name.  Its lookups must read the indexes however
-- stale the statistics: a plan made while the table looked empty, cached
-- for a statement that writes many pairs (a bulk load, one statement),
-- would scan the whole table once per row; enable_seqscan = off keeps
-- them on the indexes (each is an equality on an indexed column).
CREATE FUNCTION wasend._identity_names_sync() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    seeds text[];
    touched text[];
    seed text;
    members text[];
    placed text[] := '{}';
BEGIN
    LOCK TABLE wasend.identity_names IN SHARE ROW EXCLUSIVE MODE;
    IF TG_OP <> 'INSERT' THEN
        seeds := ARRAY[OLD.user_id, OLD.phone, OLD.parent_user_id, OLD.previous_user_id];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        seeds := seeds || ARRAY[NEW.user_id, NEW.phone, NEW.parent_user_id, NEW.previous_user_id];
    END IF;
    SELECT array_agg(DISTINCT x.n) INTO touched
      FROM (SELECT u AS n FROM unnest(seeds) u WHERE u IS NOT NULL
            UNION
            SELECT m.name FROM wasend.identity_names m
             WHERE m.person IN (SELECT k.person FROM wasend.identity_names k
                                 WHERE k.name = ANY (seeds))) x;
    FOREACH seed IN ARRAY coalesce(touched, '{}') LOOP
        CONTINUE WHEN seed = ANY (placed);
        WITH RECURSIVE person(n) AS (
            SELECT seed
            UNION
            -- (a lateral lookup per name: each of its four conditions
            -- reads an index)
            SELECT x.n FROM person p
             CROSS JOIN LATERAL (SELECT i.* FROM wasend.identities i
                                  WHERE i.user_id = p.n OR i.phone = p.n
                                     OR i.parent_user_id = p.n OR i.previous_user_id = p.n) i
             CROSS JOIN LATERAL (VALUES (i.user_id), (i.phone), (i.parent_user_id), (i.previous_user_id)) x(n)
             WHERE x.n IS NOT NULL)
        SELECT array_agg(n ORDER BY n COLLATE "C") INTO members FROM person;
        placed := placed || members;
        IF array_length(members, 1) > 1 THEN
            INSERT INTO wasend.identity_names AS m (name, person)
            SELECT u, members[1] FROM unnest(members) u
            ON CONFLICT (name) DO UPDATE SET person = excluded.person
             WHERE m.person IS DISTINCT FROM excluded.person;
        ELSE
            -- a person alone is not listed
            DELETE FROM wasend.identity_names m WHERE m.name = seed;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._identity_names_sync() FROM PUBLIC;
CREATE TRIGGER identity_names_sync AFTER INSERT OR DELETE ON wasend.identities
    FOR EACH ROW EXECUTE FUNCTION wasend._identity_names_sync();
-- (an update that changes no link, a username, changes no person)
CREATE TRIGGER identity_names_sync_update
    AFTER UPDATE OF user_id, phone, parent_user_id, previous_user_id ON wasend.identities
    FOR EACH ROW
    WHEN ((OLD.user_id, OLD.phone, OLD.parent_user_id, OLD.previous_user_id)
          IS DISTINCT FROM (NEW.user_id, NEW.phone, NEW.parent_user_id, NEW.previous_user_id))
    EXECUTE FUNCTION wasend._identity_names_sync();

-- A TRUNCATE of the pairs leaves no person: their names go too.  Runs as
-- the extension's owner, as the sync does.
CREATE FUNCTION wasend._identity_names_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE wasend.identity_names;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._identity_names_truncate() FROM PUBLIC;
CREATE TRIGGER identity_names_truncate AFTER TRUNCATE ON wasend.identities
    FOR EACH STATEMENT EXECUTE FUNCTION wasend._identity_names_truncate();

-- All the names of the person a recipient names, in C order, the
-- recipient among them (wasend.identity_names); the first is the
-- person's key.  Runs as its caller (the API functions as owner, the
-- report as its reader); the claim does the same lookup inline.
CREATE FUNCTION wasend._recipient_names(recipient text) RETURNS text[]
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT array_agg(m.name ORDER BY m.name COLLATE "C")
                       FROM wasend.identity_names k
                       JOIN wasend.identity_names m ON m.person = k.person
                      WHERE k.name = recipient),
                    ARRAY[recipient])
$$;
REVOKE ALL ON FUNCTION wasend._recipient_names(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._recipient_names(text) TO wasend_viewer;

-- A user's new BSUID (they changed phone number): from the user_id_update
-- field (user_id.previous / current, wa_id when Meta may share it) and
-- from the messages field's system messages user_changed_user_id and
-- user_changed_number (system.previous_user_id / user_id, system.wa_id;
-- the sender's from_user_id when previous_user_id is absent).  The new
-- BSUID is written with the old one as previous_user_id, so that what
-- the user asked for under the old one (a STOP) holds under the new, and
-- the old BSUID loses its phone number: the number is no longer theirs.
-- Runs as its caller.  Returns how many BSUIDs it wrote.
CREATE FUNCTION wasend._apply_user_id_updates(payload jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    changes jsonb;
BEGIN
    WITH v AS (
        SELECT x AS v FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') x
         WHERE jsonb_typeof(x) = 'object'),
    raw AS (
        SELECT e #>> '{user_id,previous}' AS prev, e #>> '{user_id,current}' AS cur,
               e ->> 'wa_id' AS phone, e #>> '{parent_user_id,current}' AS parent
          FROM v CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(v.v -> 'user_id_update') = 'array' THEN v.v -> 'user_id_update' ELSE '[]' END) e
         WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'user_id') = 'object'
        UNION ALL
        SELECT coalesce(e #>> '{system,previous_user_id}', e ->> 'from_user_id'), e #>> '{system,user_id}',
               e #>> '{system,wa_id}', e #>> '{system,parent_user_id}'
          FROM v CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(v.v -> 'messages') = 'array' THEN v.v -> 'messages' ELSE '[]' END) e
         WHERE jsonb_typeof(e) = 'object' AND e ->> 'type' = 'system'
           AND jsonb_typeof(e -> 'system') = 'object'
           AND e #>> '{system,type}' IN ('user_changed_user_id', 'user_changed_number')),
    ok AS (
        SELECT DISTINCT ON (r.cur) r.cur, r.prev,
               CASE WHEN ltrim(r.phone, '+') ~ '^[0-9]{7,15}$' THEN ltrim(r.phone, '+') END AS phone,
               CASE WHEN r.parent ~ '^[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}$' THEN r.parent END AS parent
          FROM raw r
         WHERE r.cur ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$' AND r.prev ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
           AND r.cur <> r.prev
         ORDER BY r.cur, r.prev),
    up AS (
        INSERT INTO wasend.identities AS i (user_id, phone, parent_user_id, previous_user_id)
        SELECT ok.cur, ok.phone, ok.parent, ok.prev FROM ok ORDER BY ok.cur
        ON CONFLICT (user_id) DO UPDATE
           SET phone = coalesce(excluded.phone, i.phone),
               parent_user_id = coalesce(excluded.parent_user_id, i.parent_user_id),
               previous_user_id = excluded.previous_user_id,
               updated_at = now()
         WHERE i.previous_user_id IS DISTINCT FROM excluded.previous_user_id
            OR (excluded.phone IS NOT NULL AND i.phone IS DISTINCT FROM excluded.phone)
        RETURNING i.user_id, i.previous_user_id, i.phone)
    SELECT count(*), coalesce(jsonb_agg(jsonb_build_array(up.user_id, up.previous_user_id, up.phone)), '[]')
      INTO n, changes FROM up;
    IF n = 0 THEN
        RETURN 0;
    END IF;
    -- what the user asked for under the old phone number holds for the
    -- user: it is kept under the old BSUID, which the new one links to
    INSERT INTO wasend.suppressions AS x (recipient, reason, scope)
    SELECT DISTINCT ON (c ->> 1) c ->> 1, s.reason, s.scope
      FROM jsonb_array_elements(changes) c
      JOIN wasend.identities i ON i.user_id = c ->> 1
      JOIN wasend.suppressions s ON s.recipient = i.phone
     WHERE i.phone IS DISTINCT FROM c ->> 2
     ORDER BY c ->> 1, s.scope = 'all' DESC
    ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
     WHERE excluded.scope = 'all' AND x.scope <> 'all';
    -- then the old BSUID's phone number is no longer the user's (after the
    -- new BSUIDs are written, so that a chain of changes in one payload
    -- clears every number but the last)
    UPDATE wasend.identities i
       SET phone = NULL, updated_at = now()
      FROM jsonb_array_elements(changes) c
     WHERE i.user_id = c ->> 1 AND i.phone IS NOT NULL
       AND i.phone IS DISTINCT FROM c ->> 2;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_user_id_updates(jsonb) FROM PUBLIC;

-- Pair the names of the users one webhook payload names both ways (see
-- wasend.identities): inbound contacts[] (wa_id, user_id, parent_user_id,
-- profile.username), messages[] (from, from_user_id,
-- from_parent_user_id), statuses[] (recipient_id, recipient_user_id,
-- recipient_parent_user_id), user_preferences[] (wa_id, user_id), system
-- messages (system.user_id, system.wa_id: a BSUID or number change), and
-- user_id_update.  A name that is not of Meta's form is left out; only
-- what is new is written (a status repeats its pair three times a
-- message), in BSUID order (two payloads lock the same rows in the same
-- order).  Runs as its caller (_ingest_verified).  Returns how many pairs
-- it wrote.
CREATE FUNCTION wasend._remember_identities(payload jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    WITH v AS (
        SELECT x AS v FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') x
         WHERE jsonb_typeof(x) = 'object'),
    named AS (
        -- where each kind of element names a user: its BSUID, phone
        -- number, parent BSUID and username (a system message: the new
        -- BSUID and number it reports)
        SELECT e #>> f.user_id AS user_id, e #>> f.phone AS phone,
               e #>> f.parent AS parent, e #>> f.username AS username
          FROM v
         CROSS JOIN (VALUES
                ('contacts', '{user_id}'::text[], '{wa_id}'::text[], '{parent_user_id}'::text[],
                 '{profile,username}'::text[]),
                ('messages', '{from_user_id}', '{from}', '{from_parent_user_id}', NULL),
                ('messages', '{system,user_id}', '{system,wa_id}', '{system,parent_user_id}', NULL),
                ('statuses', '{recipient_user_id}', '{recipient_id}', '{recipient_parent_user_id}', NULL),
                ('user_preferences', '{user_id}', '{wa_id}', '{parent_user_id}', NULL))
               f(field, user_id, phone, parent, username)
         CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(v.v -> f.field) = 'array' THEN v.v -> f.field ELSE '[]' END) e
         WHERE jsonb_typeof(e) = 'object'),
    ok AS (
        -- a BSUID another replaced (user_id_update) gets no phone number
        -- back from a late or repeated webhook: the number is no longer
        -- its user's
        SELECT x.user_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM wasend.identities r WHERE r.previous_user_id = x.user_id)
                    THEN max(CASE WHEN ltrim(x.phone, '+') ~ '^[0-9]{7,15}$' THEN ltrim(x.phone, '+') END)
               END AS phone,
               max(CASE WHEN x.parent ~ '^[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}$' THEN x.parent END) AS parent,
               max(CASE WHEN length(x.username) <= 64 THEN x.username END) AS username
          FROM named x
         WHERE x.user_id ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
         GROUP BY x.user_id),
    fresh AS (
        SELECT o.* FROM ok o
         WHERE NOT EXISTS (SELECT 1 FROM wasend.identities i
                            WHERE i.user_id = o.user_id
                              AND (o.phone IS NULL OR i.phone = o.phone)
                              AND (o.parent IS NULL OR i.parent_user_id = o.parent)
                              AND (o.username IS NULL OR i.username = o.username))),
    up AS (
        INSERT INTO wasend.identities AS i (user_id, phone, parent_user_id, username)
        SELECT f.user_id, f.phone, f.parent, f.username FROM fresh f ORDER BY f.user_id
        ON CONFLICT (user_id) DO UPDATE
           SET phone = coalesce(excluded.phone, i.phone),
               parent_user_id = coalesce(excluded.parent_user_id, i.parent_user_id),
               username = coalesce(excluded.username, i.username),
               updated_at = now()
        RETURNING 1)
    SELECT count(*) INTO n FROM up;
    m := wasend._apply_user_id_updates(payload);
    RETURN n + m;
END
$$;
REVOKE ALL ON FUNCTION wasend._remember_identities(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._recipient_zone(recipient text) RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN strpos(recipient, '.') > 0 THEN
               (SELECT z.zone FROM wasend.country_zones z
                 WHERE z.country = left(recipient, 2)
                 GROUP BY z.zone
                 ORDER BY min(length(z.calling_code)), count(*) DESC, z.zone LIMIT 1)
           ELSE
               (SELECT z.zone FROM wasend.country_zones z
                 WHERE z.calling_code IN (left(recipient, 7), left(recipient, 6), left(recipient, 5),
                                          left(recipient, 4), left(recipient, 3), left(recipient, 2),
                                          left(recipient, 1))
                 ORDER BY length(z.calling_code) DESC LIMIT 1) END
$$;

CREATE OR REPLACE FUNCTION wasend._send_queue_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    adding boolean;
BEGIN
    NEW.recipient := wasend._normalize_recipient(NEW.recipient);
    adding := TG_OP = 'INSERT' AND NEW.status = 'ready'
              AND NEW.sent_at IS NULL AND NEW.failed_at IS NULL
              AND NEW.created_at = now();
    -- (the lookup of wasend._recipient_names, inline: it runs per row)
    IF adding AND EXISTS (SELECT 1 FROM wasend.suppressions s
                           WHERE (s.recipient = NEW.recipient
                                  OR s.recipient IN (SELECT m.name FROM wasend.identity_names k
                                                       JOIN wasend.identity_names m ON m.person = k.person
                                                      WHERE k.name = NEW.recipient))
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
    IF NEW.timezone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) THEN
        PERFORM wasend._check_timezone(NEW.timezone, format('timezone of recipient %s', NEW.recipient));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.campaign_id IS DISTINCT FROM OLD.campaign_id
       OR NEW.priority IS DISTINCT FROM OLD.priority THEN
        -- the share lock keeps a sender from completing the campaign while
        -- rows are being added to it (see src/queue.sql, lock_done); a
        -- transactional lane (rows with a priority) never completes and
        -- takes no lock: wasend_send's transactions would queue up
        -- multixacts on its row
        IF NEW.priority IS NOT NULL THEN
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id;
        ELSE
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id FOR SHARE;
        END IF;
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
        IF k = 'transactional' THEN
            NEW.priority := coalesce(NEW.priority, 0);
            IF NEW.payload IS NULL THEN
                RAISE EXCEPTION 'a row of a transactional lane needs its message in payload'
                    USING ERRCODE = 'not_null_violation',
                          HINT = 'Use wasend_send(number_id, recipient, message).';
            END IF;
        ELSIF NEW.priority IS NOT NULL THEN
            RAISE EXCEPTION 'only rows of a transactional campaign have a priority'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Send one message ahead of campaign rows with wasend_send(); give a campaign a priority with wasend_update_campaign(id, priority => n).';
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

CREATE OR REPLACE FUNCTION wasend.wasend_send(number_id bigint, recipient text, message jsonb,
                            priority integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n record;
    cid bigint;
    cst text;
    r text;
    rid bigint;
BEGIN
    IF priority IS NULL OR priority < 0 OR priority > 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, not %', coalesce(priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Among wasend_send messages of a number the higher priority goes first; all of them go before campaign rows.';
    END IF;
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    SELECT x.id, x.phone_number_id INTO n FROM wasend.whatsapp_numbers x WHERE x.id = number_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.';
    END IF;
    PERFORM wasend._check_message(message, 'message');
    r := wasend._normalize_recipient(recipient);
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = ANY (wasend._recipient_names(r)) AND s.scope = 'all') THEN
        RAISE EXCEPTION 'recipient "%" is suppressed', r
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = (SELECT CASE WHEN s.recipient = r THEN s.reason
                                        ELSE format('%s (suppressed as %s)', s.reason, s.recipient) END
                              FROM wasend.suppressions s
                             WHERE s.recipient = ANY (wasend._recipient_names(r)) AND s.scope = 'all'
                             ORDER BY s.recipient = r DESC, s.created_at LIMIT 1),
                  HINT = 'The recipient asked not to be messaged, or Meta refused them; see wasend.suppressions.';
    END IF;

    -- the number's lane, made on first use (the unique index settles a race)
    SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
     WHERE c.number_id = n.id AND c.kind = 'transactional';
    IF NOT FOUND THEN
        INSERT INTO wasend.campaigns AS c (name, number_id, message, category, kind, status,
                                            started_at, pacing, priority)
        VALUES ('transactional: ' || n.phone_number_id, n.id,
                '{"type": "text", "text": {"body": "wasend_send rows carry their own message"}}'::jsonb,
                'utility', 'transactional', 'running', now(), 'off', 100)
        ON CONFLICT (number_id) WHERE kind = 'transactional' DO NOTHING
        RETURNING c.id, c.status INTO cid, cst;
        IF cid IS NULL THEN
            SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
             WHERE c.number_id = n.id AND c.kind = 'transactional';
        END IF;
        -- the row the senders lock to claim the lane one at a time
        -- (src/queue.sql, claim); owner-only, so nobody else can hold it
        INSERT INTO wasend.claim_locks (name) VALUES ('lane:' || cid::text) ON CONFLICT DO NOTHING;
    END IF;

    INSERT INTO wasend.send_queue (campaign_id, recipient, payload, priority)
    VALUES (cid, r, message, wasend_send.priority)
    RETURNING id INTO rid;
    IF cst = 'paused' THEN
        RAISE NOTICE 'the transactional lane of number % (campaign %) is paused: the message waits', n.id, cid
            USING HINT = 'See wasend.campaign_progress for why; wasend_resume_campaign(' || cid || ') sends it.';
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN rid;
END
$$;

CREATE OR REPLACE FUNCTION wasend.wasend_dry_run(campaign_id bigint)
RETURNS TABLE (would_send_now bigint, waiting_messaging_limit bigint, waiting_send_window bigint,
               waiting_frequency_cap bigint, waiting_retry bigint, suppressed bigint,
               invalid bigint, estimated_duration interval)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    lim integer;
    used bigint;
    rate integer;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT x.*, coalesce(n.business_id, 'number:' || n.id::text) AS portfolio, n.max_send_rate_per_sec AS rate
      INTO c FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    SELECT p.messaging_limit INTO lim FROM wasend.portfolios p WHERE p.portfolio = c.portfolio;
    SELECT count(*) INTO used FROM wasend.recipient_window r
     WHERE r.portfolio = c.portfolio AND r.last_at > now() - interval '24 hours';
    rate := c.rate;
    RETURN QUERY
    WITH r AS (
        SELECT q.id, q.recipient, q.next_attempt_at, q.waiting_for, nm.names[1] AS person,
               wasend._recipient_zone(q.recipient) IS NULL AS invalid,
               EXISTS (SELECT 1 FROM wasend.suppressions s
                        WHERE s.recipient = ANY (nm.names)
                          AND (s.scope = 'all' OR c.category = 'marketing')) AS suppressed,
               CASE WHEN c.send_window_start IS NOT NULL AND c.kind <> 'transactional'
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end,
                                              wasend._row_zone(c.send_timezone, q.timezone, q.recipient))
               END IS NOT NULL AS outside,
               c.frequency_cap IS NOT NULL AND c.category = 'marketing'
                 AND (SELECT count(*) FROM wasend.send_queue q2 JOIN wasend.campaigns c2 ON c2.id = q2.campaign_id
                       WHERE q2.recipient = ANY (nm.names) AND c2.category = 'marketing'
                         AND q2.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                         AND coalesce(q2.sent_at, q2.claimed_at) > now() - c.frequency_window) >= c.frequency_cap AS capped,
               lim IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM wasend.recipient_window w
                                  WHERE w.portfolio = c.portfolio AND w.recipient = ANY (nm.names)
                                    AND w.last_at > now() - interval '24 hours')
                 AND NOT EXISTS (SELECT 1 FROM wasend.inbound_messages i
                                   JOIN wasend.whatsapp_numbers n2 ON n2.phone_number_id = i.phone_number_id
                                  WHERE i.from_number = ANY (nm.names)
                                    AND i.received_at > now() - interval '24 hours'
                                    AND coalesce(n2.business_id, 'number:' || n2.id::text) = c.portfolio) AS costs
          FROM wasend.send_queue q
         CROSS JOIN LATERAL (SELECT wasend._recipient_names(q.recipient) AS names) nm
         WHERE q.campaign_id = wasend_dry_run.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'),
    k AS (
        SELECT r.*,
               CASE WHEN r.invalid THEN 'invalid'
                    WHEN r.suppressed THEN 'suppressed'
                    WHEN r.outside THEN 'send_window'
                    WHEN r.capped THEN 'frequency_cap'
                    WHEN r.next_attempt_at > now() AND r.waiting_for = 'messaging_limit' THEN 'messaging_limit'
                    WHEN r.next_attempt_at > now() THEN 'retry'
                    WHEN r.costs THEN 'costs'
                    ELSE 'send' END AS fate
          FROM r),
    b AS (
        -- each person that costs a slot, in order of their first row
        SELECT k.person, row_number() OVER (ORDER BY min(k.id)) AS rn
          FROM k WHERE k.fate = 'costs' GROUP BY k.person),
    f AS (
        SELECT count(*) FILTER (WHERE k.fate = 'send') AS send,
               count(*) FILTER (WHERE k.fate = 'messaging_limit') AS wait_limit,
               count(*) FILTER (WHERE k.fate = 'send_window') AS wait_window,
               count(*) FILTER (WHERE k.fate = 'frequency_cap') AS wait_cap,
               count(*) FILTER (WHERE k.fate = 'retry') AS wait_retry,
               count(*) FILTER (WHERE k.fate = 'suppressed') AS supp,
               count(*) FILTER (WHERE k.fate = 'invalid') AS inval
          FROM k),
    g AS (
        -- the rows of the people that fit, and of those that do not
        SELECT count(*) FILTER (WHERE b.rn <= greatest(lim - used, 0)) AS fits,
               count(*) FILTER (WHERE b.rn > greatest(lim - used, 0)) AS over
          FROM k JOIN b ON b.person = k.person
         WHERE k.fate = 'costs')
    SELECT f.send + g.fits, f.wait_limit + g.over, f.wait_window, f.wait_cap, f.wait_retry,
           f.supp, f.inval,
           make_interval(secs => ceil((f.send + g.fits) / (greatest(rate, 1) * 0.985))::double precision)
      FROM f, g;
END
$$;

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
    names text[];
    seen text;
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
        RAISE EXCEPTION 'invalid recipient "%": no known country%', r,
                        CASE WHEN strpos(r, '.') > 0 THEN '' ELSE ' calling code' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number in international format with its country code, e.g. 4915112345678 or 15551234567, or a BSUID whose two letters are a country wasend.country_zones lists.';
    END IF;
    names := wasend._recipient_names(r);
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = ANY (names) AND (s.scope = 'all' OR c.category = 'marketing')) THEN
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
    body := (coalesce((SELECT q.payload FROM wasend.send_queue q
                        WHERE q.campaign_id = c.id AND q.recipient = r ORDER BY q.id LIMIT 1),
                      c.message) - 'to' - 'recipient')
            || jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
                                  CASE WHEN strpos(r, '.') > 0 THEN 'recipient' ELSE 'to' END, r,
                                  'biz_opaque_callback_data', 'wasend:test:' || c.id::text);
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
                        WHERE i.from_number = ANY (names)
                          AND i.received_at > now() - interval '24 hours'
                          AND coalesce(n2.business_id, 'number:' || n2.id::text) = k) THEN
        -- the window knows a person by one of their names (the claim's rule)
        SELECT w.recipient INTO seen FROM wasend.recipient_window w
         WHERE w.portfolio = k AND w.recipient = ANY (names)
           AND w.last_at > now() - interval '24 hours'
         ORDER BY w.last_at DESC LIMIT 1;
        IF seen IS NULL THEN
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
        VALUES (k, coalesce(seen, names[1]), now())
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
               coalesce(x ->> 'recipient_id', x ->> 'recipient_user_id') AS recipient,
               CASE WHEN x ->> 'recipient_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
                    THEN x ->> 'recipient_user_id' END AS user_id,
               CASE WHEN jsonb_typeof(x -> 'pricing') = 'object' THEN x -> 'pricing' END AS pricing
          FROM jsonb_array_elements(st) x
         WHERE jsonb_typeof(x -> 'id') = 'string' AND jsonb_typeof(x -> 'status') = 'string'),
    s AS MATERIALIZED (
        -- each usable status once: known says its wamid is on a row
        SELECT p.wamid, p.status, p.rnk, p.at, p.code, wasend._redact(p.title) AS title,
               p.recipient, p.pricing, p.user_id,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = p.wamid) AS known
          FROM p
         WHERE p.at IS NOT NULL AND length(p.wamid) <= 512),
    extra AS (
        -- per wamid, any pricing and any BSUID of this payload, in one pass
        SELECT s.wamid, (array_agg(s.pricing) FILTER (WHERE s.pricing IS NOT NULL))[1] AS pricing,
               (array_agg(s.user_id) FILTER (WHERE s.user_id IS NOT NULL))[1] AS user_id
          FROM s
         WHERE s.known
         GROUP BY s.wamid),
    best AS (
        -- per wamid, the furthest status of this payload, with its extra
        SELECT DISTINCT ON (s.wamid) s.wamid, s.status, s.rnk, s.at, s.code, s.title,
               x.pricing, x.user_id
          FROM s JOIN extra x ON x.wamid = s.wamid
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
               pricing_type = coalesce(q.pricing_type, left(b.pricing ->> 'type', 64)),
               user_id = coalesce(q.user_id, b.user_id)
          FROM best b
         WHERE q.wa_message_id = b.wamid
           AND (b.rnk > wasend._status_rank(q.status)
                OR (q.pricing_category IS NULL AND b.pricing IS NOT NULL)
                OR (q.user_id IS NULL AND b.user_id IS NOT NULL))
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
        INSERT INTO wasend.pending_statuses (wa_message_id, status, at, error_code, error_title, recipient, pricing,
                                             user_id)
        SELECT s.wamid, s.status, s.at, s.code, s.title, s.recipient, s.pricing, s.user_id
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
    n_ids bigint := 0;
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

    -- who is who first, so that a STOP below finds all of a person's names
    BEGIN
        n_ids := wasend._remember_identities(payload);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        RAISE WARNING 'wasend: the user identities of a webhook were skipped: %', wasend._redact(SQLERRM);
    END;

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
    -- a sender with a username may come without a phone number (no
    -- "from"): their BSUID (from_user_id) names them then
    WITH m AS (
        SELECT v #>> '{metadata,phone_number_id}' AS pnid, x AS msg,
               CASE WHEN jsonb_typeof(x->'from') = 'string' AND length(x->>'from') <= 64
                    THEN ltrim(x->>'from', '+') END AS phone,
               CASE WHEN x->>'from_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
                    THEN x->>'from_user_id' END AS user_id
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') v
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(v->'messages', '[]')) x
         WHERE jsonb_typeof(x->'id') = 'string' AND length(x->>'id') <= 512
           AND ((jsonb_typeof(x->'from') = 'string' AND length(x->>'from') <= 64)
                OR x->>'from_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$')),
    ins AS (
        INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body, sent_at, raw,
                                             from_user_id)
        SELECT msg->>'id', coalesce(phone, user_id), pnid, msg->>'type',
               coalesce(msg #>> '{text,body}', msg #>> '{button,text}',
                        msg #>> '{interactive,button_reply,title}',
                        msg #>> '{interactive,list_reply,title}'),
               wasend._webhook_time(msg->'timestamp'), msg, user_id
          FROM m
        ON CONFLICT (wa_message_id) DO NOTHING
        RETURNING from_number, from_user_id, body),
    stop AS (
        -- a STOP reply stops every campaign, also for a recipient who had
        -- only opted out of marketing; the sender is suppressed by each
        -- name the message gives (phone number and BSUID), and the rules
        -- find the names paired with them (wasend._recipient_names)
        INSERT INTO wasend.suppressions AS x (recipient, reason)
        SELECT DISTINCT ON (w.name) w.name, 'replied ' || upper(btrim(i.body))
          FROM ins i CROSS JOIN LATERAL (VALUES (i.from_number), (i.from_user_id)) w(name)
         WHERE upper(btrim(i.body)) = ANY (keywords) AND w.name IS NOT NULL
        ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
         WHERE x.scope <> 'all'
        RETURNING 1)
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins), (SELECT count(*) FROM stop)
      INTO n_msgs, n_new, n_stop;

    -- marketing opt-outs: stop suppresses for marketing, and resume lifts
    -- that, by each name the preference gives (wa_id and user_id; a
    -- suppression of scope all stays, and so does an opt-out under a
    -- name the resume does not give: a wrong pair never lifts another
    -- user's); the latest of a user's wins
    WITH x AS (
        SELECT CASE WHEN ltrim(x ->> 'wa_id', '+') ~ '^[0-9]{7,15}$' THEN ltrim(x ->> 'wa_id', '+') END AS phone,
               CASE WHEN x ->> 'user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$' THEN x ->> 'user_id' END AS user_id,
               lower(x ->> 'value') AS value, wasend._webhook_time(x -> 'timestamp') AS at
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.user_preferences[*]') x
         WHERE x ->> 'category' = 'marketing_messages'),
    p AS (
        SELECT DISTINCT ON (coalesce(x.user_id, x.phone)) x.phone, x.user_id, x.value
          FROM x WHERE coalesce(x.user_id, x.phone) IS NOT NULL
         ORDER BY coalesce(x.user_id, x.phone), x.at DESC NULLS LAST),
    stopped AS (
        INSERT INTO wasend.suppressions (recipient, reason, scope)
        SELECT DISTINCT w.name, 'user_preferences: stopped marketing messages', 'marketing'
          FROM p CROSS JOIN LATERAL (VALUES (p.phone), (p.user_id)) w(name)
         WHERE p.value = 'stop' AND w.name IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING 1),
    resumed AS (
        DELETE FROM wasend.suppressions s
         USING p
         WHERE s.recipient IN (p.phone, p.user_id) AND p.value = 'resume' AND s.scope = 'marketing'
        RETURNING 1)
    SELECT (SELECT count(*) FROM stopped) + (SELECT count(*) FROM resumed) INTO n_pref;

    -- the WhatsApp Business Account of the numbers it names
    PERFORM wasend._learn_wabas(payload);
    -- each change with the id of its entry (the account it is about)
    FOR ch IN SELECT c || jsonb_build_object('entry_id', e -> 'id')
                FROM jsonb_path_query(payload, '$.entry[*]') e
               CROSS JOIN LATERAL jsonb_path_query(e, '$.changes[*]') c
               WHERE jsonb_typeof(c) = 'object' AND c ->> 'field' IN ('message_template_status_update', 'phone_number_quality_update',
                                       'business_capability_update')
                 AND jsonb_typeof(c -> 'value') = 'object' LOOP
        BEGIN
            CASE ch ->> 'field'
                WHEN 'message_template_status_update' THEN
                    n_camp := n_camp + wasend._apply_template_status(ch -> 'value');
                WHEN 'phone_number_quality_update' THEN
                    n_camp := n_camp + wasend._apply_quality_update(ch -> 'value');
                ELSE
                    -- the limit of the account's portfolio changed
                    n_camp := n_camp + wasend._apply_capability_update(
                        CASE WHEN jsonb_typeof(ch -> 'entry_id') = 'string' THEN ch ->> 'entry_id' END,
                        ch -> 'value');
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
        'campaigns_changed', n_camp,
        'identities_learned', n_ids);
END
$$;

CREATE OR REPLACE FUNCTION wasend._portfolio_sync() RETURNS trigger
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
                                        'recipient_user_id', user_id,
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

CREATE OR REPLACE FUNCTION wasend._apply_pending_statuses(wamids text[]) RETURNS bigint
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
                                        'recipient_user_id', user_id,
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

-- The digits a BSUID recipient is priced by (wasend.prices is by country
-- calling code): the phone number paired with it (wasend.identities),
-- else its country's shortest calling code (wasend.country_zones).
CREATE FUNCTION wasend._price_digits(recipient text) RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT n FROM unnest(wasend._recipient_names(recipient)) n
          WHERE n ~ '^[0-9]+$' ORDER BY n LIMIT 1),
        (SELECT z.calling_code FROM wasend.country_zones z
          WHERE z.country = left(recipient, 2)
          ORDER BY length(z.calling_code), z.calling_code LIMIT 1),
        recipient)
$$;
REVOKE ALL ON FUNCTION wasend._price_digits(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._price_digits(text) TO wasend_viewer;

CREATE OR REPLACE VIEW wasend.campaign_report WITH (security_invoker = true) AS
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
                  CROSS JOIN LATERAL (
                        SELECT CASE WHEN pg_catalog.strpos(q.recipient, '.') > 0
                                    THEN wasend._price_digits(q.recipient)
                                    ELSE q.recipient END AS digits) d
                  LEFT JOIN LATERAL (
                        SELECT p.price FROM wasend.prices p
                         WHERE p.category = q.pricing_category
                           AND pg_catalog.starts_with(d.digits, p.country_prefix)
                         ORDER BY pg_catalog.length(p.country_prefix) DESC
                         LIMIT 1) pr ON true
                 WHERE q.campaign_id = c.id AND q.pricing_category IS NOT NULL
                 GROUP BY 1) y) pc ON true;

SELECT pg_catalog.pg_extension_config_dump('wasend.identities', '');

/*
 * Nothing is sending: say why, wherever a user looks.  With wasend not
 * preloaded, this database left out of wasend.databases, an extension
 * version the library does not run, wasend.workers = 0, no background
 * worker slot for the senders, a paused number or a paused campaign,
 * campaign_progress showed a running campaign with a rate and an ETA,
 * wasend_start_campaign said nothing (a paused number: a NOTICE) and
 * wasend_wait waited out its timeout in silence.  wasend._senders_blocked
 * (C: the settings and the shared registry, where the supervisor and the
 * launcher now note a start that found no slot) and
 * wasend._stalled_reason(campaign) say why; campaign_progress shows it
 * in a new last column, stalled_reason, and gives no ETA then;
 * wasend_start_campaign warns with it and a hint (the NOTICE about a
 * paused number is that warning now); wasend_dry_run returns it in a new
 * last column; wasend_wait warns with it.  wasend_dry_run's result type
 * changes, so it is dropped and created again (the access section below
 * wraps it).
 */

CREATE FUNCTION wasend._senders_blocked(OUT reason text, OUT hint text, OUT said_at_wake boolean)
AS 'MODULE_PATHNAME', 'wasend_senders_blocked'
LANGUAGE C STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._senders_blocked() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._senders_blocked() TO wasend_viewer;

-- Why a campaign's messages do not move (or would not, for a draft), as a
-- reason for a person and a hint; all NULL when nothing stops them, and
-- for a completed or cancelled campaign.  The first of: the campaign is
-- paused; the database's senders send nothing (_senders_blocked); the
-- database is a copy that may not send (database_identity); its number is
-- paused; its send window, in a fixed zone, is closed.  campaign_progress,
-- wasend_start_campaign, wasend_dry_run and wasend_wait say it.  Reads as
-- its caller, so row level security holds.
CREATE FUNCTION wasend._stalled_reason(campaign_id bigint,
                                       OUT reason text, OUT hint text, OUT said_at_wake boolean)
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    b record;
    opens timestamptz;
BEGIN
    said_at_wake := false;
    SELECT x.status, x.pause_reason, x.kind, x.send_window_start, x.send_window_end, x.send_timezone,
           n.id AS nid, n.phone_number_id, n.status AS number_status, n.pause_reason AS number_reason
      INTO c
      FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = _stalled_reason.campaign_id;
    IF NOT FOUND OR c.status IN ('completed', 'cancelled') THEN
        RETURN;
    END IF;
    IF c.status = 'paused' THEN
        reason := 'campaign is paused' || coalesce(': ' || c.pause_reason, '');
        hint := format('wasend.wasend_resume_campaign(%s) sends it again.', campaign_id);
        RETURN;
    END IF;
    SELECT * INTO b FROM wasend._senders_blocked();
    IF b.reason IS NOT NULL THEN
        reason := b.reason;
        hint := b.hint;
        said_at_wake := b.said_at_wake;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wasend.database_identity i
                    WHERE i.dboid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())) THEN
        reason := 'this database is a copy of the database the extension was created in';
        hint := 'If this database is meant to send (its queue is its own), run SELECT wasend.wasend_enable_sending() in it as a wasend_admin.';
        RETURN;
    END IF;
    IF c.number_status <> 'active' THEN
        reason := format('number %s is paused: %s', c.phone_number_id, coalesce(c.number_reason, 'no reason given'));
        hint := format('It sends once the number is active again: wasend.wasend_resume_number(%s).', c.nid);
        RETURN;
    END IF;
    -- a window in a fixed zone holds back the whole campaign (src/queue.sql)
    IF c.send_timezone <> 'recipient' AND c.kind = 'campaign' AND wasend._is_zone_name(c.send_timezone) THEN
        opens := wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone);
        IF opens IS NOT NULL THEN
            reason := format('outside the send window until %s', opens);
            hint := 'It sends once its send window opens; wasend.wasend_update_campaign() changes the window.';
        END IF;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION wasend._stalled_reason(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._stalled_reason(bigint) TO wasend_viewer;

CREATE OR REPLACE FUNCTION wasend.wasend_start_campaign(campaign_id bigint,
                                                 start_at timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    n record;
    s record;
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
    SELECT * INTO s FROM wasend._stalled_reason(campaign_id);
    IF s.reason IS NOT NULL AND NOT s.said_at_wake THEN
        RAISE WARNING 'campaign % will not send: %', campaign_id, s.reason
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = s.hint;
    END IF;
    PERFORM wasend._wake_at_commit();
END
$$;

CREATE OR REPLACE FUNCTION wasend.wasend_wait(campaign_id bigint, timeout interval DEFAULT '1 hour')
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    deadline timestamptz;
    next_note timestamptz;
    p record;
    s record;
    said text;
    look_at timestamptz;
    nap double precision := 0.01;
BEGIN
    IF campaign_id IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION 'campaign id and timeout must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'E.g. SELECT wasend_wait(42, ''30 minutes'').';
    END IF;
    IF timeout < '0'::interval THEN
        RAISE EXCEPTION 'timeout must not be negative, not %', timeout
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long to wait at most, e.g. ''30 minutes''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wasend_wait needs READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'Its snapshot would never see the senders'' progress; call it outside that transaction.';
    END IF;
    SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c WHERE c.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    IF k = 'transactional' THEN
        RAISE EXCEPTION 'campaign % is a transactional lane: it never ends', campaign_id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Wait for one message with wasend_send_status(id) instead.';
    END IF;
    IF txid_current_if_assigned() IS NOT NULL THEN
        -- whatever it changed (a start, rows added) the senders cannot see
        -- before it commits, and rows it added keep the campaign open
        RAISE EXCEPTION 'wasend_wait cannot run in a transaction that has changed data'
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'Commit first (a start or new rows are invisible to the senders until then), then call wasend_wait().';
    END IF;
    IF st = 'draft' THEN
        RAISE EXCEPTION 'campaign % is a draft: it will not end by itself', campaign_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Start it with wasend_start_campaign() first.';
    END IF;
    deadline := clock_timestamp() + timeout;
    next_note := clock_timestamp() + interval '10 s';
    look_at := clock_timestamp() + interval '1 s';
    LOOP
        SELECT c.status INTO st FROM wasend.campaigns c WHERE c.id = campaign_id;
        EXIT WHEN st IN ('completed', 'cancelled', 'paused');
        IF clock_timestamp() >= deadline THEN
            SELECT * INTO s FROM wasend._stalled_reason(campaign_id);
            IF s.reason IS NOT NULL THEN
                RAISE WARNING 'campaign % is still % after %: %', campaign_id, st, timeout, s.reason
                    USING ERRCODE = 'object_not_in_prerequisite_state', HINT = s.hint;
            ELSE
                RAISE NOTICE 'campaign % is still % after %', campaign_id, st, timeout;
            END IF;
            RETURN st;
        END IF;
        -- at the start, then every second: say why it does not move, once per reason
        IF said IS NULL OR clock_timestamp() >= look_at THEN
            SELECT * INTO s FROM wasend._stalled_reason(campaign_id);
            IF s.reason IS NOT NULL AND s.reason IS DISTINCT FROM said THEN
                RAISE WARNING 'campaign % does not move: %', campaign_id, s.reason
                    USING ERRCODE = 'object_not_in_prerequisite_state', HINT = s.hint;
            END IF;
            said := coalesce(s.reason, '');
            look_at := clock_timestamp() + interval '1 s';
        END IF;
        IF clock_timestamp() >= next_note THEN
            SELECT v.percent_done, v.total, v.ready + v.sending AS left_, v.rate_per_sec, v.eta INTO p
              FROM wasend.campaign_progress v WHERE v.campaign_id = wasend_wait.campaign_id;
            RAISE NOTICE 'campaign %: % %% done (% of % left), % msg/s, eta %',
                         campaign_id, p.percent_done, p.left_, p.total, p.rate_per_sec,
                         coalesce(p.eta::text, 'unknown');
            next_note := clock_timestamp() + interval '10 s';
        END IF;
        PERFORM pg_sleep(least(nap, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
        nap := least(nap * 2, 0.5);
    END LOOP;
    RETURN st;
END
$$;

DROP FUNCTION wasend.wasend_dry_run(bigint);
CREATE FUNCTION wasend.wasend_dry_run(campaign_id bigint)
RETURNS TABLE (would_send_now bigint, waiting_messaging_limit bigint, waiting_send_window bigint,
               waiting_frequency_cap bigint, waiting_retry bigint, suppressed bigint,
               invalid bigint, estimated_duration interval, stalled_reason text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    lim integer;
    used bigint;
    rate integer;
    why text;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT x.*, coalesce(n.business_id, 'number:' || n.id::text) AS portfolio, n.max_send_rate_per_sec AS rate
      INTO c FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    SELECT p.messaging_limit INTO lim FROM wasend.portfolios p WHERE p.portfolio = c.portfolio;
    SELECT count(*) INTO used FROM wasend.recipient_window r
     WHERE r.portfolio = c.portfolio AND r.last_at > now() - interval '24 hours';
    rate := c.rate;
    SELECT r.reason INTO why FROM wasend._stalled_reason(campaign_id) r;
    RETURN QUERY
    WITH r AS (
        SELECT q.id, q.recipient, q.next_attempt_at, q.waiting_for, nm.names[1] AS person,
               wasend._recipient_zone(q.recipient) IS NULL AS invalid,
               EXISTS (SELECT 1 FROM wasend.suppressions s
                        WHERE s.recipient = ANY (nm.names)
                          AND (s.scope = 'all' OR c.category = 'marketing')) AS suppressed,
               CASE WHEN c.send_window_start IS NOT NULL AND c.kind <> 'transactional'
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end,
                                              wasend._row_zone(c.send_timezone, q.timezone, q.recipient))
               END IS NOT NULL AS outside,
               c.frequency_cap IS NOT NULL AND c.category = 'marketing'
                 AND (SELECT count(*) FROM wasend.send_queue q2 JOIN wasend.campaigns c2 ON c2.id = q2.campaign_id
                       WHERE q2.recipient = ANY (nm.names) AND c2.category = 'marketing'
                         AND q2.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                         AND coalesce(q2.sent_at, q2.claimed_at) > now() - c.frequency_window) >= c.frequency_cap AS capped,
               lim IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM wasend.recipient_window w
                                  WHERE w.portfolio = c.portfolio AND w.recipient = ANY (nm.names)
                                    AND w.last_at > now() - interval '24 hours')
                 AND NOT EXISTS (SELECT 1 FROM wasend.inbound_messages i
                                   JOIN wasend.whatsapp_numbers n2 ON n2.phone_number_id = i.phone_number_id
                                  WHERE i.from_number = ANY (nm.names)
                                    AND i.received_at > now() - interval '24 hours'
                                    AND coalesce(n2.business_id, 'number:' || n2.id::text) = c.portfolio) AS costs
          FROM wasend.send_queue q
         CROSS JOIN LATERAL (SELECT wasend._recipient_names(q.recipient) AS names) nm
         WHERE q.campaign_id = wasend_dry_run.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'),
    k AS (
        SELECT r.*,
               CASE WHEN r.invalid THEN 'invalid'
                    WHEN r.suppressed THEN 'suppressed'
                    WHEN r.outside THEN 'send_window'
                    WHEN r.capped THEN 'frequency_cap'
                    WHEN r.next_attempt_at > now() AND r.waiting_for = 'messaging_limit' THEN 'messaging_limit'
                    WHEN r.next_attempt_at > now() THEN 'retry'
                    WHEN r.costs THEN 'costs'
                    ELSE 'send' END AS fate
          FROM r),
    b AS (
        -- each person that costs a slot, in order of their first row
        SELECT k.person, row_number() OVER (ORDER BY min(k.id)) AS rn
          FROM k WHERE k.fate = 'costs' GROUP BY k.person),
    f AS (
        SELECT count(*) FILTER (WHERE k.fate = 'send') AS send,
               count(*) FILTER (WHERE k.fate = 'messaging_limit') AS wait_limit,
               count(*) FILTER (WHERE k.fate = 'send_window') AS wait_window,
               count(*) FILTER (WHERE k.fate = 'frequency_cap') AS wait_cap,
               count(*) FILTER (WHERE k.fate = 'retry') AS wait_retry,
               count(*) FILTER (WHERE k.fate = 'suppressed') AS supp,
               count(*) FILTER (WHERE k.fate = 'invalid') AS inval
          FROM k),
    g AS (
        -- the rows of the people that fit, and of those that do not
        SELECT count(*) FILTER (WHERE b.rn <= greatest(lim - used, 0)) AS fits,
               count(*) FILTER (WHERE b.rn > greatest(lim - used, 0)) AS over
          FROM k JOIN b ON b.person = k.person
         WHERE k.fate = 'costs')
    SELECT f.send + g.fits, f.wait_limit + g.over, f.wait_window, f.wait_cap, f.wait_retry,
           f.supp, f.inval,
           make_interval(secs => ceil((f.send + g.fits) / (greatest(rate, 1) * 0.985))::double precision),
           why
      FROM f, g;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_dry_run(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_dry_run(bigint) TO wasend_viewer;

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
       CASE WHEN st.reason IS NULL AND coalesce(s.recent, 0) > 0 AND s.ready + s.sending > 0
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
                                       s.wait_131049_next, s.wait_131049) END,
           CASE WHEN w.opens IS NOT NULL AND s.ready > 0
                THEN pg_catalog.format('send window %s-%s %s: opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, c.send_timezone, w.opens, s.ready)
                WHEN s.wait_window > 0
                THEN pg_catalog.format('send window %s-%s in the recipients'' time zones, next opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, s.wait_window_next, s.wait_window) END,
           CASE WHEN f.campaign_id IS NOT NULL
                THEN pg_catalog.format('set aside by the senders, tried again at %s: %s',
                                       f.retry_at, f.error) END) AS waiting,
       CASE WHEN w.opens IS NOT NULL THEN coalesce(s.ready, 0) ELSE coalesce(s.wait_window, 0) END AS waiting_window,
       c.kind,
       c.priority,
       st.reason AS stalled_reason
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
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_window,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_window_next
          FROM wasend.send_queue q WHERE q.campaign_id = c.id) s ON true
  -- a window in a fixed zone holds back the whole campaign (src/queue.sql, running)
  CROSS JOIN LATERAL (
        SELECT CASE WHEN c.send_timezone <> 'recipient' AND c.kind = 'campaign'
                         AND wasend._is_zone_name(c.send_timezone)
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) END AS opens) w
  -- a campaign the senders set aside (src/db_cycle.c, set_aside)
  LEFT JOIN wasend.campaign_faults f
         ON f.campaign_id = c.id AND c.status = 'running'
        AND f.retry_at > pg_catalog.now() - interval '1 minute'
  -- the rate is measured over the last 10 s, or since the start if sooner
  CROSS JOIN LATERAL (
        SELECT greatest(least(10.0, extract(epoch FROM pg_catalog.clock_timestamp() - c.started_at)), 1.0) AS window_s) r
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(code, cnt) AS errors_by_code
          FROM (SELECT q.last_error_code::text AS code, pg_catalog.count(*) AS cnt
                  FROM wasend.send_queue q
                 WHERE q.campaign_id = c.id AND q.status = 'failed'
                 GROUP BY 1) x
         WHERE code IS NOT NULL) e ON true
  -- why nothing of it moves (no ETA then)
  CROSS JOIN LATERAL wasend._stalled_reason(c.id) st;
COMMENT ON VIEW wasend.campaign_progress IS
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages, why ready rows wait (a campaign the senders set aside too), rows waiting for their send window, kind and priority, and why nothing of it moves (stalled_reason)';

/*
 * Operations: the server log says when a campaign or a number changes
 * state, and DROP EXTENSION keeps the suppressions from being lost.
 *
 * - Campaigns and numbers are paused, resumed, started, completed and
 *   cancelled by the API functions, by the senders' set-based statements
 *   (src/queue.sql) and by the webhook rules; nothing said so in the
 *   server log.  An AFTER UPDATE trigger on each table now writes one LOG
 *   line per change, naming the person (session_user) or the rule that
 *   made it and the reason written into pause_reason
 *   (wasend._campaign_log, wasend._number_log; docs/operations.md, "Log
 *   lines").
 * - DROP EXTENSION wasend (or DROP OWNED BY its owner) deleted
 *   wasend.suppressions, and a reinstall messaged the people who had
 *   opted out again.  The event trigger wasend_drop_guard refuses that
 *   drop while the table holds a row, unless the transaction confirms it
 *   (wasend.drop_suppressions).
 */
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

-- Say in the server log when a number is paused or resumed, one LOG line
-- each (docs/operations.md, "Log lines"):
--   wasend number <phone_number_id> paused by <actor>[ until <UTC time>][: <pause_reason>]
--   wasend number <phone_number_id> resumed by <actor>
-- One trigger, so that the API functions, the senders' statements and the
-- account read all say it alike.  The actor is the rule when the change
-- says one (pause_rule health; an error the policy pauses the number for,
-- whose code the senders write at the start of pause_reason: error 190,
-- error 131048, ...), else a sender's (a token file it cannot use:
-- rule token_file; the end of a timed pause: rule paused_until), else the
-- person's (user "<session_user>").  A definer function: whoever writes
-- the row, only it may write the log (wasend._log_line).
CREATE FUNCTION wasend._number_log() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    worker boolean := wasend._in_worker();
    stack text;
    line text;
BEGIN
    IF NEW.status = 'paused' THEN
        line := 'paused by ' || CASE
            WHEN NEW.pause_rule IS NOT NULL THEN 'rule ' || NEW.pause_rule
            WHEN NEW.pause_reason ~ '^error [^ :]+:' THEN substring(NEW.pause_reason FROM '^(error [^ :]+):')
            WHEN worker THEN 'rule token_file'
            ELSE wasend._log_user() END
            || CASE WHEN NEW.paused_until IS NOT NULL
                    THEN ' until ' || to_char(NEW.paused_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    ELSE '' END
            || CASE WHEN NEW.pause_reason IS NULL OR NEW.pause_reason = 'paused by ' || session_user THEN ''
                    -- an error's reason starts with the code the actor already names
                    WHEN NEW.pause_rule IS NULL AND NEW.pause_reason ~ '^error [^ :]+: '
                        THEN ': ' || substring(NEW.pause_reason FROM '^error [^ :]+: (.*)$')
                    ELSE ': ' || NEW.pause_reason END;
    ELSE
        GET DIAGNOSTICS stack = PG_CONTEXT;
        line := 'resumed by ' || CASE
            -- the UPDATE of wasend._apply_number_limits itself: the
            -- frame right below this trigger's (a function of that name
            -- elsewhere, or the name in a caller's statement text, is not)
            WHEN OLD.pause_rule IS NOT NULL
                 AND (worker OR stack ~ '^[^\n]*\nSQL statement "[^"]*"\nPL/pgSQL function wasend\._apply_number_limits\(')
                THEN 'rule ' || OLD.pause_rule
            WHEN worker THEN 'rule paused_until'
            ELSE wasend._log_user() END;
    END IF;
    PERFORM wasend._log_line(wasend._log_text('wasend number ' || NEW.phone_number_id || ' ' || line));
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._number_log() FROM PUBLIC;
CREATE TRIGGER number_log
    AFTER UPDATE ON wasend.whatsapp_numbers
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR (NEW.status OPERATOR(pg_catalog.=) 'paused'::text
              AND OLD.pause_reason IS DISTINCT FROM NEW.pause_reason))
    EXECUTE FUNCTION wasend._number_log();

-- Say in the server log when a campaign changes state, one LOG line each
-- (docs/operations.md, "Log lines"):
--   wasend campaign <id> started by <actor>
--   wasend campaign <id> scheduled by <actor> for <UTC time>
--   wasend campaign <id> paused by <actor>[: <pause_reason>]
--   wasend campaign <id> resumed by <actor>
--   wasend campaign <id> reopened by <actor>       (wasend_retry_failed)
--   wasend campaign <id> completed
--   wasend campaign <id> cancelled by <actor>
-- One trigger, so that the API functions, the senders' statements and the
-- webhook rules all say it alike.  The actor of a pause is its rule when
-- the change says one (pause_rule template or quality; the circuit
-- breaker's pause_reason: rule breaker; an error the policy pauses the
-- campaign for: error <code>); a scheduled start by a sender is rule
-- schedule; a resume by the template all-clear (from the webhook worker or
-- wasend_ingest_webhook) is rule template; anything else is the person's
-- (user "<session_user>").  A definer function: whoever writes the row,
-- only it may write the log (wasend._log_line).
CREATE FUNCTION wasend._campaign_log() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    worker boolean := wasend._in_worker();
    who text;
    stack text;
    line text;
BEGIN
    who := CASE WHEN worker THEN 'wasend' ELSE wasend._log_user() END;
    IF NEW.status = 'paused' THEN
        line := 'paused by ' || CASE
            WHEN NEW.pause_rule IS NOT NULL THEN 'rule ' || NEW.pause_rule
            WHEN NEW.pause_reason LIKE 'circuit breaker:%' THEN 'rule breaker'
            WHEN NEW.pause_reason ~ '^error [^ :]+:' THEN substring(NEW.pause_reason FROM '^(error [^ :]+):')
            ELSE who END
            || CASE WHEN NEW.pause_reason IS NULL OR NEW.pause_reason = 'paused by ' || session_user THEN ''
                    -- an error's reason starts with the code the actor already names
                    WHEN NEW.pause_rule IS NULL AND NEW.pause_reason ~ '^error [^ :]+: '
                        THEN ': ' || substring(NEW.pause_reason FROM '^error [^ :]+: (.*)$')
                    ELSE ': ' || NEW.pause_reason END;
    ELSIF OLD.status = 'paused' AND NEW.status IN ('running', 'scheduled') THEN
        GET DIAGNOSTICS stack = PG_CONTEXT;
        line := 'resumed by ' || CASE
            -- the UPDATE of wasend._apply_template_status itself: the
            -- frame right below this trigger's (a function of that name
            -- elsewhere, or the name in a caller's statement text, is not)
            WHEN OLD.pause_rule IS NOT NULL
                 AND (worker OR stack ~ '^[^\n]*\nSQL statement "[^"]*"\nPL/pgSQL function wasend\._apply_template_status\(')
                THEN 'rule ' || OLD.pause_rule
            ELSE who END;
    ELSIF NEW.status = 'running' AND OLD.status IN ('draft', 'scheduled') THEN
        line := 'started by ' || CASE WHEN worker THEN 'rule schedule' ELSE who END;
    ELSIF NEW.status = 'scheduled' THEN
        line := 'scheduled by ' || who || ' for '
                || coalesce(to_char(NEW.start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'now');
    ELSIF NEW.status = 'running' AND OLD.status = 'completed' THEN
        line := 'reopened by ' || who;
    ELSIF NEW.status = 'completed' AND worker THEN
        line := 'completed';
    ELSE
        line := NEW.status || ' by ' || who;
    END IF;
    PERFORM wasend._log_line(wasend._log_text('wasend campaign ' || NEW.id || ' ' || line));
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._campaign_log() FROM PUBLIC;
CREATE TRIGGER campaign_log
    AFTER UPDATE ON wasend.campaigns
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR (NEW.status OPERATOR(pg_catalog.=) 'paused'::text
              AND OLD.pause_reason IS DISTINCT FROM NEW.pause_reason))
    EXECUTE FUNCTION wasend._campaign_log();

-- DROP EXTENSION wasend would delete wasend.suppressions with it, and a
-- reinstall would message again the people who opted out; so would DROP
-- OWNED BY the extension's owner.  An event trigger refuses either while
-- the table holds a row, unless the transaction confirms it (SET LOCAL
-- wasend.drop_suppressions = on) after the rows were exported
-- (docs/operations.md, "Dropping the extension").  In C: only the parse
-- tree says which extension a DROP EXTENSION drops, or whose objects a
-- DROP OWNED drops.  It checks only a statement its user may run (so a
-- non-owner gets PostgreSQL's own error), locks the table as the drop
-- would, then counts the rows committed by then, also those committed
-- after the transaction's snapshot; it reads only the extension's own
-- table (found through the extension's catalog entries, never by a name
-- another role could plant), and writes nothing.
CREATE FUNCTION wasend._guard_drop() RETURNS event_trigger
AS 'MODULE_PATHNAME', 'wasend_guard_drop'
LANGUAGE C VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._guard_drop() FROM PUBLIC;
CREATE EVENT TRIGGER wasend_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP OWNED')
    EXECUTE FUNCTION wasend._guard_drop();

/*
 * Recipients and messages are judged the same way everywhere.
 *
 * A recipient wasend knew to be invalid (00491512345678, a national
 * 01512345678, a number whose country calling code it does not know) was
 * queued by wasend_enqueue and a plain INSERT and sent, while
 * wasend_dry_run counted it invalid and wasend_test_send refused it.  Now
 * one function, wasend._recipient_verdict, judges every recipient: the
 * send_queue trigger, wasend_enqueue, wasend_send, wasend_test_send and
 * wasend_dry_run ask it.  An invalid recipient is an error, or, with the
 * new setting wasend.invalid_recipients = skip, left out and counted in a
 * NOTICE per statement (not in wasend_send and wasend_test_send, whose
 * caller expects an id or an error, nor a NULL recipient).  A copied row (pg_restore) keeps its recipient.
 *
 * wasend_check_recipient and wasend_normalize_phone (new, viewer) check
 * and normalise a number before it is queued: formatting, a 00 prefix,
 * a national number with a default country.
 *
 * A message's type must be one Meta documents, with the fields it needs
 * (wasend._check_message): "templates" no longer makes a silent service
 * campaign, a template needs its name and language.
 *
 * wasend_send takes if_suppressed => 'skip': a suppressed recipient then
 * returns NULL with a NOTICE instead of an error that rolls back the
 * caller's transaction.
 */


CREATE FUNCTION wasend._recipient_verdict(r text, OUT normalized text, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d text;
BEGIN
    IF r IS NULL THEN
        problem := 'it is null';
        hint := 'Give the phone number in international format, e.g. 15551234567, or the user''s BSUID, e.g. US.13491208655302741918.';
        RETURN;
    END IF;
    IF r ~ '^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$' THEN
        IF wasend._recipient_zone(r) IS NULL THEN
            problem := format('the BSUID''s country %s is not one wasend.country_zones lists', left(r, 2));
            hint := 'Give the BSUID exactly as Meta gave it; its first two letters are the user''s country.';
            RETURN;
        END IF;
        normalized := r;
        RETURN;
    END IF;
    d := CASE WHEN left(r, 1) = '+' THEN substr(r, 2) ELSE r END;
    IF d = '' THEN
        problem := 'it is empty';
        hint := 'Give the phone number in international format, e.g. 15551234567, or the user''s BSUID, e.g. US.13491208655302741918.';
        RETURN;
    END IF;
    IF d !~ '^[0-9]+$' THEN
        IF d ~ '[A-Za-z]' THEN
            problem := 'it has letters but is not a BSUID';
            hint := 'A BSUID is two capital letters, a dot, and up to 128 letters and digits ("ENT." after the dot for a parent BSUID), e.g. US.13491208655302741918; a phone number has digits only.';
        ELSE
            problem := 'it has characters other than digits and a leading "+"';
            hint := 'Normalise it first: SELECT wasend.wasend_normalize_phone(phone, default_country) drops spaces, dashes, dots and brackets, reads a leading 00 and makes a national number international.';
        END IF;
        RETURN;
    END IF;
    IF left(d, 2) = '00' THEN
        problem := 'it starts with the international prefix 00';
        hint := 'Give it without the 00 (00491512345678 is 491512345678), or normalise it with SELECT wasend.wasend_normalize_phone(phone).';
        RETURN;
    END IF;
    IF left(d, 1) = '0' THEN
        problem := 'it is a national number (leading 0) without its country calling code';
        hint := 'Make it international with SELECT wasend.wasend_normalize_phone(phone, default_country), e.g. wasend.wasend_normalize_phone(''01512345678'', ''DE'') is 491512345678.';
        RETURN;
    END IF;
    IF length(d) < 7 OR length(d) > 15 THEN
        problem := format('it has %s digits, a phone number in international format 7 to 15', length(d));
        hint := 'Give the number in international format with its country code, e.g. 4915112345678 or 15551234567.';
        RETURN;
    END IF;
    IF wasend._recipient_zone(d) IS NULL THEN
        problem := 'no country calling code wasend.country_zones lists starts it';
        hint := 'Give the number in international format with its country code, e.g. 4915112345678 or 15551234567.';
        RETURN;
    END IF;
    normalized := d;
END
$$;
REVOKE ALL ON FUNCTION wasend._recipient_verdict(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._normalize_recipient(recipient text) RETURNS text
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

CREATE FUNCTION wasend._skip_invalid_recipients() RETURNS boolean
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(current_setting('wasend.invalid_recipients', true), 'error') = 'skip'
$$;
REVOKE ALL ON FUNCTION wasend._skip_invalid_recipients() FROM PUBLIC;

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

CREATE FUNCTION wasend._normalize_phone(phone text, default_country text,
                                        OUT normalized text, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text;
    cc text;
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
    ELSIF left(s, 1) = '0' AND cc IS NOT NULL THEN
        IF cc IN ('1', '7') THEN
            problem := format('it starts with 0, and a national number of calling code %s never does', cc);
            hint := format('Give it in international format, with its country code %s.', cc);
            RETURN;
        ELSIF cc IN ('39', '378') THEN
            s := cc || s;
        ELSIF cc = '36' AND left(s, 2) = '06' THEN
            s := cc || substr(s, 3);
        ELSE
            s := cc || substr(s, 2);
        END IF;
    ELSIF cc IS NOT NULL AND s ~ '^[1-9]' AND NOT starts_with(s, cc) THEN
        -- a national number written without its trunk prefix (an Italian
        -- mobile number, a North American one, a German one without its 0)
        s := cc || s;
    END IF;
    SELECT * INTO normalized, problem, hint FROM wasend._recipient_verdict(s);
END
$$;
REVOKE ALL ON FUNCTION wasend._normalize_phone(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._check_message(message jsonb, what text) RETURNS void
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

CREATE FUNCTION wasend.wasend_check_recipient(recipient text, default_country text DEFAULT NULL)
RETURNS TABLE (valid boolean, normalized text, reason text)
LANGUAGE sql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.problem IS NULL, v.normalized, v.problem
      FROM wasend._normalize_phone(recipient, default_country) v
$$;
REVOKE ALL ON FUNCTION wasend.wasend_check_recipient(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_check_recipient(text, text) TO wasend_viewer;

CREATE FUNCTION wasend.wasend_normalize_phone(phone text, default_country text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.normalized FROM wasend._normalize_phone(phone, default_country) v
$$;
REVOKE ALL ON FUNCTION wasend.wasend_normalize_phone(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_normalize_phone(text, text) TO wasend_viewer;

CREATE OR REPLACE FUNCTION wasend._send_queue_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    adding boolean;
    v record;
BEGIN
    adding := TG_OP = 'INSERT' AND NEW.status = 'ready'
              AND NEW.sent_at IS NULL AND NEW.failed_at IS NULL
              AND NEW.created_at = now();
    v := wasend._recipient_verdict(NEW.recipient);
    IF v.problem IS NULL THEN
        NEW.recipient := v.normalized;
    ELSIF adding AND NEW.recipient IS NOT NULL AND wasend._skip_invalid_recipients() THEN
        PERFORM set_config('wasend_state.invalid_skipped',
                           (coalesce(nullif(current_setting('wasend_state.invalid_skipped', true), ''), '0')::int + 1)::text,
                           true);
        RETURN NULL;
    ELSIF adding
          OR TG_OP = 'INSERT' AND NEW.recipient !~ '^\+?[0-9]{7,15}$'
             AND NEW.recipient !~ '^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$'
          OR TG_OP = 'UPDATE' AND NEW.recipient IS DISTINCT FROM OLD.recipient THEN
        PERFORM wasend._normalize_recipient(NEW.recipient);
    ELSE
        -- a copied row (or one not being re-addressed) queued before
        -- recipients were judged by country: kept as it was, without "+"
        NEW.recipient := ltrim(NEW.recipient, '+');
    END IF;
    -- (the lookup of wasend._recipient_names, inline: it runs per row)
    IF adding AND EXISTS (SELECT 1 FROM wasend.suppressions s
                           WHERE (s.recipient = NEW.recipient
                                  OR s.recipient IN (SELECT m.name FROM wasend.identity_names k
                                                       JOIN wasend.identity_names m ON m.person = k.person
                                                      WHERE k.name = NEW.recipient))
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
    IF NEW.timezone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) THEN
        PERFORM wasend._check_timezone(NEW.timezone, format('timezone of recipient %s', NEW.recipient));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.campaign_id IS DISTINCT FROM OLD.campaign_id
       OR NEW.priority IS DISTINCT FROM OLD.priority THEN
        -- the share lock keeps a sender from completing the campaign while
        -- rows are being added to it (see src/queue.sql, lock_done); a
        -- transactional lane (rows with a priority) never completes and
        -- takes no lock: wasend_send's transactions would queue up
        -- multixacts on its row
        IF NEW.priority IS NOT NULL THEN
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id;
        ELSE
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id FOR SHARE;
        END IF;
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
        IF k = 'transactional' THEN
            NEW.priority := coalesce(NEW.priority, 0);
            IF NEW.payload IS NULL THEN
                RAISE EXCEPTION 'a row of a transactional lane needs its message in payload'
                    USING ERRCODE = 'not_null_violation',
                          HINT = 'Use wasend_send(number_id, recipient, message).';
            END IF;
        ELSIF NEW.priority IS NOT NULL THEN
            RAISE EXCEPTION 'only rows of a transactional campaign have a priority'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Send one message ahead of campaign rows with wasend_send(); give a campaign a priority with wasend_update_campaign(id, priority => n).';
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

CREATE OR REPLACE FUNCTION wasend._send_queue_wake() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    skipped int := coalesce(nullif(current_setting('wasend_state.suppressed_skipped', true), ''), '0')::int;
    invalid int := coalesce(nullif(current_setting('wasend_state.invalid_skipped', true), ''), '0')::int;
BEGIN
    IF skipped > 0 THEN
        RAISE NOTICE 'skipped % suppressed recipient(s)', skipped
            USING HINT = 'See wasend.suppressions: they said STOP, opted out or are not on WhatsApp.';
        PERFORM set_config('wasend_state.suppressed_skipped', '0', true);
    END IF;
    IF invalid > 0 THEN
        RAISE NOTICE 'skipped % invalid recipient(s)', invalid
            USING HINT = 'wasend.invalid_recipients is skip; SELECT * FROM wasend.wasend_check_recipient(recipient) says why one is invalid.';
        PERFORM set_config('wasend_state.invalid_skipped', '0', true);
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasend._send_queue_wake() FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend.wasend_enqueue(campaign_id bigint, recipients text[],
                                          payloads jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    st text;
    k text;
    dup text;
    norm text[];
    bad text;
    added bigint;
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
    SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
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
    IF k = 'transactional' THEN
        RAISE EXCEPTION 'campaign % is the transactional lane of its number', campaign_id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Send single messages with wasend_send(number_id, recipient, message); enqueue recipients into a campaign of your own.';
    END IF;

    -- each recipient as wasend stores it, NULL for an invalid one: the
    -- first invalid one fails the call, unless wasend.invalid_recipients
    -- is skip (the queue's trigger then leaves it out and counts it)
    norm := ARRAY(SELECT (wasend._recipient_verdict(x.u)).normalized
                    FROM unnest(recipients) WITH ORDINALITY AS x(u, i) ORDER BY x.i);
    IF NOT wasend._skip_invalid_recipients() THEN
        SELECT x.u INTO bad FROM unnest(recipients, norm) AS x(u, n) WHERE x.n IS NULL LIMIT 1;
        IF FOUND THEN
            PERFORM wasend._normalize_recipient(bad);
        END IF;
    END IF;
    SELECT x.r INTO dup
      FROM unnest(norm) AS x(r)
     WHERE x.r IS NOT NULL
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
    ON CONFLICT (campaign_id, recipient) WHERE priority IS NULL DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_enqueue(bigint, text[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_enqueue(bigint, text[], jsonb[]) TO wasend_operator;

DROP FUNCTION wasend.wasend_send(bigint, text, jsonb, integer);
CREATE FUNCTION wasend.wasend_send(number_id bigint, recipient text, message jsonb,
                            priority integer DEFAULT 0, if_suppressed text DEFAULT 'error')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n record;
    cid bigint;
    cst text;
    r text;
    rid bigint;
BEGIN
    IF if_suppressed IS NULL OR if_suppressed NOT IN ('error', 'skip') THEN
        RAISE EXCEPTION 'if_suppressed must be error or skip, not %', coalesce(if_suppressed, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'error raises for a suppressed recipient (and rolls back the transaction unless caught); skip returns NULL with a NOTICE.';
    END IF;
    IF priority IS NULL OR priority < 0 OR priority > 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, not %', coalesce(priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Among wasend_send messages of a number the higher priority goes first; all of them go before campaign rows.';
    END IF;
    IF number_id IS NULL THEN
        RAISE EXCEPTION 'number id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_add_number().';
    END IF;
    SELECT x.id, x.phone_number_id INTO n FROM wasend.whatsapp_numbers x WHERE x.id = number_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'number % does not exist', number_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the number first with wasend_add_number(); see SELECT id, phone_number_id FROM wasend.whatsapp_numbers.';
    END IF;
    PERFORM wasend._check_message(message, 'message');
    r := wasend._normalize_recipient(recipient);
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = ANY (wasend._recipient_names(r)) AND s.scope = 'all') THEN
        IF if_suppressed = 'skip' THEN
            RAISE NOTICE 'recipient "%" is suppressed: nothing was queued', r
                USING DETAIL = (SELECT CASE WHEN s.recipient = r THEN s.reason
                                            ELSE format('%s (suppressed as %s)', s.reason, s.recipient) END
                                  FROM wasend.suppressions s
                                 WHERE s.recipient = ANY (wasend._recipient_names(r)) AND s.scope = 'all'
                                 ORDER BY s.recipient = r DESC, s.created_at LIMIT 1),
                      HINT = 'if_suppressed => skip: wasend_send returned NULL; see wasend.suppressions.';
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'recipient "%" is suppressed', r
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = (SELECT CASE WHEN s.recipient = r THEN s.reason
                                        ELSE format('%s (suppressed as %s)', s.reason, s.recipient) END
                              FROM wasend.suppressions s
                             WHERE s.recipient = ANY (wasend._recipient_names(r)) AND s.scope = 'all'
                             ORDER BY s.recipient = r DESC, s.created_at LIMIT 1),
                  HINT = 'The recipient asked not to be messaged, or Meta refused them; see wasend.suppressions. wasend_send(..., if_suppressed => ''skip'') returns NULL instead.';
    END IF;

    -- the number's lane, made on first use (the unique index settles a race)
    SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
     WHERE c.number_id = n.id AND c.kind = 'transactional';
    IF NOT FOUND THEN
        INSERT INTO wasend.campaigns AS c (name, number_id, message, category, kind, status,
                                            started_at, pacing, priority)
        VALUES ('transactional: ' || n.phone_number_id, n.id,
                '{"type": "text", "text": {"body": "wasend_send rows carry their own message"}}'::jsonb,
                'utility', 'transactional', 'running', now(), 'off', 100)
        ON CONFLICT (number_id) WHERE kind = 'transactional' DO NOTHING
        RETURNING c.id, c.status INTO cid, cst;
        IF cid IS NULL THEN
            SELECT c.id, c.status INTO cid, cst FROM wasend.campaigns c
             WHERE c.number_id = n.id AND c.kind = 'transactional';
        END IF;
        -- the row the senders lock to claim the lane one at a time
        -- (src/queue.sql, claim); owner-only, so nobody else can hold it
        INSERT INTO wasend.claim_locks (name) VALUES ('lane:' || cid::text) ON CONFLICT DO NOTHING;
    END IF;

    INSERT INTO wasend.send_queue (campaign_id, recipient, payload, priority)
    VALUES (cid, r, message, wasend_send.priority)
    RETURNING id INTO rid;
    IF cst = 'paused' THEN
        RAISE NOTICE 'the transactional lane of number % (campaign %) is paused: the message waits', n.id, cid
            USING HINT = 'See wasend.campaign_progress for why; wasend_resume_campaign(' || cid || ') sends it.';
    END IF;
    PERFORM wasend._wake_at_commit();
    RETURN rid;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_send(bigint, text, jsonb, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_send(bigint, text, jsonb, integer, text) TO wasend_operator;

CREATE OR REPLACE FUNCTION wasend.wasend_dry_run(campaign_id bigint)
RETURNS TABLE (would_send_now bigint, waiting_messaging_limit bigint, waiting_send_window bigint,
               waiting_frequency_cap bigint, waiting_retry bigint, suppressed bigint,
               invalid bigint, estimated_duration interval, stalled_reason text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    lim integer;
    used bigint;
    rate integer;
    why text;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id returned by wasend_create_campaign().';
    END IF;
    SELECT x.*, coalesce(n.business_id, 'number:' || n.id::text) AS portfolio, n.max_send_rate_per_sec AS rate
      INTO c FROM wasend.campaigns x JOIN wasend.whatsapp_numbers n ON n.id = x.number_id
     WHERE x.id = campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See SELECT id, name, status FROM wasend.campaigns.';
    END IF;
    SELECT p.messaging_limit INTO lim FROM wasend.portfolios p WHERE p.portfolio = c.portfolio;
    SELECT count(*) INTO used FROM wasend.recipient_window r
     WHERE r.portfolio = c.portfolio AND r.last_at > now() - interval '24 hours';
    rate := c.rate;
    SELECT r.reason INTO why FROM wasend._stalled_reason(campaign_id) r;
    RETURN QUERY
    WITH r AS (
        SELECT q.id, q.recipient, q.next_attempt_at, q.waiting_for, nm.names[1] AS person,
               (wasend._recipient_verdict(q.recipient)).problem IS NOT NULL AS invalid,
               EXISTS (SELECT 1 FROM wasend.suppressions s
                        WHERE s.recipient = ANY (nm.names)
                          AND (s.scope = 'all' OR c.category = 'marketing')) AS suppressed,
               CASE WHEN c.send_window_start IS NOT NULL AND c.kind <> 'transactional'
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end,
                                              wasend._row_zone(c.send_timezone, q.timezone, q.recipient))
               END IS NOT NULL AS outside,
               c.frequency_cap IS NOT NULL AND c.category = 'marketing'
                 AND (SELECT count(*) FROM wasend.send_queue q2 JOIN wasend.campaigns c2 ON c2.id = q2.campaign_id
                       WHERE q2.recipient = ANY (nm.names) AND c2.category = 'marketing'
                         AND q2.status IN ('sending', 'held', 'sent', 'delivered', 'read')
                         AND coalesce(q2.sent_at, q2.claimed_at) > now() - c.frequency_window) >= c.frequency_cap AS capped,
               lim IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM wasend.recipient_window w
                                  WHERE w.portfolio = c.portfolio AND w.recipient = ANY (nm.names)
                                    AND w.last_at > now() - interval '24 hours')
                 AND NOT EXISTS (SELECT 1 FROM wasend.inbound_messages i
                                   JOIN wasend.whatsapp_numbers n2 ON n2.phone_number_id = i.phone_number_id
                                  WHERE i.from_number = ANY (nm.names)
                                    AND i.received_at > now() - interval '24 hours'
                                    AND coalesce(n2.business_id, 'number:' || n2.id::text) = c.portfolio) AS costs
          FROM wasend.send_queue q
         CROSS JOIN LATERAL (SELECT wasend._recipient_names(q.recipient) AS names) nm
         WHERE q.campaign_id = wasend_dry_run.campaign_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'),
    k AS (
        SELECT r.*,
               CASE WHEN r.invalid THEN 'invalid'
                    WHEN r.suppressed THEN 'suppressed'
                    WHEN r.outside THEN 'send_window'
                    WHEN r.capped THEN 'frequency_cap'
                    WHEN r.next_attempt_at > now() AND r.waiting_for = 'messaging_limit' THEN 'messaging_limit'
                    WHEN r.next_attempt_at > now() THEN 'retry'
                    WHEN r.costs THEN 'costs'
                    ELSE 'send' END AS fate
          FROM r),
    b AS (
        -- each person that costs a slot, in order of their first row
        SELECT k.person, row_number() OVER (ORDER BY min(k.id)) AS rn
          FROM k WHERE k.fate = 'costs' GROUP BY k.person),
    f AS (
        SELECT count(*) FILTER (WHERE k.fate = 'send') AS send,
               count(*) FILTER (WHERE k.fate = 'messaging_limit') AS wait_limit,
               count(*) FILTER (WHERE k.fate = 'send_window') AS wait_window,
               count(*) FILTER (WHERE k.fate = 'frequency_cap') AS wait_cap,
               count(*) FILTER (WHERE k.fate = 'retry') AS wait_retry,
               count(*) FILTER (WHERE k.fate = 'suppressed') AS supp,
               count(*) FILTER (WHERE k.fate = 'invalid') AS inval
          FROM k),
    g AS (
        -- the rows of the people that fit, and of those that do not
        SELECT count(*) FILTER (WHERE b.rn <= greatest(lim - used, 0)) AS fits,
               count(*) FILTER (WHERE b.rn > greatest(lim - used, 0)) AS over
          FROM k JOIN b ON b.person = k.person
         WHERE k.fate = 'costs')
    SELECT f.send + g.fits, f.wait_limit + g.over, f.wait_window, f.wait_cap, f.wait_retry,
           f.supp, f.inval,
           make_interval(secs => ceil((f.send + g.fits) / (greatest(rate, 1) * 0.985))::double precision),
           why
      FROM f, g;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_dry_run(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_dry_run(bigint) TO wasend_viewer;

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
    names text[];
    seen text;
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
    -- always an error, whatever wasend.invalid_recipients says: a test
    -- send is of one recipient
    r := wasend._normalize_recipient(recipient);
    names := wasend._recipient_names(r);
    IF EXISTS (SELECT 1 FROM wasend.suppressions s
                WHERE s.recipient = ANY (names) AND (s.scope = 'all' OR c.category = 'marketing')) THEN
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
    body := (coalesce((SELECT q.payload FROM wasend.send_queue q
                        WHERE q.campaign_id = c.id AND q.recipient = r ORDER BY q.id LIMIT 1),
                      c.message) - 'to' - 'recipient')
            || jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
                                  CASE WHEN strpos(r, '.') > 0 THEN 'recipient' ELSE 'to' END, r,
                                  'biz_opaque_callback_data', 'wasend:test:' || c.id::text);
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
                        WHERE i.from_number = ANY (names)
                          AND i.received_at > now() - interval '24 hours'
                          AND coalesce(n2.business_id, 'number:' || n2.id::text) = k) THEN
        -- the window knows a person by one of their names (the claim's rule)
        SELECT w.recipient INTO seen FROM wasend.recipient_window w
         WHERE w.portfolio = k AND w.recipient = ANY (names)
           AND w.last_at > now() - interval '24 hours'
         ORDER BY w.last_at DESC LIMIT 1;
        IF seen IS NULL THEN
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
        VALUES (k, coalesce(seen, names[1]), now())
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
REVOKE ALL ON FUNCTION wasend.wasend_test_send(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_test_send(bigint, text) TO wasend_operator;


/*
 * History retention.  Nothing ever left send_queue, inbound_messages or
 * recipient_window: at 10M messages a month the queue grows by 120M rows
 * a year, and campaign_progress and campaign_report, which count every
 * row of every campaign, slow down with it.  Now the supervisor deletes
 * the rows of campaigns that finished more than wasend.retention ago
 * (90 days by default), in batches of 10,000 in short transactions, after
 * counting them in the new table wasend.campaign_summaries; both views add
 * the summaries to the rows left, so a campaign's figures stay what they
 * were.  Rows still to send and held rows stay, and so do a marketing
 * campaign's rows for a year (a frequency cap of any campaign counts
 * them).  The caches expire too (recipient_window after 25 hours, inbound
 * messages after the retention, at least a day), and
 * wasend.wasend_prune(older_than) does the same by hand.  The summaries
 * are dumped: they are the only record of pruned rows.  send_queue gets
 * autovacuum settings for a table that churns.
 */

ALTER TABLE wasend.send_queue SET (autovacuum_vacuum_scale_factor = 0.02,
                                   autovacuum_vacuum_insert_scale_factor = 0.05);

-- The rows pruned from send_queue, counted by what campaign_progress and
-- campaign_report show of a row: one row per campaign and combination.
-- The cost and unpriced count are those of wasend.prices when the rows
-- went (a later change of a price does not change them).
CREATE TABLE wasend.campaign_summaries (
    campaign_id      bigint NOT NULL REFERENCES wasend.campaigns (id),
    status           text NOT NULL,
    uncertain        boolean NOT NULL,
    sent             boolean NOT NULL,
    delivered        boolean NOT NULL,
    read             boolean NOT NULL,
    billable         boolean,
    pricing_category text,
    error_code       integer,
    error_class      text,
    error_title      text,
    rows             bigint NOT NULL,
    unpriced         bigint NOT NULL,
    cost             numeric,
    CONSTRAINT campaign_summaries_key
        UNIQUE NULLS NOT DISTINCT (campaign_id, status, uncertain, sent, delivered, read, billable,
                                   pricing_category, error_code, error_class)
);
COMMENT ON TABLE wasend.campaign_summaries IS
'Rows pruned from send_queue (wasend.retention, wasend_prune), counted per campaign by status, sent/delivered/read, pricing and error: campaign_progress and campaign_report add them to the rows left';
COMMENT ON COLUMN wasend.campaign_summaries.error_title IS
'of failed rows: the least error title of the group (campaign_report shows the least per code)';
COMMENT ON COLUMN wasend.campaign_summaries.cost IS
'the sum of the billable rows'' prices in wasend.prices when they were pruned; NULL when none had a price';
REVOKE ALL ON wasend.campaign_summaries FROM PUBLIC;
GRANT SELECT ON wasend.campaign_summaries TO wasend_viewer;

-- One batch of the pruning, in the caller's transaction: at most batch
-- rows with an id above after, in the order of the primary key, of
-- campaigns that finished (completed or cancelled) before now() -
-- older_than, and of transactional lanes (which never finish) the rows
-- sent, failed or cancelled before then.  Rows still to send (ready,
-- sending) and held rows (Meta has not said sent or failed yet: a late
-- status still moves them) never go; rows another transaction holds
-- locked (a status webhook) are skipped, never waited for.  A frequency
-- cap counts a recipient's marketing messages of up to a year (the
-- longest frequency_window a campaign may have, in any campaign created
-- later too): a marketing campaign's rows stay until it finished more
-- than a year ago (or older_than, if longer), and no marketing message
-- goes before it was sent that long ago.  What the rows were is added to
-- wasend.campaign_summaries in the same statement; their held_messages
-- go with them.  Returns the rows pruned and the last id (NULL: none).
-- Senders never claim these rows (only ready rows of running campaigns),
-- so a batch waits for no sender and no sender for it.
CREATE FUNCTION wasend._prune_batch(older_than interval, batch integer, after bigint,
                                    OUT pruned bigint, OUT last_id bigint)
RETURNS record
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - older_than;
    -- what a frequency cap may count: campaigns_frequency_window_check
    cap_cutoff timestamptz := least(now() - older_than, now() - interval '1 year');
    finished bigint[];
    lanes bigint[];
    marketing bigint[];
BEGIN
    -- A pass's first batch (after = 0) looks which finished campaign ids
    -- still have a row to prune (send_queue_campaign_recipient_key: a
    -- probe per campaign), so that a pass with nothing to do reads no
    -- more; the later batches do not look again: within a transaction,
    -- the probe would walk past every row the earlier batches deleted.
    SELECT coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.kind = 'campaign'), '{}'),
           coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.kind = 'transactional'), '{}'),
           coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.category = 'marketing'), '{}')
      INTO finished, lanes, marketing
      FROM wasend.campaigns c
     CROSS JOIN LATERAL (SELECT CASE WHEN c.category = 'marketing' THEN cap_cutoff ELSE cutoff END AS before) k
     WHERE c.kind = 'transactional'
        OR (((c.status = 'completed' AND c.completed_at < k.before)
             OR (c.status = 'cancelled' AND c.cancelled_at < k.before))
            AND (after > 0
                 OR EXISTS (SELECT 1 FROM wasend.send_queue q
                             WHERE q.campaign_id = c.id AND q.priority IS NULL
                               AND q.status NOT IN ('ready', 'sending', 'held')
                               AND NOT (c.category = 'marketing' AND q.status IN ('sent', 'delivered', 'read')
                                        AND coalesce(q.sent_at, q.claimed_at) >= cap_cutoff))));
    pruned := 0;
    IF cardinality(finished) = 0 AND cardinality(lanes) = 0 THEN
        RETURN;
    END IF;
    WITH doomed AS MATERIALIZED (
        SELECT q.id FROM wasend.send_queue q
         WHERE q.id > after
           AND q.status NOT IN ('ready', 'sending', 'held')
           AND (q.campaign_id = ANY (finished)
                OR (q.campaign_id = ANY (lanes)
                    AND coalesce(q.failed_at, q.sent_at, q.created_at) < cutoff))
           -- the messages a frequency cap counts (wasend_dry_run, the claim)
           AND NOT (q.campaign_id = ANY (marketing) AND q.status IN ('sent', 'delivered', 'read')
                    AND coalesce(q.sent_at, q.claimed_at) >= cap_cutoff)
         ORDER BY q.id
         LIMIT batch
           FOR UPDATE SKIP LOCKED),
    gone AS (
        DELETE FROM wasend.send_queue q
         USING doomed d
         WHERE q.id = d.id
        RETURNING q.id, q.campaign_id, q.recipient, q.status, q.uncertain,
                  q.sent_at IS NOT NULL AS sent, q.delivered_at IS NOT NULL AS delivered,
                  q.read_at IS NOT NULL AS read, q.pricing_billable AS billable, q.pricing_category,
                  CASE WHEN q.status = 'failed' THEN q.last_error_code END AS error_code,
                  CASE WHEN q.status = 'failed' THEN q.last_error_class END AS error_class,
                  CASE WHEN q.status = 'failed' THEN q.last_error END AS error_title),
    unheld AS (
        DELETE FROM wasend.held_messages h
         USING gone g
         WHERE h.row_id = g.id),
    summed AS (
        -- priced the way the report view does it
        INSERT INTO wasend.campaign_summaries AS s
               (campaign_id, status, uncertain, sent, delivered, read, billable, pricing_category,
                error_code, error_class, error_title, rows, unpriced, cost)
        SELECT g.campaign_id, g.status, g.uncertain, g.sent, g.delivered, g.read, g.billable,
               g.pricing_category, g.error_code, g.error_class, min(g.error_title), count(*),
               count(*) FILTER (WHERE g.pricing_category IS NOT NULL AND g.billable AND pr.price IS NULL),
               sum(pr.price) FILTER (WHERE g.pricing_category IS NOT NULL AND g.billable)
          FROM gone g
          CROSS JOIN LATERAL (
                SELECT CASE WHEN strpos(g.recipient, '.') > 0
                            THEN wasend._price_digits(g.recipient)
                            ELSE g.recipient END AS digits) d
          LEFT JOIN LATERAL (
                SELECT p.price FROM wasend.prices p
                 WHERE p.category = g.pricing_category
                   AND starts_with(d.digits, p.country_prefix)
                 ORDER BY length(p.country_prefix) DESC
                 LIMIT 1) pr ON true
         GROUP BY g.campaign_id, g.status, g.uncertain, g.sent, g.delivered, g.read, g.billable,
                  g.pricing_category, g.error_code, g.error_class
        ON CONFLICT ON CONSTRAINT campaign_summaries_key DO UPDATE
           SET rows = s.rows + excluded.rows,
               unpriced = s.unpriced + excluded.unpriced,
               cost = CASE WHEN s.cost IS NULL THEN excluded.cost
                           WHEN excluded.cost IS NULL THEN s.cost
                           ELSE s.cost + excluded.cost END,
               error_title = least(s.error_title, excluded.error_title))
    SELECT count(*), max(g.id) INTO pruned, last_id FROM gone g;
END
$$;
REVOKE ALL ON FUNCTION wasend._prune_batch(interval, integer, bigint) FROM PUBLIC;

-- The caches that only the last day matters for, in the caller's
-- transaction, at most batch rows of each: recipient_window entries older
-- than the messaging limit's 24 h (and an hour), inbound messages older
-- than older_than (at least a day: the 24 h customer service window reads
-- them; a STOP is in wasend.suppressions, which never expire), and
-- statuses whose wamid never appeared, after 7 days (as the senders'
-- refresh does).  Rows someone holds locked are skipped.  Returns the
-- rows deleted.
CREATE FUNCTION wasend._expire_caches(older_than interval, batch integer) RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM wasend.recipient_window r
     WHERE r.ctid = ANY (ARRAY(SELECT x.ctid FROM wasend.recipient_window x
                                WHERE x.last_at < now() - interval '25 hours'
                                LIMIT batch
                                  FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM wasend.inbound_messages i
     WHERE i.ctid = ANY (ARRAY(SELECT x.ctid FROM wasend.inbound_messages x
                                WHERE x.received_at < now() - greatest(older_than, interval '1 day')
                                LIMIT batch
                                  FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM wasend.pending_statuses p
     WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM wasend.pending_statuses x
                                WHERE x.received_at < now() - interval '7 days'
                                ORDER BY x.received_at LIMIT batch
                                  FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END
$$;
REVOKE ALL ON FUNCTION wasend._expire_caches(interval, integer) FROM PUBLIC;

-- Prune now what wasend.retention would (wasend_admin): the rows of
-- campaigns finished more than older_than ago (NULL: wasend.retention),
-- in batches of 10,000, in this transaction; and the expired caches.
-- Returns the send_queue rows deleted.  For pg_cron, or a retention of
-- its own; the supervisor does the same by itself, in short transactions.
CREATE FUNCTION wasend.wasend_prune(older_than interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    age interval := older_than;
    minutes integer;
    b record;
    after bigint := 0;
    total bigint := 0;
BEGIN
    IF age IS NULL THEN
        -- in minutes; the default when the library is not loaded here
        SELECT s.setting::integer INTO minutes FROM pg_settings s WHERE s.name = 'wasend.retention';
        minutes := coalesce(minutes, 129600);
        IF minutes <= 0 THEN
            RAISE NOTICE 'wasend.retention is off: nothing pruned'
                USING HINT = 'Give the age yourself, e.g. SELECT wasend.wasend_prune(''90 days'');';
            RETURN 0;
        END IF;
        age := make_interval(mins => minutes);
    ELSIF age < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', age
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long ago a campaign must have finished for its rows to go, e.g. ''90 days''; ''0'' prunes every finished campaign.';
    END IF;
    LOOP
        b := wasend._prune_batch(age, 10000, after);
        total := total + b.pruned;
        EXIT WHEN b.pruned < 10000;
        after := b.last_id;
    END LOOP;
    WHILE wasend._expire_caches(age, 10000) > 0 LOOP
    END LOOP;
    RETURN total;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_prune(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_prune(interval) TO wasend_admin;

CREATE OR REPLACE VIEW wasend.campaign_progress WITH (security_invoker = true) AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       coalesce(c.pause_reason, CASE WHEN n.status <> 'active' THEN 'number paused: ' || coalesce(n.pause_reason, '') END) AS pause_reason,
       n.phone_number_id,
       t.total,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.sending, 0) AS sending,
       coalesce(s.sent, 0) + m.sent AS sent,
       coalesce(s.delivered, 0) + m.delivered AS delivered,
       coalesce(s.read, 0) + m.read AS read,
       coalesce(s.failed, 0) + m.failed AS failed,
       coalesce(s.cancelled, 0) + m.cancelled AS cancelled,
       coalesce(s.uncertain, 0) + m.uncertain AS uncertain,
       CASE WHEN t.total = 0 THEN 0
            ELSE pg_catalog.round(100.0 * (t.total - s.ready - s.sending)::numeric / t.total::numeric, 1) END AS percent_done,
       pg_catalog.round(coalesce(s.recent, 0)::numeric / r.window_s, 1) AS rate_per_sec,
       CASE WHEN st.reason IS NULL AND coalesce(s.recent, 0) > 0 AND s.ready + s.sending > 0
            THEN pg_catalog.make_interval(secs => pg_catalog.round((s.ready + s.sending)::numeric / (s.recent::numeric / r.window_s))::double precision)
       END AS eta,
       e.errors_by_code,
       coalesce(s.held, 0) + m.held AS held,
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
                                       s.wait_131049_next, s.wait_131049) END,
           CASE WHEN w.opens IS NOT NULL AND s.ready > 0
                THEN pg_catalog.format('send window %s-%s %s: opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, c.send_timezone, w.opens, s.ready)
                WHEN s.wait_window > 0
                THEN pg_catalog.format('send window %s-%s in the recipients'' time zones, next opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, s.wait_window_next, s.wait_window) END,
           CASE WHEN f.campaign_id IS NOT NULL
                THEN pg_catalog.format('set aside by the senders, tried again at %s: %s',
                                       f.retry_at, f.error) END) AS waiting,
       CASE WHEN w.opens IS NOT NULL THEN coalesce(s.ready, 0) ELSE coalesce(s.wait_window, 0) END AS waiting_window,
       c.kind,
       c.priority,
       st.reason AS stalled_reason
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
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_window,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_window_next
          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q WHERE q.campaign_id = c.id) s ON true
  -- the rows pruned (wasend.retention) count with the rows left; none is
  -- ready or sending
  CROSS JOIN LATERAL (
        SELECT coalesce(pg_catalog.sum(x.rows), 0)::bigint AS total,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'sent'), 0)::bigint AS sent,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'delivered'), 0)::bigint AS delivered,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'read'), 0)::bigint AS read,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'failed'), 0)::bigint AS failed,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'cancelled'), 0)::bigint AS cancelled,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'held'), 0)::bigint AS held,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.uncertain), 0)::bigint AS uncertain
          FROM wasend.campaign_summaries x WHERE x.campaign_id = c.id) m
  CROSS JOIN LATERAL (SELECT coalesce(s.total, 0) + m.total AS total) t
  -- a window in a fixed zone holds back the whole campaign (src/queue.sql, running)
  CROSS JOIN LATERAL (
        SELECT CASE WHEN c.send_timezone <> 'recipient' AND c.kind = 'campaign'
                         AND wasend._is_zone_name(c.send_timezone)
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) END AS opens) w
  -- a campaign the senders set aside (src/db_cycle.c, set_aside)
  LEFT JOIN wasend.campaign_faults f
         ON f.campaign_id = c.id AND c.status = 'running'
        AND f.retry_at > pg_catalog.now() - interval '1 minute'
  -- the rate is measured over the last 10 s, or since the start if sooner
  CROSS JOIN LATERAL (
        SELECT greatest(least(10.0, extract(epoch FROM pg_catalog.clock_timestamp() - c.started_at)), 1.0) AS window_s) r
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(code, cnt) AS errors_by_code
          FROM (SELECT y.code, pg_catalog.sum(y.cnt)::bigint AS cnt
                  FROM (SELECT q.last_error_code::text AS code, pg_catalog.count(*) AS cnt
                          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                         WHERE q.campaign_id = c.id AND q.status = 'failed'
                         GROUP BY 1
                        UNION ALL
                        SELECT x.error_code::text, x.rows
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.status = 'failed') y
                 GROUP BY 1) x
         WHERE code IS NOT NULL) e ON true
  -- why nothing of it moves (no ETA then)
  CROSS JOIN LATERAL wasend._stalled_reason(c.id) st;
COMMENT ON VIEW wasend.campaign_progress IS
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages, why ready rows wait (a campaign the senders set aside too), rows waiting for their send window, kind and priority, and why nothing of it moves (stalled_reason)';

CREATE OR REPLACE VIEW wasend.campaign_report WITH (security_invoker = true) AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       c.category,
       t.total,
       t.sent,
       t.delivered,
       t.read,
       t.failed,
       t.held,
       CASE WHEN t.sent > 0
            THEN pg_catalog.round(100.0 * t.delivered::numeric / t.sent::numeric, 1) END AS delivered_pct,
       CASE WHEN t.delivered > 0
            THEN pg_catalog.round(100.0 * t.read::numeric / t.delivered::numeric, 1) END AS read_pct,
       fc.failures,
       pc.by_pricing_category,
       t.billable,
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
          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q WHERE q.campaign_id = c.id) f ON true
  -- the rows pruned (wasend.retention) count with the rows left
  CROSS JOIN LATERAL (
        SELECT coalesce(pg_catalog.sum(x.rows), 0)::bigint AS total,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.sent), 0)::bigint AS sent,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.delivered), 0)::bigint AS delivered,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.read), 0)::bigint AS read,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'failed'), 0)::bigint AS failed,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'held'), 0)::bigint AS held,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.billable), 0)::bigint AS billable
          FROM wasend.campaign_summaries x WHERE x.campaign_id = c.id) m
  CROSS JOIN LATERAL (
        SELECT coalesce(f.total, 0) + m.total AS total, coalesce(f.sent, 0) + m.sent AS sent,
               coalesce(f.delivered, 0) + m.delivered AS delivered, coalesce(f.read, 0) + m.read AS read,
               coalesce(f.failed, 0) + m.failed AS failed, coalesce(f.held, 0) + m.held AS held,
               coalesce(f.billable, 0) + m.billable AS billable) t
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(x.code, pg_catalog.jsonb_build_object('count', x.cnt, 'title', x.title)) AS failures
          FROM (SELECT y.code, pg_catalog.sum(y.cnt)::bigint AS cnt, pg_catalog.min(y.title) AS title
                  FROM (SELECT coalesce(q.last_error_code::text, q.last_error_class, 'unknown') AS code,
                               pg_catalog.count(*) AS cnt, pg_catalog.min(q.last_error) AS title
                          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                         WHERE q.campaign_id = c.id AND q.status = 'failed'
                         GROUP BY 1
                        UNION ALL
                        SELECT coalesce(x.error_code::text, x.error_class, 'unknown'), x.rows, x.error_title
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.status = 'failed') y
                 GROUP BY 1) x) fc ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(y.category,
                   pg_catalog.jsonb_build_object('billable', y.billable, 'free', y.free)) AS by_pricing_category,
               pg_catalog.sum(y.unpriced) AS unpriced,
               pg_catalog.sum(y.cost) AS estimated_cost
          FROM (SELECT z.category, pg_catalog.sum(z.billable)::bigint AS billable,
                       pg_catalog.sum(z.free)::bigint AS free, pg_catalog.sum(z.unpriced)::bigint AS unpriced,
                       pg_catalog.sum(z.cost) AS cost
                  FROM (SELECT q.pricing_category AS category,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable) AS billable,
                       pg_catalog.count(*) FILTER (WHERE NOT q.pricing_billable) AS free,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable AND pr.price IS NULL) AS unpriced,
                       pg_catalog.sum(pr.price) FILTER (WHERE q.pricing_billable) AS cost
                  FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                               x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                  CROSS JOIN LATERAL (
                        SELECT CASE WHEN pg_catalog.strpos(q.recipient, '.') > 0
                                    THEN wasend._price_digits(q.recipient)
                                    ELSE q.recipient END AS digits) d
                  LEFT JOIN LATERAL (
                        SELECT p.price FROM wasend.prices p
                         WHERE p.category = q.pricing_category
                           AND pg_catalog.starts_with(d.digits, p.country_prefix)
                         ORDER BY pg_catalog.length(p.country_prefix) DESC
                         LIMIT 1) pr ON true
                 WHERE q.campaign_id = c.id AND q.pricing_category IS NOT NULL
                 GROUP BY 1
                        UNION ALL
                        SELECT x.pricing_category,
                               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.billable), 0)::bigint,
                               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE NOT x.billable), 0)::bigint,
                               pg_catalog.sum(x.unpriced)::bigint, pg_catalog.sum(x.cost)
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.pricing_category IS NOT NULL
                         GROUP BY 1) z
                 GROUP BY 1) y) pc ON true;

SELECT pg_catalog.pg_extension_config_dump('wasend.campaign_summaries', '');

/*
 * Recipients are judged in C, and national numbers by libphonenumber.
 *
 * wasend._recipient_verdict, which every row queued passes, was PL/pgSQL
 * with a query of wasend.country_zones per row: it made queueing 200,000
 * rows half again as slow.  It is C now, with the same rules and words:
 * each backend keeps a copy of the table's calling codes and countries,
 * and a statement trigger on the table (wasend._country_zones_changed)
 * makes every backend drop its copy when the table changes.
 *
 * wasend_normalize_phone and wasend_check_recipient made a national
 * number international with rules of their own (a trunk prefix 0, with
 * the exceptions of Italy, San Marino, Hungary, +1 and +7).  Google's
 * libphonenumber knows every country's rules: wasend._phone_parse (C)
 * asks it, and wasend._normalize_phone calls it for a national number.
 */

CREATE OR REPLACE FUNCTION wasend._recipient_verdict(r text, OUT normalized text, OUT problem text, OUT hint text)
AS 'MODULE_PATHNAME', 'wasend_recipient_verdict'
LANGUAGE C STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION wasend._phone_parse(phone text, country text, OUT normalized text, OUT problem text)
AS 'MODULE_PATHNAME', 'wasend_phone_parse_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._phone_parse(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._normalize_phone(phone text, default_country text,
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

CREATE FUNCTION wasend._country_zones_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'wasend_country_zones_changed'
LANGUAGE C
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._country_zones_changed() FROM PUBLIC;
CREATE TRIGGER country_zones_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wasend.country_zones
    FOR EACH STATEMENT EXECUTE FUNCTION wasend._country_zones_changed();


/*
 * A transactional lane's rows get an index of their own.  campaign_progress,
 * campaign_report and the metrics read a lane's rows (those with a
 * priority) by campaign; send_queue_campaign_recipient_key holds only rows
 * without one, so each lane cost a scan of the whole queue, and its cost
 * estimate alone pushed the views over the JIT thresholds.  Its columns are
 * indexed already: updates stay HOT.
 */
CREATE INDEX send_queue_lane_idx ON wasend.send_queue (campaign_id)
    WHERE priority IS NOT NULL;

/*
 * A sender holds a claimed row back until its claim is durable where a
 * failover can promote (wasend.durability, src/durability.c):
 * wasend_worker_stats() shows how many rows wait for that in each sender,
 * and since when.
 */
DROP FUNCTION wasend.wasend_worker_stats();
CREATE FUNCTION wasend.wasend_worker_stats(
    OUT sender integer, OUT pid integer, OUT in_flight integer, OUT held integer,
    OUT sent bigint, OUT failed bigint,
    OUT connections_opened bigint, OUT connections_reused bigint,
    OUT mean_latency_ms double precision,
    OUT hold_target integer,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT added_p50_ms double precision, OUT added_p99_ms double precision,
    OUT awaiting_durable integer, OUT awaiting_durable_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wasend_worker_stats'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend.wasend_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_worker_stats() TO wasend_viewer;

/*
 * Statuses settle uncertain rows.
 *
 * A row whose sender stopped while it was in flight (a crash, a failover)
 * is marked uncertain and sent again, though most of those requests had
 * reached Meta: the retry sent them twice.  Every message carries
 * biz_opaque_callback_data 'wasend:<row id>', which Meta echoes in its
 * status webhooks; wasend._apply_statuses now reads it.  A sent, delivered
 * or read status of a wamid no row has settles the uncertain row it names
 * (the wamid is stored, the status moves forward, the row leaves
 * send_queue_ready_idx and is never retried; uncertain stays as history),
 * provided the status names the row's recipient or comes from its number
 * (wasend._status_row_verdict: row ids of two databases sharing an
 * account collide).  A status for a row that has another wamid is a
 * duplicate send: kept in the new table wasend.duplicate_sends (dumped),
 * the row marked uncertain, counted by campaign_progress and
 * campaign_report (duplicates).  Statuses that cannot attach yet wait in
 * pending_statuses with their row id (new columns row_id,
 * phone_number_id), and are applied by the senders' refresh and by the
 * supervisor's recovery (wasend._apply_row_statuses).
 *
 * wasend.uncertain_retry_delay (60 s) holds an uncertain row, ready but not
 * due (waiting_for 'uncertain', a new value of send_queue_waiting_for_check),
 * so that Meta's status can settle it before a retry; the claim that finds
 * it due retries it, or fails it (wasend.on_uncertain = fail, or
 * wasend.max_attempts attempts).  The restore trigger
 * (wasend._send_queue_check) holds a copied row in flight the same way, and
 * campaign_progress says why such rows wait.
 */
ALTER TABLE wasend.pending_statuses
    ADD COLUMN row_id bigint,
    ADD COLUMN phone_number_id text;
CREATE INDEX pending_statuses_row_idx ON wasend.pending_statuses (row_id)
    WHERE row_id IS NOT NULL;
COMMENT ON COLUMN wasend.pending_statuses.row_id IS
'the send_queue row the status names by its biz_opaque_callback_data (wasend:<row id>); it attaches to the row once the row is uncertain';

-- Sends of a row that Meta reported under another wamid than the row's:
-- the row's request reached Meta twice (a retry of an uncertain row whose
-- first request had gone out).  Meta names the row by the message's
-- biz_opaque_callback_data; the statuses of such a wamid update its entry
-- here.  Kept after the row is pruned (campaign_id), so that the views
-- count a campaign's duplicates; dumped.
CREATE TABLE wasend.duplicate_sends (
    wa_message_id   text PRIMARY KEY,
    row_id          bigint NOT NULL,
    campaign_id     bigint,
    status          text NOT NULL,
    at              timestamptz,
    recipient       text,
    pricing         jsonb,
    received_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX duplicate_sends_row_idx ON wasend.duplicate_sends (row_id);
CREATE INDEX duplicate_sends_campaign_idx ON wasend.duplicate_sends (campaign_id);
COMMENT ON TABLE wasend.duplicate_sends IS
'Messages Meta reported for a row under another wamid than the row''s (biz_opaque_callback_data): the row was sent twice';
COMMENT ON COLUMN wasend.duplicate_sends.status IS
'the furthest status Meta reported for this wamid';
REVOKE ALL ON wasend.duplicate_sends FROM PUBLIC;
GRANT SELECT ON wasend.duplicate_sends TO wasend_viewer;

ALTER TABLE wasend.send_queue DROP CONSTRAINT send_queue_waiting_for_check;
ALTER TABLE wasend.send_queue ADD CONSTRAINT send_queue_waiting_for_check
    CHECK (waiting_for IN ('messaging_limit', 'frequency_cap', 'send_window', 'uncertain'));
COMMENT ON COLUMN wasend.send_queue.waiting_for IS
'why a ready row waits until next_attempt_at: messaging_limit (the portfolio''s 24 h budget of new recipients), frequency_cap (the recipient''s recent marketing messages), send_window (outside the campaign''s send window) or uncertain (its outcome is unknown: its sender stopped while it was in flight, or its request got no usable answer; it waits wasend.uncertain_retry_delay for a status that settles it)';

CREATE OR REPLACE FUNCTION wasend._send_queue_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    k text;
    adding boolean;
    v record;
    hold interval;
BEGIN
    adding := TG_OP = 'INSERT' AND NEW.status = 'ready'
              AND NEW.sent_at IS NULL AND NEW.failed_at IS NULL
              AND NEW.created_at = now();
    v := wasend._recipient_verdict(NEW.recipient);
    IF v.problem IS NULL THEN
        NEW.recipient := v.normalized;
    ELSIF adding AND NEW.recipient IS NOT NULL AND wasend._skip_invalid_recipients() THEN
        PERFORM set_config('wasend_state.invalid_skipped',
                           (coalesce(nullif(current_setting('wasend_state.invalid_skipped', true), ''), '0')::int + 1)::text,
                           true);
        RETURN NULL;
    ELSIF adding
          OR TG_OP = 'INSERT' AND NEW.recipient !~ '^\+?[0-9]{7,15}$'
             AND NEW.recipient !~ '^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$'
          OR TG_OP = 'UPDATE' AND NEW.recipient IS DISTINCT FROM OLD.recipient THEN
        PERFORM wasend._normalize_recipient(NEW.recipient);
    ELSE
        -- a copied row (or one not being re-addressed) queued before
        -- recipients were judged by country: kept as it was, without "+"
        NEW.recipient := ltrim(NEW.recipient, '+');
    END IF;
    -- (the lookup of wasend._recipient_names, inline: it runs per row)
    IF adding AND EXISTS (SELECT 1 FROM wasend.suppressions s
                           WHERE (s.recipient = NEW.recipient
                                  OR s.recipient IN (SELECT m.name FROM wasend.identity_names k
                                                       JOIN wasend.identity_names m ON m.person = k.person
                                                      WHERE k.name = NEW.recipient))
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
    IF NEW.timezone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) THEN
        PERFORM wasend._check_timezone(NEW.timezone, format('timezone of recipient %s', NEW.recipient));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.campaign_id IS DISTINCT FROM OLD.campaign_id
       OR NEW.priority IS DISTINCT FROM OLD.priority THEN
        -- the share lock keeps a sender from completing the campaign while
        -- rows are being added to it (see src/queue.sql, lock_done); a
        -- transactional lane (rows with a priority) never completes and
        -- takes no lock: wasend_send's transactions would queue up
        -- multixacts on its row
        IF NEW.priority IS NOT NULL THEN
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id;
        ELSE
            SELECT c.status, c.kind INTO st, k FROM wasend.campaigns c
             WHERE c.id = NEW.campaign_id FOR SHARE;
        END IF;
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
        IF k = 'transactional' THEN
            NEW.priority := coalesce(NEW.priority, 0);
            IF NEW.payload IS NULL THEN
                RAISE EXCEPTION 'a row of a transactional lane needs its message in payload'
                    USING ERRCODE = 'not_null_violation',
                          HINT = 'Use wasend_send(number_id, recipient, message).';
            END IF;
        ELSIF NEW.priority IS NOT NULL THEN
            RAISE EXCEPTION 'only rows of a transactional campaign have a priority'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Send one message ahead of campaign rows with wasend_send(); give a campaign a priority with wasend_update_campaign(id, priority => n).';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.status = 'sending' THEN
        NEW.claimed_by := NULL;
        NEW.uncertain := true;
        NEW.last_error_class := 'uncertain';
        NEW.last_error := 'outcome unknown: the message was claimed or in flight when the copy was taken';
        -- it waits for a status that settles it, as a stopped sender's
        -- row does (src/queue.sql, recover); the claim that finds it due
        -- retries or fails it
        hold := coalesce(nullif(current_setting('wasend.uncertain_retry_delay', true), '')::interval,
                         interval '60 seconds');
        NEW.next_attempt_at := now() + greatest(hold, interval '0');
        NEW.waiting_for := CASE WHEN hold > interval '0' THEN 'uncertain' END;
        IF st = 'cancelled' THEN
            NEW.status := 'cancelled';
        ELSIF hold > interval '0' THEN
            NEW.status := 'ready';
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

COMMENT ON COLUMN wasend.pending_statuses.settled IS
'No record that was running when the status arrived is left: only a record of its wamid, or of the row it names (row_id), applies it now';

CREATE FUNCTION wasend._status_row_verdict(r_id bigint, r_wamid text, r_status text, r_recipient text,
                                           r_user_id text, r_pnid text) RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN q.wa_message_id IS NULL AND q.uncertain
                     AND q.status IN ('ready', 'failed', 'cancelled')
                     AND r_status IN ('sent', 'delivered', 'read') THEN 'attach'
                WHEN q.wa_message_id IS NOT NULL AND q.wa_message_id <> r_wamid
                     AND r_status IN ('sent', 'delivered', 'read') THEN 'duplicate' END
      FROM wasend.send_queue q
     WHERE q.id = r_id
       AND (ltrim(r_recipient, '+') = ANY (wasend._recipient_names(q.recipient))
            OR r_user_id = q.user_id
            OR r_user_id = ANY (wasend._recipient_names(q.recipient)))
       AND (r_pnid IS NULL
            OR r_pnid = (SELECT n.phone_number_id FROM wasend.campaigns c
                           JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                          WHERE c.id = q.campaign_id))
$$;
REVOKE ALL ON FUNCTION wasend._status_row_verdict(bigint, text, text, text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._apply_statuses(st jsonb) RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res jsonb;
    rest jsonb;
    two jsonb;
BEGIN
    WITH p AS MATERIALIZED (
        SELECT x ->> 'id' AS wamid, x ->> 'status' AS status,
               wasend._status_rank(x ->> 'status') AS rnk,
               wasend._webhook_time(x -> 'timestamp') AS at,
               CASE WHEN jsonb_typeof(x #> '{errors,0,code}') = 'number'
                     AND (x #>> '{errors,0,code}') ~ '^-?[0-9]{1,9}$'
                    THEN (x #>> '{errors,0,code}')::int END AS code,
               x #>> '{errors,0,title}' AS title,
               coalesce(x ->> 'recipient_id', x ->> 'recipient_user_id') AS recipient,
               CASE WHEN x ->> 'recipient_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
                    THEN x ->> 'recipient_user_id' END AS user_id,
               CASE WHEN jsonb_typeof(x -> 'pricing') = 'object' THEN x -> 'pricing' END AS pricing,
               CASE WHEN jsonb_typeof(x -> 'biz_opaque_callback_data') = 'string'
                     AND x ->> 'biz_opaque_callback_data' ~ '^wasend:[0-9]{1,18}$'
                    THEN substr(x ->> 'biz_opaque_callback_data', 8)::bigint END AS row_id,
               CASE WHEN jsonb_typeof(x -> '_pnid') = 'string' AND length(x ->> '_pnid') <= 64
                    THEN x ->> '_pnid' END AS pnid
          FROM jsonb_array_elements(st) x
         WHERE jsonb_typeof(x -> 'id') = 'string' AND jsonb_typeof(x -> 'status') = 'string'),
    s0 AS MATERIALIZED (
        -- each usable status once: known says its wamid is on a row
        SELECT p.wamid, p.status, p.rnk, p.at, p.code, wasend._redact(p.title) AS title,
               p.recipient, p.pricing, p.user_id, p.row_id, p.pnid,
               EXISTS (SELECT 1 FROM wasend.send_queue q
                        WHERE q.wa_message_id = p.wamid) AS known
          FROM p
         WHERE p.at IS NOT NULL AND length(p.wamid) <= 512),
    s AS MATERIALIZED (
        -- dup: the wamid is a known duplicate send
        SELECT s0.*, NOT s0.known AND EXISTS (SELECT 1 FROM wasend.duplicate_sends d
                                                WHERE d.wa_message_id = s0.wamid) AS dup
          FROM s0),
    extra AS (
        -- per wamid, any pricing and any BSUID of this payload, in one pass
        SELECT s.wamid, (array_agg(s.pricing) FILTER (WHERE s.pricing IS NOT NULL))[1] AS pricing,
               (array_agg(s.user_id) FILTER (WHERE s.user_id IS NOT NULL))[1] AS user_id
          FROM s
         WHERE s.known
         GROUP BY s.wamid),
    best AS (
        -- per wamid, the furthest status of this payload, with its extra
        SELECT DISTINCT ON (s.wamid) s.wamid, s.status, s.rnk, s.at, s.code, s.title,
               x.pricing, x.user_id
          FROM s JOIN extra x ON x.wamid = s.wamid
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
               pricing_type = coalesce(q.pricing_type, left(b.pricing ->> 'type', 64)),
               user_id = coalesce(q.user_id, b.user_id)
          FROM best b
         WHERE q.wa_message_id = b.wamid
           AND (b.rnk > wasend._status_rank(q.status)
                OR (q.pricing_category IS NULL AND b.pricing IS NOT NULL)
                OR (q.user_id IS NULL AND b.user_id IS NOT NULL))
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
    dupd AS (
        -- a known duplicate send moves forward only
        UPDATE wasend.duplicate_sends d
           SET status = b.status, at = b.at, pricing = coalesce(d.pricing, b.pricing), updated_at = now()
          FROM (SELECT DISTINCT ON (s.wamid) s.wamid, s.status, s.rnk, s.at, s.pricing
                  FROM s WHERE s.dup AND s.rnk > 0
                 ORDER BY s.wamid, s.rnk DESC, s.at DESC) b
         WHERE d.wa_message_id = b.wamid AND b.rnk > wasend._status_rank(d.status)
        RETURNING 1),
    pend AS (
        INSERT INTO wasend.pending_statuses (wa_message_id, status, at, error_code, error_title, recipient, pricing,
                                             user_id, phone_number_id)
        SELECT s.wamid, s.status, s.at, s.code, s.title, s.recipient, s.pricing, s.user_id, s.pnid
          FROM s
         WHERE NOT s.known AND NOT s.dup AND s.rnk > 0 AND s.row_id IS NULL
        ON CONFLICT DO NOTHING)
    SELECT jsonb_build_object(
               'applied', (SELECT count(*) FROM upd) + (SELECT count(*) FROM dupd),
               'ignored', (SELECT count(*) FROM s WHERE s.known OR s.dup OR s.rnk <= 0)
                          - (SELECT count(*) FROM upd) - (SELECT count(*) FROM dupd),
               'pending', (SELECT count(*) FROM s WHERE NOT s.known AND NOT s.dup AND s.rnk > 0
                                                    AND s.row_id IS NULL),
               'refused', (SELECT count(*) FROM p) - (SELECT count(*) FROM s)),
           (SELECT jsonb_agg(jsonb_build_object('wamid', s.wamid, 'status', s.status, 'rnk', s.rnk, 'at', s.at,
                                                'code', s.code, 'title', s.title, 'recipient', s.recipient,
                                                'pricing', s.pricing, 'user_id', s.user_id, 'row_id', s.row_id,
                                                'pnid', s.pnid))
              FROM s WHERE NOT s.known AND NOT s.dup AND s.rnk > 0 AND s.row_id IS NOT NULL)
      INTO res, rest;
    IF rest IS NULL THEN
        RETURN res;
    END IF;

    -- the statuses that name their row (a new snapshot: the first
    -- statement's changes are seen)
    WITH r AS MATERIALIZED (
        SELECT x.*, wasend._status_row_verdict(x.row_id, x.wamid, x.status, x.recipient, x.user_id, x.pnid) AS verdict
          FROM jsonb_to_recordset(rest) AS x(wamid text, status text, rnk integer, at timestamptz, code integer,
                                             title text, recipient text, pricing jsonb, user_id text,
                                             row_id bigint, pnid text)),
    pick AS (
        -- one wamid per row (two in one payload: the other waits, and is
        -- a duplicate once this one is on the row)
        SELECT DISTINCT ON (r.row_id) r.row_id, r.wamid
          FROM r WHERE r.verdict = 'attach'
         ORDER BY r.row_id, r.wamid),
    a AS (
        SELECT r.row_id, r.wamid, max(r.rnk) AS rnk, min(r.at) AS sent_at,
               min(r.at) FILTER (WHERE r.rnk >= 4) AS delivered_at,
               min(r.at) FILTER (WHERE r.status = 'read') AS read_at,
               (array_agg(r.pricing) FILTER (WHERE r.pricing IS NOT NULL))[1] AS pricing,
               (array_agg(r.user_id) FILTER (WHERE r.user_id IS NOT NULL))[1] AS user_id
          FROM r JOIN pick k ON k.row_id = r.row_id AND k.wamid = r.wamid
         WHERE r.verdict = 'attach'
         GROUP BY r.row_id, r.wamid),
    att AS (
        -- (the row is checked again as locked: a claim may have taken it)
        UPDATE wasend.send_queue q
           SET wa_message_id = a.wamid,
               status = CASE a.rnk WHEN 5 THEN 'read' WHEN 4 THEN 'delivered' ELSE 'sent' END,
               sent_at = a.sent_at, delivered_at = a.delivered_at, read_at = a.read_at,
               failed_at = NULL, claimed_by = NULL, waiting_for = NULL,
               last_error_code = NULL, last_error_class = NULL,
               last_error = 'outcome settled by a status webhook: the message had reached Meta',
               pricing_billable = CASE WHEN jsonb_typeof(a.pricing -> 'billable') = 'boolean'
                                       THEN (a.pricing ->> 'billable')::boolean END,
               pricing_model = left(a.pricing ->> 'pricing_model', 64),
               pricing_category = left(a.pricing ->> 'category', 64),
               pricing_type = left(a.pricing ->> 'type', 64),
               user_id = coalesce(q.user_id, a.user_id)
          FROM a
         WHERE q.id = a.row_id AND q.wa_message_id IS NULL AND q.uncertain
           AND q.status IN ('ready', 'failed', 'cancelled')
        RETURNING a.wamid),
    dupl AS (
        INSERT INTO wasend.duplicate_sends AS d (wa_message_id, row_id, campaign_id, status, at, recipient, pricing)
        SELECT DISTINCT ON (r.wamid) r.wamid, r.row_id,
               (SELECT q.campaign_id FROM wasend.send_queue q WHERE q.id = r.row_id),
               r.status, r.at, r.recipient, r.pricing
          FROM r WHERE r.verdict = 'duplicate'
         ORDER BY r.wamid, r.rnk DESC, r.at DESC
        ON CONFLICT (wa_message_id) DO UPDATE
           SET status = excluded.status, at = excluded.at, pricing = coalesce(d.pricing, excluded.pricing),
               updated_at = now()
         WHERE wasend._status_rank(excluded.status) > wasend._status_rank(d.status)
        RETURNING d.row_id, d.wa_message_id),
    marked AS (
        UPDATE wasend.send_queue q
           SET uncertain = true
         WHERE q.id IN (SELECT dupl.row_id FROM dupl) AND NOT q.uncertain),
    pend AS (
        INSERT INTO wasend.pending_statuses (wa_message_id, status, at, error_code, error_title, recipient, pricing,
                                             user_id, row_id, phone_number_id)
        SELECT r.wamid, r.status, r.at, r.code, r.title, r.recipient, r.pricing, r.user_id, r.row_id, r.pnid
          FROM r
         WHERE r.wamid NOT IN (SELECT att.wamid FROM att)
           AND NOT (r.verdict = 'duplicate' AND r.wamid IN (SELECT dupl.wa_message_id FROM dupl))
           AND NOT (r.verdict = 'duplicate'
                    AND EXISTS (SELECT 1 FROM wasend.duplicate_sends d WHERE d.wa_message_id = r.wamid))
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT jsonb_build_object('applied', (SELECT count(*) FROM att) + (SELECT count(*) FROM dupl),
                              'pending', (SELECT count(*) FROM pend))
      INTO two;
    RETURN jsonb_build_object(
        'applied', (res ->> 'applied')::bigint + (two ->> 'applied')::bigint,
        'ignored', (res ->> 'ignored')::bigint + jsonb_array_length(rest)
                   - (two ->> 'applied')::bigint - (two ->> 'pending')::bigint,
        'pending', (res ->> 'pending')::bigint + (two ->> 'pending')::bigint,
        'refused', (res ->> 'refused')::bigint);
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_statuses(jsonb) FROM PUBLIC;

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
                        WHERE q.wa_message_id = p.wa_message_id)
               OR EXISTS (SELECT 1 FROM wasend.duplicate_sends d
                           WHERE d.wa_message_id = p.wa_message_id)
               OR (p.row_id IS NOT NULL
                   AND wasend._status_row_verdict(p.row_id, p.wa_message_id, p.status, p.recipient,
                                                  p.user_id, p.phone_number_id) IS NOT NULL) AS known
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
                                        'recipient_user_id', user_id,
                                        'pricing', pricing,
                                        'errors', CASE WHEN error_code IS NOT NULL THEN
                                            jsonb_build_array(jsonb_build_object('code', error_code, 'title', error_title)) END,
                                        'biz_opaque_callback_data', 'wasend:' || row_id,
                                        '_pnid', phone_number_id)),
           count(*)
      INTO st, n FROM ready;
    IF n > 0 THEN
        PERFORM wasend._apply_statuses(st);
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_pending_statuses() FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasend._apply_pending_statuses(wamids text[]) RETURNS bigint
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
                                        'recipient_user_id', user_id,
                                        'pricing', pricing,
                                        'errors', CASE WHEN error_code IS NOT NULL THEN
                                            jsonb_build_array(jsonb_build_object('code', error_code, 'title', error_title)) END,
                                        'biz_opaque_callback_data', 'wasend:' || row_id,
                                        '_pnid', phone_number_id)),
           count(*)
      INTO st, n FROM ready;
    IF n > 0 THEN
        PERFORM wasend._apply_statuses(st);
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_pending_statuses(text[]) FROM PUBLIC;

CREATE FUNCTION wasend._apply_row_statuses(row_ids bigint[]) RETURNS bigint
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
         WHERE p.row_id = ANY (row_ids)
           AND wasend._status_row_verdict(p.row_id, p.wa_message_id, p.status, p.recipient,
                                          p.user_id, p.phone_number_id) IS NOT NULL
        RETURNING p.*)
    SELECT jsonb_agg(jsonb_build_object('id', wa_message_id, 'status', status,
                                        'timestamp', extract(epoch FROM coalesce(at, received_at)),
                                        'recipient_id', recipient,
                                        'recipient_user_id', user_id,
                                        'pricing', pricing,
                                        'errors', CASE WHEN error_code IS NOT NULL THEN
                                            jsonb_build_array(jsonb_build_object('code', error_code, 'title', error_title)) END,
                                        'biz_opaque_callback_data', 'wasend:' || row_id,
                                        '_pnid', phone_number_id)),
           count(*)
      INTO st, n FROM ready;
    IF n > 0 THEN
        PERFORM wasend._apply_statuses(st);
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION wasend._apply_row_statuses(bigint[]) FROM PUBLIC;

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
    n_ids bigint := 0;
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

    -- who is who first, so that a STOP below finds all of a person's names
    BEGIN
        n_ids := wasend._remember_identities(payload);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        RAISE WARNING 'wasend: the user identities of a webhook were skipped: %', wasend._redact(SQLERRM);
    END;

    -- each status with the phone number id of its change (_pnid, for
    -- the guard of wasend._status_row_verdict)
    sts := coalesce(
        (SELECT jsonb_agg(CASE WHEN jsonb_typeof(s) = 'object'
                               THEN s || jsonb_build_object('_pnid', v #> '{metadata,phone_number_id}')
                               ELSE s END)
           FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') v
          CROSS JOIN LATERAL jsonb_path_query(v, '$.statuses[*]') s),
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
    -- a sender with a username may come without a phone number (no
    -- "from"): their BSUID (from_user_id) names them then
    WITH m AS (
        SELECT v #>> '{metadata,phone_number_id}' AS pnid, x AS msg,
               CASE WHEN jsonb_typeof(x->'from') = 'string' AND length(x->>'from') <= 64
                    THEN ltrim(x->>'from', '+') END AS phone,
               CASE WHEN x->>'from_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$'
                    THEN x->>'from_user_id' END AS user_id
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value') v
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(v->'messages', '[]')) x
         WHERE jsonb_typeof(x->'id') = 'string' AND length(x->>'id') <= 512
           AND ((jsonb_typeof(x->'from') = 'string' AND length(x->>'from') <= 64)
                OR x->>'from_user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$')),
    ins AS (
        INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body, sent_at, raw,
                                             from_user_id)
        SELECT msg->>'id', coalesce(phone, user_id), pnid, msg->>'type',
               coalesce(msg #>> '{text,body}', msg #>> '{button,text}',
                        msg #>> '{interactive,button_reply,title}',
                        msg #>> '{interactive,list_reply,title}'),
               wasend._webhook_time(msg->'timestamp'), msg, user_id
          FROM m
        ON CONFLICT (wa_message_id) DO NOTHING
        RETURNING from_number, from_user_id, body),
    stop AS (
        -- a STOP reply stops every campaign, also for a recipient who had
        -- only opted out of marketing; the sender is suppressed by each
        -- name the message gives (phone number and BSUID), and the rules
        -- find the names paired with them (wasend._recipient_names)
        INSERT INTO wasend.suppressions AS x (recipient, reason)
        SELECT DISTINCT ON (w.name) w.name, 'replied ' || upper(btrim(i.body))
          FROM ins i CROSS JOIN LATERAL (VALUES (i.from_number), (i.from_user_id)) w(name)
         WHERE upper(btrim(i.body)) = ANY (keywords) AND w.name IS NOT NULL
        ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
         WHERE x.scope <> 'all'
        RETURNING 1)
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins), (SELECT count(*) FROM stop)
      INTO n_msgs, n_new, n_stop;

    -- marketing opt-outs: stop suppresses for marketing, and resume lifts
    -- that, by each name the preference gives (wa_id and user_id; a
    -- suppression of scope all stays, and so does an opt-out under a
    -- name the resume does not give: a wrong pair never lifts another
    -- user's); the latest of a user's wins
    WITH x AS (
        SELECT CASE WHEN ltrim(x ->> 'wa_id', '+') ~ '^[0-9]{7,15}$' THEN ltrim(x ->> 'wa_id', '+') END AS phone,
               CASE WHEN x ->> 'user_id' ~ '^[A-Z]{2}\.[A-Za-z0-9]{1,128}$' THEN x ->> 'user_id' END AS user_id,
               lower(x ->> 'value') AS value, wasend._webhook_time(x -> 'timestamp') AS at
          FROM jsonb_path_query(payload, '$.entry[*].changes[*].value.user_preferences[*]') x
         WHERE x ->> 'category' = 'marketing_messages'),
    p AS (
        SELECT DISTINCT ON (coalesce(x.user_id, x.phone)) x.phone, x.user_id, x.value
          FROM x WHERE coalesce(x.user_id, x.phone) IS NOT NULL
         ORDER BY coalesce(x.user_id, x.phone), x.at DESC NULLS LAST),
    stopped AS (
        INSERT INTO wasend.suppressions (recipient, reason, scope)
        SELECT DISTINCT w.name, 'user_preferences: stopped marketing messages', 'marketing'
          FROM p CROSS JOIN LATERAL (VALUES (p.phone), (p.user_id)) w(name)
         WHERE p.value = 'stop' AND w.name IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING 1),
    resumed AS (
        DELETE FROM wasend.suppressions s
         USING p
         WHERE s.recipient IN (p.phone, p.user_id) AND p.value = 'resume' AND s.scope = 'marketing'
        RETURNING 1)
    SELECT (SELECT count(*) FROM stopped) + (SELECT count(*) FROM resumed) INTO n_pref;

    -- the WhatsApp Business Account of the numbers it names
    PERFORM wasend._learn_wabas(payload);
    -- each change with the id of its entry (the account it is about)
    FOR ch IN SELECT c || jsonb_build_object('entry_id', e -> 'id')
                FROM jsonb_path_query(payload, '$.entry[*]') e
               CROSS JOIN LATERAL jsonb_path_query(e, '$.changes[*]') c
               WHERE jsonb_typeof(c) = 'object' AND c ->> 'field' IN ('message_template_status_update', 'phone_number_quality_update',
                                       'business_capability_update')
                 AND jsonb_typeof(c -> 'value') = 'object' LOOP
        BEGIN
            CASE ch ->> 'field'
                WHEN 'message_template_status_update' THEN
                    n_camp := n_camp + wasend._apply_template_status(ch -> 'value');
                WHEN 'phone_number_quality_update' THEN
                    n_camp := n_camp + wasend._apply_quality_update(ch -> 'value');
                ELSE
                    -- the limit of the account's portfolio changed
                    n_camp := n_camp + wasend._apply_capability_update(
                        CASE WHEN jsonb_typeof(ch -> 'entry_id') = 'string' THEN ch ->> 'entry_id' END,
                        ch -> 'value');
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
        'campaigns_changed', n_camp,
        'identities_learned', n_ids);
END
$$;
REVOKE ALL ON FUNCTION wasend._ingest_verified(text) FROM PUBLIC;

CREATE OR REPLACE VIEW wasend.campaign_progress WITH (security_invoker = true) AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       coalesce(c.pause_reason, CASE WHEN n.status <> 'active' THEN 'number paused: ' || coalesce(n.pause_reason, '') END) AS pause_reason,
       n.phone_number_id,
       t.total,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.sending, 0) AS sending,
       coalesce(s.sent, 0) + m.sent AS sent,
       coalesce(s.delivered, 0) + m.delivered AS delivered,
       coalesce(s.read, 0) + m.read AS read,
       coalesce(s.failed, 0) + m.failed AS failed,
       coalesce(s.cancelled, 0) + m.cancelled AS cancelled,
       coalesce(s.uncertain, 0) + m.uncertain AS uncertain,
       CASE WHEN t.total = 0 THEN 0
            ELSE pg_catalog.round(100.0 * (t.total - s.ready - s.sending)::numeric / t.total::numeric, 1) END AS percent_done,
       pg_catalog.round(coalesce(s.recent, 0)::numeric / r.window_s, 1) AS rate_per_sec,
       CASE WHEN st.reason IS NULL AND coalesce(s.recent, 0) > 0 AND s.ready + s.sending > 0
            THEN pg_catalog.make_interval(secs => pg_catalog.round((s.ready + s.sending)::numeric / (s.recent::numeric / r.window_s))::double precision)
       END AS eta,
       e.errors_by_code,
       coalesce(s.held, 0) + m.held AS held,
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
                                       s.wait_131049_next, s.wait_131049) END,
           CASE WHEN w.opens IS NOT NULL AND s.ready > 0
                THEN pg_catalog.format('send window %s-%s %s: opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, c.send_timezone, w.opens, s.ready)
                WHEN s.wait_window > 0
                THEN pg_catalog.format('send window %s-%s in the recipients'' time zones, next opens at %s (%s rows)',
                                       c.send_window_start, c.send_window_end, s.wait_window_next, s.wait_window) END,
           CASE WHEN f.campaign_id IS NOT NULL
                THEN pg_catalog.format('set aside by the senders, tried again at %s: %s',
                                       f.retry_at, f.error) END,
           CASE WHEN s.wait_uncertain > 0
                THEN pg_catalog.format('uncertain: waiting for Meta''s status until %s, then %s (%s rows)',
                                       s.wait_uncertain_next,
                                       CASE WHEN pg_catalog.current_setting('wasend.on_uncertain', true) = 'fail'
                                            THEN 'failed' ELSE 'retried' END,
                                       s.wait_uncertain) END) AS waiting,
       CASE WHEN w.opens IS NOT NULL THEN coalesce(s.ready, 0) ELSE coalesce(s.wait_window, 0) END AS waiting_window,
       c.kind,
       c.priority,
       st.reason AS stalled_reason,
       coalesce(dup.duplicates, 0) AS duplicates
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
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_131049_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_window,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'send_window'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_window_next,
               pg_catalog.count(*) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'uncertain'
                                             AND q.next_attempt_at > pg_catalog.now()) AS wait_uncertain,
               pg_catalog.min(q.next_attempt_at) FILTER (WHERE q.status = 'ready' AND q.waiting_for = 'uncertain'
                                                           AND q.next_attempt_at > pg_catalog.now()) AS wait_uncertain_next
          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q WHERE q.campaign_id = c.id) s ON true
  -- the rows pruned (wasend.retention) count with the rows left; none is
  -- ready or sending
  CROSS JOIN LATERAL (
        SELECT coalesce(pg_catalog.sum(x.rows), 0)::bigint AS total,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'sent'), 0)::bigint AS sent,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'delivered'), 0)::bigint AS delivered,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'read'), 0)::bigint AS read,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'failed'), 0)::bigint AS failed,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'cancelled'), 0)::bigint AS cancelled,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'held'), 0)::bigint AS held,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.uncertain), 0)::bigint AS uncertain
          FROM wasend.campaign_summaries x WHERE x.campaign_id = c.id) m
  CROSS JOIN LATERAL (SELECT coalesce(s.total, 0) + m.total AS total) t
  -- a window in a fixed zone holds back the whole campaign (src/queue.sql, running)
  CROSS JOIN LATERAL (
        SELECT CASE WHEN c.send_timezone <> 'recipient' AND c.kind = 'campaign'
                         AND wasend._is_zone_name(c.send_timezone)
                    THEN wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) END AS opens) w
  -- a campaign the senders set aside (src/db_cycle.c, set_aside)
  LEFT JOIN wasend.campaign_faults f
         ON f.campaign_id = c.id AND c.status = 'running'
        AND f.retry_at > pg_catalog.now() - interval '1 minute'
  -- the rate is measured over the last 10 s, or since the start if sooner
  CROSS JOIN LATERAL (
        SELECT greatest(least(10.0, extract(epoch FROM pg_catalog.clock_timestamp() - c.started_at)), 1.0) AS window_s) r
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(code, cnt) AS errors_by_code
          FROM (SELECT y.code, pg_catalog.sum(y.cnt)::bigint AS cnt
                  FROM (SELECT q.last_error_code::text AS code, pg_catalog.count(*) AS cnt
                          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                         WHERE q.campaign_id = c.id AND q.status = 'failed'
                         GROUP BY 1
                        UNION ALL
                        SELECT x.error_code::text, x.rows
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.status = 'failed') y
                 GROUP BY 1) x
         WHERE code IS NOT NULL) e ON true
  -- why nothing of it moves (no ETA then)
  CROSS JOIN LATERAL wasend._stalled_reason(c.id) st
  -- rows Meta reported sent twice (wasend.duplicate_sends, by campaign)
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(DISTINCT d.row_id) AS duplicates
          FROM wasend.duplicate_sends d WHERE d.campaign_id = c.id) dup ON true;
COMMENT ON VIEW wasend.campaign_progress IS
'Per campaign: rows by status, percent done, send rate over the last 10 s, ETA, errors by code, held messages, why ready rows wait (a campaign the senders set aside too), rows waiting for their send window, kind and priority, why nothing of it moves (stalled_reason), and rows Meta reported sent twice (duplicates)';
REVOKE ALL ON wasend.campaign_progress FROM PUBLIC;
GRANT SELECT ON wasend.campaign_progress TO wasend_viewer;

CREATE OR REPLACE VIEW wasend.campaign_report WITH (security_invoker = true) AS
SELECT c.id AS campaign_id,
       c.name,
       c.status,
       c.category,
       t.total,
       t.sent,
       t.delivered,
       t.read,
       t.failed,
       t.held,
       CASE WHEN t.sent > 0
            THEN pg_catalog.round(100.0 * t.delivered::numeric / t.sent::numeric, 1) END AS delivered_pct,
       CASE WHEN t.delivered > 0
            THEN pg_catalog.round(100.0 * t.read::numeric / t.delivered::numeric, 1) END AS read_pct,
       fc.failures,
       pc.by_pricing_category,
       t.billable,
       coalesce(pc.unpriced, 0) AS unpriced,
       pc.estimated_cost,
       coalesce(dup.duplicates, 0) AS duplicates
  FROM wasend.campaigns c
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS total,
               pg_catalog.count(*) FILTER (WHERE q.sent_at IS NOT NULL) AS sent,
               pg_catalog.count(*) FILTER (WHERE q.delivered_at IS NOT NULL) AS delivered,
               pg_catalog.count(*) FILTER (WHERE q.read_at IS NOT NULL) AS read,
               pg_catalog.count(*) FILTER (WHERE q.status = 'failed') AS failed,
               pg_catalog.count(*) FILTER (WHERE q.status = 'held') AS held,
               pg_catalog.count(*) FILTER (WHERE q.pricing_billable) AS billable
          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q WHERE q.campaign_id = c.id) f ON true
  -- the rows pruned (wasend.retention) count with the rows left
  CROSS JOIN LATERAL (
        SELECT coalesce(pg_catalog.sum(x.rows), 0)::bigint AS total,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.sent), 0)::bigint AS sent,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.delivered), 0)::bigint AS delivered,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.read), 0)::bigint AS read,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'failed'), 0)::bigint AS failed,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.status = 'held'), 0)::bigint AS held,
               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.billable), 0)::bigint AS billable
          FROM wasend.campaign_summaries x WHERE x.campaign_id = c.id) m
  CROSS JOIN LATERAL (
        SELECT coalesce(f.total, 0) + m.total AS total, coalesce(f.sent, 0) + m.sent AS sent,
               coalesce(f.delivered, 0) + m.delivered AS delivered, coalesce(f.read, 0) + m.read AS read,
               coalesce(f.failed, 0) + m.failed AS failed, coalesce(f.held, 0) + m.held AS held,
               coalesce(f.billable, 0) + m.billable AS billable) t
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(x.code, pg_catalog.jsonb_build_object('count', x.cnt, 'title', x.title)) AS failures
          FROM (SELECT y.code, pg_catalog.sum(y.cnt)::bigint AS cnt, pg_catalog.min(y.title) AS title
                  FROM (SELECT coalesce(q.last_error_code::text, q.last_error_class, 'unknown') AS code,
                               pg_catalog.count(*) AS cnt, pg_catalog.min(q.last_error) AS title
                          FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                         WHERE q.campaign_id = c.id AND q.status = 'failed'
                         GROUP BY 1
                        UNION ALL
                        SELECT coalesce(x.error_code::text, x.error_class, 'unknown'), x.rows, x.error_title
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.status = 'failed') y
                 GROUP BY 1) x) fc ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.jsonb_object_agg(y.category,
                   pg_catalog.jsonb_build_object('billable', y.billable, 'free', y.free)) AS by_pricing_category,
               pg_catalog.sum(y.unpriced) AS unpriced,
               pg_catalog.sum(y.cost) AS estimated_cost
          FROM (SELECT z.category, pg_catalog.sum(z.billable)::bigint AS billable,
                       pg_catalog.sum(z.free)::bigint AS free, pg_catalog.sum(z.unpriced)::bigint AS unpriced,
                       pg_catalog.sum(z.cost) AS cost
                  FROM (SELECT q.pricing_category AS category,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable) AS billable,
                       pg_catalog.count(*) FILTER (WHERE NOT q.pricing_billable) AS free,
                       pg_catalog.count(*) FILTER (WHERE q.pricing_billable AND pr.price IS NULL) AS unpriced,
                       pg_catalog.sum(pr.price) FILTER (WHERE q.pricing_billable) AS cost
                  FROM (SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                               x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NULL
                UNION ALL
                SELECT x.id, x.campaign_id, x.recipient, x.status, x.uncertain, x.next_attempt_at, x.waiting_for,
                       x.last_error_code, x.last_error_class, x.last_error, x.sent_at, x.delivered_at, x.read_at, x.failed_at, x.pricing_billable, x.pricing_category
                  FROM wasend.send_queue x
                 WHERE x.campaign_id = c.id AND x.priority IS NOT NULL AND c.kind = 'transactional') q
                  CROSS JOIN LATERAL (
                        SELECT CASE WHEN pg_catalog.strpos(q.recipient, '.') > 0
                                    THEN wasend._price_digits(q.recipient)
                                    ELSE q.recipient END AS digits) d
                  LEFT JOIN LATERAL (
                        SELECT p.price FROM wasend.prices p
                         WHERE p.category = q.pricing_category
                           AND pg_catalog.starts_with(d.digits, p.country_prefix)
                         ORDER BY pg_catalog.length(p.country_prefix) DESC
                         LIMIT 1) pr ON true
                 WHERE q.campaign_id = c.id AND q.pricing_category IS NOT NULL
                 GROUP BY 1
                        UNION ALL
                        SELECT x.pricing_category,
                               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE x.billable), 0)::bigint,
                               coalesce(pg_catalog.sum(x.rows) FILTER (WHERE NOT x.billable), 0)::bigint,
                               pg_catalog.sum(x.unpriced)::bigint, pg_catalog.sum(x.cost)
                          FROM wasend.campaign_summaries x
                         WHERE x.campaign_id = c.id AND x.pricing_category IS NOT NULL
                         GROUP BY 1) z
                 GROUP BY 1) y) pc ON true
  -- rows Meta reported sent twice (wasend.duplicate_sends, by campaign)
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(DISTINCT d.row_id) AS duplicates
          FROM wasend.duplicate_sends d WHERE d.campaign_id = c.id) dup ON true;
COMMENT ON VIEW wasend.campaign_report IS
'Per campaign: delivery funnel (sent, delivered, read), failures by code with Meta''s title, messages by pricing category, billable count and estimated cost from wasend.prices, and rows Meta reported sent twice (duplicates)';
REVOKE ALL ON wasend.campaign_report FROM PUBLIC;
GRANT SELECT ON wasend.campaign_report TO wasend_viewer;

SELECT pg_catalog.pg_extension_config_dump('wasend.duplicate_sends', '');


/*
 * A grant means one database.
 *
 * wasend_viewer, wasend_operator and wasend_admin are roles of the whole
 * cluster: a member of wasend_operator granted for one database could read
 * the queue and send with the numbers of every other database that has
 * the extension.  Since 0.6.0 each database keeps its own list,
 * wasend.database_access (role name, access level), and a role reaches
 * wasend in a database only when the list gives it (or a role it is a
 * member of) that level there; superusers always may.  src/access.c reads
 * the list and explains the checks.
 *
 * - Every API function checks the role calling it (the current role, as
 *   PostgreSQL's own privileges do: a SECURITY DEFINER function of
 *   another role calls with that role's access) before anything else.
 *   The functions keep their names, signatures, defaults, grants and
 *   settings; each one moves to schema wasend_impl (where its body's
 *   references to its own name still hold), which only the extension's
 *   owner may call.  wasend.<name> becomes a SECURITY INVOKER wrapper that
 *   checks the level the function's grants ask for (viewer, operator or
 *   admin) with wasend._api_enter, which arms a one-shot pass, and calls
 *   wasend_impl.gate_<name>, a SECURITY DEFINER gate that consumes the
 *   pass (wasend._api_consume) and runs the body.  Called directly, a gate
 *   refuses.  Wrappers and gates are made from the catalog, so they match
 *   the functions as the sections above leave them.
 * - Every table a wasend role may read or write has row level security:
 *   reading needs viewer, adding to send_queue operator, any other change
 *   admin, in this database (wasend._may, for the current role).  The two
 *   views read as the caller (security_invoker), so the same rules hold
 *   through them.  The senders, the webhook worker and the API functions
 *   run as the table owner, which row level security does not restrict.
 * - wasend.wasend_grant_access(role, level) (admin) makes the role a
 *   member of the matching cluster role, for the table privileges, and
 *   lists it for this database; wasend.wasend_revoke_access(role) takes it
 *   off the list (the cluster role stays: other databases may list it).
 *   Access follows the role's name, as a dump restores it: a role renamed
 *   loses it.
 *
 * An updated database lists nobody: roles granted wasend roles before
 * 0.6.0 have no access in it until an admin or superuser grants it (the
 * update says which roles those are).
 */

CREATE TABLE wasend.database_access (
    role_name   name PRIMARY KEY,
    access      text NOT NULL CHECK (access IN ('viewer', 'operator', 'admin')),
    granted_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wasend.database_access IS
    'roles that may use wasend in this database, and at which level (wasend_grant_access)';
SELECT pg_catalog.pg_extension_config_dump('wasend.database_access', '');
REVOKE ALL ON wasend.database_access FROM PUBLIC;
GRANT SELECT ON wasend.database_access TO wasend_viewer;

CREATE FUNCTION wasend._may(level text) RETURNS boolean
AS 'MODULE_PATHNAME', 'wasend_access_may'
LANGUAGE C STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._may(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._may(text) TO wasend_viewer;

CREATE FUNCTION wasend._api_enter(level text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_access_enter'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._api_enter(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend._api_enter(text) TO wasend_viewer;

CREATE FUNCTION wasend._api_consume(level text) RETURNS void
AS 'MODULE_PATHNAME', 'wasend_access_consume'
LANGUAGE C VOLATILE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION wasend._api_consume(text) FROM PUBLIC;

CREATE FUNCTION wasend.wasend_grant_access(role_name name, access text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF role_name IS NULL OR access IS NULL THEN
        RAISE EXCEPTION 'role and access level must not be NULL'
              USING ERRCODE = 'null_value_not_allowed',
                    HINT = 'Give a role name and one of viewer, operator, admin.';
    END IF;
    IF access NOT IN ('viewer', 'operator', 'admin') THEN
        RAISE EXCEPTION 'unknown wasend access level "%"', access
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'The levels are viewer, operator and admin.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name)
       OR role_name OPERATOR(pg_catalog.~) '^(pg_|wasend_(viewer|operator|admin)$)' THEN
        RAISE EXCEPTION 'role "%" cannot be given wasend access', role_name
              USING ERRCODE = 'undefined_object',
                    HINT = 'Give an existing login or group role of yours (not PUBLIC, a pg_ role or a wasend role).';
    END IF;
    EXECUTE pg_catalog.format('GRANT %I TO %I', 'wasend_' OPERATOR(pg_catalog.||) access, role_name);
    INSERT INTO wasend.database_access AS a (role_name, access) VALUES (role_name, access)
        ON CONFLICT ON CONSTRAINT database_access_pkey
        DO UPDATE SET access = excluded.access, granted_at = pg_catalog.now();
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_grant_access(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_grant_access(name, text) TO wasend_admin;

CREATE FUNCTION wasend.wasend_revoke_access(role_name name) RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    DELETE FROM wasend.database_access a WHERE a.role_name OPERATOR(pg_catalog.=) wasend_revoke_access.role_name;
    GET DIAGNOSTICS found = ROW_COUNT;
    RETURN found;
END
$$;
REVOKE ALL ON FUNCTION wasend.wasend_revoke_access(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wasend.wasend_revoke_access(name) TO wasend_admin;

CREATE SCHEMA wasend_impl;
COMMENT ON SCHEMA wasend_impl IS 'the bodies of the API functions, and the gates their wrappers in schema wasend call';
REVOKE ALL ON SCHEMA wasend_impl FROM PUBLIC;
GRANT USAGE ON SCHEMA wasend_impl TO wasend_viewer;

DO $wrap$
DECLARE
    f record;
    level text;
    gate text;
    cfg text;
    wcfg text;
    args text;
    body text;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, p.proretset, p.prorettype, p.proconfig, p.pronargs,
               pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_identity_arguments(p.oid) AS idargs,
               pg_catalog.pg_get_function_result(p.oid) AS result
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'wasend'::regnamespace
           AND p.proname OPERATOR(pg_catalog.~) '^wasend_'
         ORDER BY p.proname
    LOOP
        level := CASE
            WHEN pg_catalog.has_function_privilege('wasend_viewer', f.oid, 'EXECUTE') THEN 'viewer'
            WHEN pg_catalog.has_function_privilege('wasend_operator', f.oid, 'EXECUTE') THEN 'operator'
            ELSE 'admin' END;
        gate := 'gate_' OPERATOR(pg_catalog.||) f.proname;
        EXECUTE pg_catalog.format('ALTER FUNCTION wasend.%I(%s) SET SCHEMA wasend_impl', f.proname, f.idargs);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend_impl.%I(%s) FROM PUBLIC, wasend_viewer, wasend_operator, wasend_admin',
                                  f.proname, f.idargs);
        SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ' ORDER BY i)
          INTO args FROM pg_catalog.generate_series(1, f.pronargs) i;
        args := COALESCE(args, '');
        SELECT pg_catalog.string_agg(pg_catalog.format(' SET %I TO %s', pg_catalog.split_part(c, '=', 1),
                                                       pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)), '')
          INTO cfg FROM pg_catalog.unnest(f.proconfig) c;
        cfg := COALESCE(cfg, '');
        -- the wrapper runs as its caller, who may not set a superuser's
        -- settings (log_min_error_statement): it keeps the others; the
        -- gate keeps them all, and a refusal is never logged with its
        -- statement (wasend._api_enter)
        SELECT COALESCE(pg_catalog.string_agg(pg_catalog.format(' SET %I TO %s', pg_catalog.split_part(c, '=', 1),
                                                       pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)), ''), '')
          INTO wcfg FROM pg_catalog.unnest(f.proconfig) c
         WHERE pg_catalog.split_part(c, '=', 1) OPERATOR(pg_catalog.=) 'search_path';

        -- the gate: runs as the owner, only after a wrapper's check
        IF f.proretset THEN
            body := pg_catalog.format('RETURN QUERY SELECT * FROM wasend_impl.%I(%s);', f.proname, args);
        ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
            body := pg_catalog.format('PERFORM wasend_impl.%I(%s);', f.proname, args);
        ELSE
            body := pg_catalog.format('RETURN wasend_impl.%I(%s);', f.proname, args);
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION wasend_impl.%I(%s) RETURNS %s LANGUAGE plpgsql VOLATILE SECURITY DEFINER%s AS %L',
            gate, f.idargs, f.result, cfg,
            pg_catalog.format(E'BEGIN\n    PERFORM wasend._api_consume(%L);\n    %s\nEND', level, body));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION wasend_impl.%I(%s) IS %L', gate, f.idargs,
                                  pg_catalog.format('runs wasend_impl.%I for wasend.%I, which checked %s access', f.proname, f.proname, level));
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend_impl.%I(%s) FROM PUBLIC', gate, f.idargs);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION wasend_impl.%I(%s) TO %I', gate, f.idargs, 'wasend_' OPERATOR(pg_catalog.||) level);

        -- the wrapper: checks the role calling it
        IF f.proretset THEN
            body := pg_catalog.format('RETURN QUERY SELECT * FROM wasend_impl.%I(%s);', gate, args);
        ELSIF f.prorettype OPERATOR(pg_catalog.=) 'void'::regtype THEN
            body := pg_catalog.format('PERFORM wasend_impl.%I(%s);', gate, args);
        ELSE
            body := pg_catalog.format('RETURN wasend_impl.%I(%s);', gate, args);
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION wasend.%I(%s) RETURNS %s LANGUAGE plpgsql VOLATILE SECURITY INVOKER%s AS %L',
            f.proname, f.args, f.result, wcfg,
            pg_catalog.format(E'BEGIN\n    PERFORM wasend._api_enter(%L);\n    %s\nEND', level, body));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION wasend.%I(%s) IS %L', f.proname, f.idargs,
                                  pg_catalog.format('checks %s access in this database, then runs wasend_impl.%I', level, f.proname));
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION wasend.%I(%s) FROM PUBLIC', f.proname, f.idargs);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION wasend.%I(%s) TO %I', f.proname, f.idargs, 'wasend_' OPERATOR(pg_catalog.||) level);
    END LOOP;
END
$wrap$;

DO $rls$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wasend'::regnamespace AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND (pg_catalog.has_table_privilege('wasend_viewer', c.oid, 'SELECT')
                OR pg_catalog.has_any_column_privilege('wasend_viewer', c.oid, 'SELECT')
                OR pg_catalog.has_table_privilege('wasend_admin', c.oid, 'INSERT, UPDATE, DELETE')
                OR pg_catalog.has_any_column_privilege('wasend_admin', c.oid, 'INSERT, UPDATE'))
         ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE wasend.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('CREATE POLICY wasend_viewer_read ON wasend.%I FOR SELECT'
                                  ' USING ((SELECT wasend._may(''viewer'')))', t);
        EXECUTE pg_catalog.format('CREATE POLICY wasend_admin_write ON wasend.%I FOR ALL'
                                  ' USING ((SELECT wasend._may(''admin'')))'
                                  ' WITH CHECK ((SELECT wasend._may(''admin'')))', t);
    END LOOP;
END
$rls$;
CREATE POLICY wasend_operator_insert ON wasend.send_queue FOR INSERT
    WITH CHECK ((SELECT wasend._may('operator')));

ALTER VIEW wasend.campaign_progress SET (security_invoker = true);
ALTER VIEW wasend.campaign_report SET (security_invoker = true);

DO $tell$
DECLARE
    members text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(m.rolname), ', ')
      INTO members
      FROM pg_catalog.pg_auth_members am
      JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) am.roleid
      JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) am.member
     WHERE g.rolname IN ('wasend_viewer', 'wasend_operator', 'wasend_admin')
       AND m.rolname NOT IN ('wasend_viewer', 'wasend_operator', 'wasend_admin');
    IF members IS NOT NULL THEN
        RAISE NOTICE 'wasend roles now need a grant in each database: % have no access in database % yet',
                     members, pg_catalog.quote_ident(pg_catalog.current_database())
              USING HINT = 'Run SELECT wasend.wasend_grant_access(''role'', ''operator''); (or viewer, admin) in this database for each role that should keep its access.';
    END IF;
END
$tell$;

/* end of the section "A grant means one database": keep it the last of this file, so that it wraps the API functions as every section above leaves them */
