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
