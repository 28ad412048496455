-- ---------------------------------------------------------------------
-- History: campaign summaries and retention
-- Rows of campaigns that finished longer ago than wasend.retention leave
-- send_queue (the supervisor, src/retention.c, in short batches; or
-- wasend.wasend_prune() by hand).  What the two views below show of them
-- is added, before they go, to wasend.campaign_summaries: the views read
-- the summaries and the rows left, so that a campaign's figures stay
-- what they were.
-- ---------------------------------------------------------------------

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

-- A campaign's rows are read through send_queue_campaign_recipient_key
-- (campaign rows have no priority) and, for a transactional lane only,
-- the rows with a priority: so a campaign costs its own rows, not a scan
-- of the whole queue per campaign.
CREATE VIEW wasend.campaign_progress WITH (security_invoker = true) AS
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

-- One row per campaign: the delivery funnel, failures by code with Meta's
-- title, messages by pricing category, and an estimated cost from
-- wasend.prices (NULL while no billable message has a price).
CREATE VIEW wasend.campaign_report WITH (security_invoker = true) AS
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
