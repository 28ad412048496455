-- ---------------------------------------------------------------------
-- Progress and report
-- A view's functions and operators are bound when it is created, with
-- CREATE EXTENSION's search_path (the extension's schema, public by
-- default): so every function is named with pg_catalog, and every
-- operator has operands of exactly the types of a pg_catalog operator, so
-- that no function or operator someone put in public first can be a
-- better match.
--
-- Both views read as their caller (security_invoker), so that the row
-- level security of the tables (see the access control section) holds
-- through them.
-- ---------------------------------------------------------------------

CREATE VIEW wasend.campaign_progress WITH (security_invoker = true) AS
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
REVOKE ALL ON wasend.campaign_progress FROM PUBLIC;
GRANT SELECT ON wasend.campaign_progress TO wasend_viewer;

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

-- One row per campaign: the delivery funnel, failures by code with Meta's
-- title, messages by pricing category, and an estimated cost from
-- wasend.prices (NULL while no billable message has a price).
CREATE VIEW wasend.campaign_report WITH (security_invoker = true) AS
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
COMMENT ON VIEW wasend.campaign_report IS
'Per campaign: delivery funnel (sent, delivered, read), failures by code with Meta''s title, messages by pricing category, billable count and estimated cost from wasend.prices';
REVOKE ALL ON wasend.campaign_report FROM PUBLIC;
GRANT SELECT ON wasend.campaign_report TO wasend_viewer;
