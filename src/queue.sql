-- src/queue.sql: every statement the wasend workers run against the
-- extension's tables, in one place.
--
-- The build turns each "-- name: X" block into the C string sql_X of
-- src/queue_sql.h (see src/queue_sql.awk); the benchmarks read the same
-- blocks (test/lib.sh, queue_sql), so they always measure what the senders
-- run.  Lines starting with "--" are comments and are not part of the
-- statement.  Parameters are $1, $2, ...; their types are given in
-- src/queue.c where each statement is prepared.
--
-- Rules every statement here follows:
--   * Workers pin search_path = pg_catalog, pg_temp, and every wasend
--     object is schema-qualified, so nothing resolves through public or a
--     user's schema.
--   * No statement waits on a row a user locked: rows of other tables are
--     taken with FOR UPDATE SKIP LOCKED, and what is skipped is tried again
--     on a later turn.  lock_timeout (set by the workers) is the backstop
--     for locks a statement cannot skip (a user's lock on a row the sender
--     itself claimed, a table lock).
--   * Text that came from Meta is stored through the token redaction
--     pattern EA[A-Za-z0-9]{20,} (the number's own token is also replaced,
--     in C, before an answer reaches these statements).

-- name: activate
-- Numbers whose timed pause has run out resume, scheduled campaigns whose
-- time has come start; say when the next campaign is due.  Rows a user
-- holds locked are skipped and picked up on a later refresh.
WITH resumed AS (
  UPDATE wasend.whatsapp_numbers n
     SET status = 'active', pause_reason = NULL, paused_until = NULL,
         updated_at = now()
   WHERE n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                   WHERE l.status = 'paused' AND l.paused_until <= now()
                     FOR UPDATE SKIP LOCKED)
  RETURNING n.id),
 started AS (
  UPDATE wasend.campaigns c
     SET status = 'running', started_at = coalesce(c.started_at, now()),
         updated_at = now()
   WHERE c.id IN (SELECT l.id FROM wasend.campaigns l
                   WHERE l.status = 'scheduled' AND l.start_at <= now()
                     FOR UPDATE SKIP LOCKED)
  RETURNING c.id)
SELECT (SELECT count(*) FROM started) + (SELECT count(*) FROM resumed),
       (SELECT min(start_at) FROM wasend.campaigns
         WHERE status = 'scheduled' AND start_at > now())

-- name: running
-- Running campaigns whose number may send, with what sending needs.  With
-- limits reading on ($1), a number waits until its messaging limit was
-- read once (or the read failed), so that no claim spends a budget it
-- does not know.  A campaign that holds back (pacing: paced_until) is not
-- in the set, so that the rows a sender claimed for it and has not started
-- are given back, as for a pause.  Nor is a campaign whose send window,
-- in a fixed time zone, is closed now: its rows are left alone until it
-- opens (rows windowed per recipient are decided one by one, see claim).
-- The priority orders a number's campaigns in the sender (campaign_cache.c);
-- a transactional lane (wasend_send) goes ahead of all of them.  A NULL
-- access_token is the number's token file, which the sender reads itself
-- (queue.c): its content is never in a statement.
--
-- $2 leaves out the campaigns the sender set aside (a read or claim of
-- theirs failed, see db_cycle.c); $3, when not NULL, reads only those
-- campaigns: the sender reads the set in parts to find the campaign whose
-- row makes the read fail.
SELECT c.id, n.id, n.phone_number_id, n.access_token, n.max_send_rate_per_sec,
       c.error_threshold::float8, c.error_window, c.priority, c.kind = 'transactional'
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
 WHERE c.status = 'running' AND n.status = 'active'
   AND NOT (c.id = ANY ($2::bigint[]))
   AND ($3::bigint[] IS NULL OR c.id = ANY ($3::bigint[]))
   AND (n.limits_checked_at IS NOT NULL OR NOT $1)
   AND (c.paced_until IS NULL OR c.paced_until <= now())
   AND (c.send_window_start IS NULL OR c.send_timezone = 'recipient' OR c.kind = 'transactional'
        OR wasend._window_opens(c.send_window_start, c.send_window_end, c.send_timezone) IS NULL)

-- name: running_ids
-- The campaigns the running set would hold, by id only, for reading it in
-- parts when the whole read failed: nothing here evaluates a value a user
-- can write but the status and the ids.  $1 as in running's $2.
SELECT c.id
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
 WHERE c.status = 'running' AND n.status = 'active'
   AND NOT (c.id = ANY ($1::bigint[]))
 ORDER BY c.id

-- name: fault_note
-- A campaign the sender sets aside: say why and until when, for
-- campaign_progress.waiting ($1 campaign, $2 the error, $3 seconds until
-- it is tried again).  Faults of campaigns that stopped running long ago
-- go at the same time.
WITH gone AS (
  DELETE FROM wasend.campaign_faults f
   WHERE f.retry_at < now() - interval '1 day' AND f.campaign_id <> $1)
INSERT INTO wasend.campaign_faults AS f (campaign_id, error, failed_at, retry_at)
VALUES ($1, regexp_replace($2, 'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g'),
        now(), now() + make_interval(secs => $3))
ON CONFLICT (campaign_id) DO UPDATE
   SET error = excluded.error, failed_at = excluded.failed_at, retry_at = excluded.retry_at

-- name: fault_clear
-- Campaigns set aside that went through again.
DELETE FROM wasend.campaign_faults f WHERE f.campaign_id = ANY ($1::bigint[])

-- name: claim_lock
-- Before a claim: lock the limited portfolios of the campaigns it asks for
-- (SKIP LOCKED: another sender is spending that budget right now).  In its
-- own statement, so that the claim's snapshot, taken after the locks,
-- sees every recipient the previous holder of a lock started: a count in
-- the claim's own snapshot, taken before its lock, could miss a holder
-- that committed in between and spend the same slots twice (seen: 300
-- recipients started on a limit of 250 by two senders).
--
-- The frequency cap is counted the same way: while a marketing campaign
-- with a cap runs, every claim of a marketing campaign first takes the
-- 'frequency_cap' lock (waiting for it: another sender holds it only for
-- the rest of its short cycle; lock_timeout bounds the wait), so that no
-- two claims count a recipient's messages without seeing each other's.
--
-- It also makes the wasend.claim_locks row of each transactional lane
-- asked for, when the row is missing, so that the claim can lock it: the
-- row is not in a dump (a restored database has none), nor made for a
-- lane inserted by hand.  An existing row costs one index probe, and a
-- row another sender has locked is not waited for.
WITH lanes AS (
  INSERT INTO wasend.claim_locks (name)
  SELECT 'lane:' || c.id::text FROM wasend.campaigns c
   WHERE c.id = ANY ($1::bigint[]) AND c.kind = 'transactional'
  ON CONFLICT (name) DO NOTHING),
 cap_lock AS (
  SELECT l.name FROM wasend.claim_locks l
   WHERE l.name = 'frequency_cap'
     AND EXISTS (SELECT 1 FROM wasend.campaigns c
                  WHERE c.id = ANY ($1::bigint[]) AND c.category = 'marketing')
     AND EXISTS (SELECT 1 FROM wasend.campaigns c
                  WHERE c.status = 'running' AND c.frequency_cap IS NOT NULL
                    AND c.category = 'marketing')
     FOR UPDATE)
SELECT p.portfolio FROM wasend.portfolios p
 WHERE p.messaging_limit IS NOT NULL
   AND p.portfolio IN (SELECT coalesce(n.business_id, 'number:' || n.id)
                         FROM wasend.campaigns c
                         JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                        WHERE c.id = ANY ($1::bigint[]))
   AND (SELECT count(*) FROM cap_lock) >= 0
   FOR UPDATE OF p SKIP LOCKED

-- name: claim
-- Claim up to lim ready rows of each campaign that are due, skipping rows
-- another sender holds, and build each request body: the row's payload or
-- the campaign's message, plus the envelope fields.  Rows come from
-- send_queue_ready_idx (campaign_id, next_attempt_at, id), whose predicate
-- is the sent_at / failed_at conditions, always as a range that ends at
-- now(): a row that waits (next_attempt_at in the future: a send window,
-- a limit, a cap, a retry's backoff) is never read until it is due, so a
-- million waiting rows cost a claim nothing.  A campaign's rows come in two
-- parts: first those that have a due time (they waited or were retried),
-- earliest due first, then those never looked at ('-infinity', the
-- default), in id order from the keyset cursor on; LIMIT stops each scan.
-- A transactional lane's rows (wasend_send) come highest priority first,
-- then by id, and without the cursor: a lane holds few due rows, and when
-- its share of the budget is smaller than what was committed together,
-- the highest priorities must be the ones claimed (seen under a busy CPU:
-- a budget of one row sent priorities 0, 50, 100 in id order).  The
-- branches are switched off for the other kind by a one-time filter,
-- because one ORDER BY for both would cost a campaign its index-ordered
-- scan that LIMIT stops: it would sort all its due rows at every claim.
-- Setting status = 'sending' touches no indexed column, so it is a HOT
-- update when the page has room (see the fillfactor in the extension
-- script).  The UPDATE finds the picked rows by ctid (a TID scan): they
-- are locked, so their ctid cannot change before it runs, and it saves a
-- primary-key descent and heap visit per row (measured with callgrind:
-- see bench/profile.sh).  A campaign paused meanwhile is caught by the
-- sender's next refresh, which releases rows.
--
-- scan ($6, at least lim) is how many due rows of the campaign the claim
-- may look at: rows that must wait are decided (pushed to when they may
-- go) however many there are before the first rows that may go, up to
-- scan, while at most lim rows are claimed for sending; rows that may go
-- beyond lim are left as they are ('later').  The sender asks for more
-- than lim only after a claim of the campaign found rows that wait
-- (campaign_cache.c), so a campaign whose rows all go looks at lim rows.
--
-- after_id ($4) is a keyset cursor over the rows never looked at: the
-- highest id this sender decided last time for the campaign, below any
-- row it left ('later', 'busy'), returned as advance.  Without it each
-- claim would walk again over the index entries of every row claimed
-- since the last vacuum (they stay in the index until then); the sender
-- resets it after a control change, when it takes the number over, and
-- every 10th refresh, so rows put back behind it (released rows, rows
-- committed late) are found within 10 s (campaign_cache.c).  Retried and
-- waiting rows have a due time and are found without the cursor.
-- $3 is the sender's claim token (random per sender start, see launcher.c).
--
-- A claim takes nothing of a campaign that is not running, or whose number
-- is not active, as its own snapshot sees them: a pause that committed
-- before the claim began stops it even if the sender has not refreshed
-- its running set yet (one row per campaign asked for, not per row).  Nor
-- of a campaign that holds back (paced_until, see pacing); a campaign
-- sending its first sample of a new template (sample_left) gets at most
-- what is left of the sample.
--
-- Each picked row is then decided (Meta's account limits and send
-- windows, README).  "The recipient" is the person: every rule looks at
-- all of their names, the phone number and the BSUIDs Meta paired with it
-- (wasend._recipient_names, wasend.identities), and a person counts once
-- however the rows address them:
--   send_window      the campaign has a send window and it is closed in the
--                    row's zone (_row_zone: the campaign's fixed zone, else
--                    the row's timezone, else the main zone of the
--                    recipient's country calling code): the row waits until
--                    it opens (it never fails for it);
--   suppressed       the recipient is suppressed (for marketing campaigns,
--                    also by a marketing opt-out): the row fails, no request;
--   frequency_cap    the campaign caps marketing messages per recipient and
--                    the recipient had frequency_cap of them in
--                    frequency_window (send_queue_recipient_idx): the row
--                    waits until the oldest of them leaves the window;
--   messaging_limit  the portfolio has a limit, the recipient costs a slot
--                    (not messaged by the portfolio in 24 h, no inbound
--                    message in 24 h) and the slots are spent: the row
--                    waits until a slot frees for it: the n-th recipient
--                    over the limit in this claim until the n-th oldest
--                    recipient of the window leaves it (past the newest:
--                    24 h after that slot is taken again), so that the
--                    waiting rows come due a few at a time as slots free,
--                    not all at once at every slot;
--   uncertain        the row's outcome is unknown (it was in flight when
--                    its sender stopped: recover; or its request got no
--                    usable answer: record), it waited
--                    wasend.uncertain_retry_delay for a status that settles
--                    it (waiting_for 'uncertain'), got none, and is to fail
--                    (wasend.on_uncertain = fail, or wasend.max_attempts
--                    attempts): it fails as uncertain, no request;
--   busy             another sender holds the portfolio's budget right now
--                    (SKIP LOCKED): the row is left alone, claimed later;
--   send             claimed, up to lim rows of the campaign in order;
--   later            it may go, but lim rows of the campaign were claimed
--                    before it: left alone, claimed by a next claim.
-- Rows that wait or fail come back with a NULL body; only 'send' rows are
-- sent.  The budget of each limited portfolio is counted under its
-- wasend.portfolios row lock (taken by claim_lock, just before), so two
-- senders never spend the same slot, and a recipient the claim starts is
-- written to wasend.recipient_window in the same statement.
-- $5 are the limited portfolios whose lock this transaction holds
-- (claim_lock); rows of the others that would cost a slot are 'busy'.
-- Portfolios without a limit, campaigns without a cap: none of this
-- touches a table but the identities' and the suppressions' indexes.
-- A BSUID row is sent with Meta's "recipient" field instead of "to"
-- (never both: "to" would win).
WITH number_portfolios AS NOT MATERIALIZED (
  -- each number with its portfolio's key: its business, or the number
  -- alone when it has none
  SELECT n.id, n.status, n.phone_number_id,
         coalesce(n.business_id, 'number:' || n.id) AS portfolio
    FROM wasend.whatsapp_numbers n),
 locked_lanes AS (
  -- a transactional lane (wasend_send rows) is claimed by one sender at a
  -- time, so that rows committed together stay together, in priority
  -- order, in one sender's queue; a lane another sender is claiming gives
  -- nothing now (its rows are in that claim).  The lock is the lane's row
  -- of wasend.claim_locks, which claim_lock makes when it is missing (a
  -- restored database, a lane inserted by hand), and which only the
  -- extension's owner can lock: no user can hold the lane back.
  SELECT l.name FROM wasend.claim_locks l
   WHERE l.name IN (SELECT 'lane:' || c.id::text FROM wasend.campaigns c
                     WHERE c.id = ANY ($1::bigint[]) AND c.kind = 'transactional')
     FOR UPDATE SKIP LOCKED),
 sampling AS (
  -- campaigns sending a first sample: locked, so that two senders never
  -- both take what is left of it.  The locked row is its latest version
  -- (the statement's snapshot may be older): a campaign another sender
  -- locks, or whose sample ran out since the snapshot, gives nothing now.
  SELECT c.id, c.sample_left FROM wasend.campaigns c
   WHERE c.id = ANY ($1::bigint[]) AND c.sample_left IS NOT NULL
     FOR UPDATE SKIP LOCKED),
 asked AS (
  SELECT w.campaign_id, w.after_id, w.scan,
         CASE WHEN c.sample_left IS NULL THEN w.lim
              WHEN s.sample_left IS NULL THEN 0
              ELSE least(w.lim, s.sample_left) END AS lim,
         c.category = 'marketing' AS marketing, c.frequency_cap, c.frequency_window,
         n.portfolio, p.messaging_limit,
         CASE WHEN c.kind = 'campaign' THEN c.send_window_start END AS window_start,
         c.send_window_end AS window_end, c.send_timezone, c.kind = 'transactional' AS lane
    FROM unnest($1::bigint[], $2::int[], $4::bigint[], $6::int[]) AS w(campaign_id, lim, after_id, scan)
    JOIN wasend.campaigns c ON c.id = w.campaign_id
    JOIN number_portfolios n ON n.id = c.number_id
    LEFT JOIN wasend.portfolios p ON p.portfolio = n.portfolio
    LEFT JOIN sampling s ON s.id = c.id
   WHERE c.status = 'running' AND n.status = 'active'
     AND (c.paced_until IS NULL OR c.paced_until <= now())
     AND (c.kind = 'campaign' OR 'lane:' || c.id::text IN (SELECT l.name FROM locked_lanes l))),
 asking AS (
  SELECT w.*, CASE WHEN w.lim <= 0 THEN 0 ELSE greatest(w.scan, w.lim) END AS look
    FROM asked w),
 picked AS MATERIALIZED (
  SELECT p.ctid, p.id, p.recipient, p.fresh, p.fail_uncertain,
         row_number() OVER (PARTITION BY w.campaign_id
                            ORDER BY p.part, p.due, p.priority DESC, p.id) AS ord,
         w.campaign_id, w.lim, w.marketing, w.frequency_cap,
         w.frequency_window, w.portfolio, w.messaging_limit,
         CASE WHEN w.window_start IS NOT NULL
              THEN wasend._window_opens(w.window_start, w.window_end,
                                        wasend._row_zone(w.send_timezone, p.timezone, p.recipient))
         END AS window_opens
    FROM asking w CROSS JOIN LATERAL (
    SELECT x.* FROM (
      SELECT a.* FROM (
        SELECT q.ctid, q.id, q.recipient, q.timezone, 1 AS part, q.next_attempt_at AS due,
               0 AS priority, false AS fresh,
               coalesce(q.waiting_for = 'uncertain', false)
                 AND (current_setting('wasend.on_uncertain', true) = 'fail'
                      OR q.attempts >= coalesce(nullif(current_setting('wasend.max_attempts', true), '')::int, 5)) AS fail_uncertain
          FROM wasend.send_queue q
         WHERE NOT w.lane AND q.campaign_id = w.campaign_id
           AND q.next_attempt_at > '-infinity' AND q.next_attempt_at <= now()
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'
         ORDER BY q.next_attempt_at, q.id LIMIT w.look
           FOR UPDATE SKIP LOCKED) a
      UNION ALL
      SELECT f.* FROM (
        SELECT q.ctid, q.id, q.recipient, q.timezone, 2, q.next_attempt_at, 0, true, false
          FROM wasend.send_queue q
         WHERE NOT w.lane AND q.campaign_id = w.campaign_id
           AND q.next_attempt_at = '-infinity' AND q.id > w.after_id
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'
         ORDER BY q.id LIMIT w.look
           FOR UPDATE SKIP LOCKED) f
      UNION ALL
      SELECT l.* FROM (
        SELECT q.ctid, q.id, q.recipient, q.timezone, 3, '-infinity'::timestamptz, q.priority, false,
               coalesce(q.waiting_for = 'uncertain', false)
                 AND (current_setting('wasend.on_uncertain', true) = 'fail'
                      OR q.attempts >= coalesce(nullif(current_setting('wasend.max_attempts', true), '')::int, 5))
          FROM wasend.send_queue q
         WHERE w.lane AND q.campaign_id = w.campaign_id
           AND q.next_attempt_at <= now()
           AND q.sent_at IS NULL AND q.failed_at IS NULL AND q.status = 'ready'
         ORDER BY q.priority DESC, q.id LIMIT w.look
           FOR UPDATE SKIP LOCKED) l) x
     LIMIT w.look) p),
 budget AS MATERIALIZED (
  SELECT b.portfolio, b.messaging_limit,
         (SELECT count(*) FROM wasend.recipient_window r
           WHERE r.portfolio = b.portfolio AND r.last_at > now() - interval '24 hours') AS used
    FROM wasend.portfolios b
   WHERE b.portfolio = ANY ($5::text[])
     AND b.portfolio IN (SELECT k.portfolio FROM picked k WHERE k.messaging_limit IS NOT NULL)),
 costed AS MATERIALIZED (
  -- every rule looks at the person, by all their names (phone number,
  -- BSUIDs: wasend.identity_names, as wasend._recipient_names reads it);
  -- person is their key, the recipient itself when in no pair
  SELECT k.*, coalesce(nm.person, k.recipient) AS person,
         EXISTS (SELECT 1 FROM wasend.suppressions s
                  WHERE s.recipient = ANY (nm.names) AND (s.scope = 'all' OR k.marketing)) AS suppressed,
         CASE WHEN k.messaging_limit IS NOT NULL THEN
           (SELECT r.recipient FROM wasend.recipient_window r
             WHERE r.portfolio = k.portfolio AND r.recipient = ANY (nm.names)
               AND r.last_at > now() - interval '24 hours'
             ORDER BY r.last_at DESC LIMIT 1) END AS window_name,
         k.messaging_limit IS NOT NULL
           AND EXISTS (SELECT 1 FROM wasend.inbound_messages i
                         JOIN number_portfolios n2 ON n2.phone_number_id = i.phone_number_id
                        WHERE i.from_number = ANY (nm.names)
                          AND i.received_at > now() - interval '24 hours'
                          AND n2.portfolio = k.portfolio) AS inbound,
         f.cnt AS freq_used, f.oldest AS freq_oldest
    FROM picked k
    CROSS JOIN LATERAL (
      SELECT p.person,
             CASE WHEN p.person IS NULL THEN ARRAY[k.recipient]
                  ELSE ARRAY(SELECT m.name FROM wasend.identity_names m WHERE m.person = p.person) END AS names
        FROM (SELECT (SELECT i.person FROM wasend.identity_names i WHERE i.name = k.recipient) AS person) p) nm
    LEFT JOIN LATERAL (
      SELECT count(*) AS cnt, min(coalesce(q2.sent_at, q2.claimed_at)) AS oldest
        FROM wasend.send_queue q2 JOIN wasend.campaigns c2 ON c2.id = q2.campaign_id
       WHERE k.frequency_cap IS NOT NULL AND k.marketing
         AND q2.recipient = ANY (nm.names) AND c2.category = 'marketing'
         AND q2.status IN ('sending', 'held', 'sent', 'delivered', 'read')
         AND coalesce(q2.sent_at, q2.claimed_at) > now() - k.frequency_window) f ON true),
 capped AS (
  SELECT c.*,
         -- the recipient's marketing messages: sent or claimed before
         -- (freq_used), and this claim's marketing rows up to this one,
         -- capped or not
         c.frequency_cap IS NOT NULL AND c.marketing
           AND c.freq_used + count(*) FILTER (WHERE c.marketing AND c.window_opens IS NULL)
                               OVER (PARTITION BY c.person ORDER BY c.campaign_id, c.ord) > c.frequency_cap AS over_cap,
         c.messaging_limit IS NOT NULL AND c.window_name IS NULL AND NOT c.inbound AS costs
    FROM costed c),
 new_recipients AS (
  -- the people that cost a slot, per portfolio, in order of their first row
  SELECT x.portfolio, x.person,
         row_number() OVER (PARTITION BY x.portfolio ORDER BY min(x.campaign_id), min(x.ord)) AS rn
    FROM capped x
   WHERE x.costs AND NOT x.suppressed AND NOT x.over_cap AND x.window_opens IS NULL
     AND NOT x.fail_uncertain
   GROUP BY x.portfolio, x.person),
 slots AS MATERIALIZED (
  -- when each slot of a limited portfolio frees, oldest first (read only
  -- when a row waits for the limit)
  SELECT r.portfolio, array_agg(r.last_at + interval '24 hours' ORDER BY r.last_at) AS frees
    FROM wasend.recipient_window r
   WHERE r.portfolio IN (SELECT b.portfolio FROM budget b)
     AND r.last_at > now() - interval '24 hours'
   GROUP BY r.portfolio),
 judged AS (
  SELECT x.ctid, x.id, x.campaign_id, x.portfolio, x.recipient, x.messaging_limit, x.inbound,
         x.fresh, x.ord, x.lim, x.person, x.window_name,
         CASE WHEN x.fail_uncertain THEN 'uncertain'
              WHEN x.window_opens IS NOT NULL THEN 'send_window'
              WHEN x.suppressed THEN 'suppressed'
              WHEN x.over_cap THEN 'frequency_cap'
              WHEN x.costs AND b.portfolio IS NULL THEN 'busy'
              WHEN x.costs AND nr.rn > b.messaging_limit - b.used THEN 'messaging_limit'
              ELSE 'send' END AS verdict,
         CASE WHEN x.window_opens IS NOT NULL THEN x.window_opens
              WHEN x.over_cap
              THEN greatest(x.freq_oldest + x.frequency_window, now() + interval '1 second')
              WHEN x.costs AND nr.rn > b.messaging_limit - b.used
              THEN greatest(coalesce(
                     (SELECT CASE WHEN nr.rn + b.used - b.messaging_limit <= array_length(s.frees, 1)
                                  THEN s.frees[(nr.rn + b.used - b.messaging_limit)::int]
                                  ELSE s.frees[least(nr.rn + b.used - b.messaging_limit
                                                     - array_length(s.frees, 1),
                                                     array_length(s.frees, 1))::int]
                                       + interval '24 hours' END
                        FROM slots s WHERE s.portfolio = x.portfolio),
                     now() + interval '1 hour'),
                   now() + interval '1 second') END AS wait_until
    FROM capped x
    LEFT JOIN budget b ON b.portfolio = x.portfolio
    LEFT JOIN new_recipients nr ON nr.portfolio = x.portfolio AND nr.person = x.person),
 ranked AS (
  SELECT j.*,
         CASE WHEN j.verdict = 'send'
               AND count(*) FILTER (WHERE j.verdict = 'send')
                     OVER (PARTITION BY j.campaign_id ORDER BY j.ord) > j.lim
              THEN 'later' ELSE j.verdict END AS decision
    FROM judged j),
 decided AS MATERIALIZED (
  -- stop: the first row never looked at before that this claim leaves
  -- (the cursor stays below it)
  SELECT r.*,
         min(r.id) FILTER (WHERE r.fresh AND r.decision IN ('busy', 'later'))
           OVER (PARTITION BY r.campaign_id) AS stop
    FROM ranked r),
 claimed AS (
  UPDATE wasend.send_queue q
     SET status = CASE d.decision WHEN 'send' THEN 'sending'
                                  WHEN 'suppressed' THEN 'failed'
                                  WHEN 'uncertain' THEN 'failed' ELSE q.status END,
         attempts = q.attempts + CASE WHEN d.decision = 'send' THEN 1 ELSE 0 END,
         claimed_at = CASE WHEN d.decision = 'send' THEN now() ELSE q.claimed_at END,
         claimed_by = CASE WHEN d.decision = 'send' THEN $3::bigint END,
         failed_at = CASE WHEN d.decision IN ('suppressed', 'uncertain') THEN now() END,
         last_error_class = CASE WHEN d.decision = 'suppressed' THEN 'suppressed'
                                 WHEN d.decision = 'uncertain' THEN 'uncertain'
                                 ELSE q.last_error_class END,
         last_error = CASE WHEN d.decision = 'suppressed'
                           THEN 'recipient is suppressed (see wasend.suppressions)'
                           WHEN d.decision = 'uncertain' AND q.last_error_class IS DISTINCT FROM 'uncertain'
                           THEN 'outcome unknown (' || coalesce(q.last_error, q.last_error_class, 'no answer')
                                || '): no status settled it in wasend.uncertain_retry_delay'
                           ELSE q.last_error END,
         waiting_for = CASE WHEN d.decision IN ('frequency_cap', 'messaging_limit', 'send_window')
                            THEN d.decision END,
         next_attempt_at = CASE WHEN d.decision IN ('frequency_cap', 'messaging_limit', 'send_window')
                                THEN d.wait_until
                                ELSE q.next_attempt_at END
    FROM decided d
   WHERE q.ctid = ANY (ARRAY(SELECT ctid FROM decided WHERE decision NOT IN ('busy', 'later')))
     AND d.id = q.id
  RETURNING q.id, q.campaign_id, d.decision, q.priority,
    CASE WHEN d.decision = 'send' THEN
     ((coalesce(q.payload, (SELECT c.message FROM wasend.campaigns c
                             WHERE c.id = q.campaign_id)) - 'to' - 'recipient')
      || jsonb_build_object(
        'messaging_product', 'whatsapp', 'recipient_type', 'individual',
        -- a BSUID goes in Meta's "recipient" field (only one of the two:
        -- "to" would win)
        CASE WHEN strpos(q.recipient, '.') > 0 THEN 'recipient' ELSE 'to' END, q.recipient,
        'biz_opaque_callback_data', 'wasend:' || q.id))::text END AS body,
    CASE WHEN d.fresh AND (d.stop IS NULL OR d.id < d.stop) THEN d.id END AS advance),
 windows AS (
  -- a person the window knows keeps the name it knows them by
  INSERT INTO wasend.recipient_window AS r (portfolio, recipient, last_at)
  SELECT DISTINCT d.portfolio, coalesce(d.window_name, d.person), now()
    FROM decided d
   WHERE d.decision = 'send' AND d.messaging_limit IS NOT NULL AND NOT d.inbound
  ON CONFLICT (portfolio, recipient) DO UPDATE SET last_at = excluded.last_at),
 sample_spent AS (
  -- pacing 'sample': count the sample down; once it is out, hold back
  UPDATE wasend.campaigns c
     SET sample_left = CASE WHEN c.sample_left - x.n > 0 THEN c.sample_left - x.n END,
         paced_until = CASE WHEN c.sample_left - x.n <= 0 THEN now() + c.pacing_hold
                            ELSE c.paced_until END
    FROM (SELECT d.campaign_id, count(*) AS n FROM decided d
           WHERE d.decision = 'send' GROUP BY 1) x
   WHERE c.id = x.campaign_id AND c.sample_left IS NOT NULL)
SELECT u.id, u.campaign_id, u.body, u.priority, u.advance FROM claimed u

-- name: record
-- Write the outcomes of a batch and apply wasend.error_policy, all in one
-- statement:
--
--  - a 200 with a message id is sent, its wamid stored; if the answer's
--    message_status is held_for_quality_assessment, the row is 'held'
--    instead (its status webhook settles it), it goes to
--    wasend.held_messages, and a campaign whose pacing is not 'off' holds
--    back for pacing_hold (see _apply_statuses for the early release);
--  - otherwise the error's key (the Graph API error.code, or the transport
--    class the sender gives) picks a policy row ('*' when none matches):
--    retry puts the row back to ready after
--    backoff * factor^(attempt-1), at most 24 hours (or the backoff, if
--    longer), times a random factor in [1 - jitter, 1 + jitter], and
--    fails it once wasend.max_attempts ($7) is reached, or at once if the
--    policy says retry_once and the previous attempt had the same code
--    (131049: one more try after 24 h); fail fails it;
--    pause_number and pause_campaign put the row back to ready (the attempt
--    does not count) and pause the number (for pause_for, or until
--    resumed) or the campaign, with the reason stored;
--  - a request that was written and got no usable answer (timeout,
--    reset, transport, a 5xx without an error body, or bad_response: an
--    answer without JSON or message id, a 200 among them; the sender
--    gives a request never written the class connect) may have reached
--    Meta: its row is marked uncertain, whatever the policy does with it
--    (bad_response fails it: a status can still settle it as sent).
--    Put back to ready (retry, or a pause), it waits
--    wasend.uncertain_retry_delay (at least) for the status webhook that
--    names it (biz_opaque_callback_data), which settles it as sent
--    (wasend._apply_statuses); the claim that finds it due retries it,
--    or fails it with wasend.on_uncertain = fail (waiting_for
--    'uncertain', as for a row a stopped sender left in flight); with no
--    delay and on_uncertain = fail it fails at once, as uncertain.  A
--    status of that request arriving after a retry was sent counts the
--    duplicate.  A number or
--    campaign row a user holds locked is not waited for: the pause is
--    skipped, and the next answer with that error pauses it.  A campaign
--    paused for a paused or disabled template (132015, 132016) is marked
--    so (pause_rule 'template'): the template's APPROVED webhook resumes it;
--  - a failure with 131050 suppresses the recipient for marketing
--    campaigns, 131026 for every campaign.
--
-- Returns one row per (campaign, number) of the batch: rows sent (or
-- held), rows failed, answers asking to slow down, how many numbers
-- and campaigns the batch paused or made hold back, and its error answers
-- by key (two arrays: the keys, and how many answers had each).
--
-- An error.code that is not a plain integer of at most 9 digits is no
-- code at all (the answer is then a bad_response), so no answer can make
-- the int cast fail.  The backoff is computed through exp/ln with its
-- exponent bounded, so no max_attempts or backoff_factor can overflow it.
-- An answer the jsonb cast refuses (e.g. \u0000) fails the whole
-- statement; the sender then records the batch row by row, and such a row
-- with record_poison (see db_cycle.c).
--
-- Rows are matched by id and claimed_by = this sender's token ($8), which
-- is set only while a row is 'sending' for this sender: the primary key
-- finds them, whatever the number of rows other senders hold.  Each row is
-- looked up once, by the UPDATE itself: the outcome needs the row's
-- attempts, so it is computed in the SET list (the same CASE in status,
-- failed_at, next_attempt_at, waiting_for and attempts) rather than in a
-- join before.
-- answers and policed are materialized: each answer is parsed once
-- (answers; inlined, the cast ran once per reference to j: json_lex was
-- 11% of a sender's instructions under make profile), and searched, and
-- its policy looked up, once per row (policed), not once per reference in
-- the SET list nor in a
-- nested loop under the row lookups (measured: 110 us per row recorded
-- otherwise, against 45).  The token is compared as a column of the batch
-- (owner), not as a constant: claimed_by is NULL in almost every row
-- ANALYZE sees, so "claimed_by = $8" alone is estimated at one row and the
-- planner would scan the table for it and join the batch in a nested loop
-- (500 x 500 comparisons, measured 123 ms for a batch against 36 ms).
WITH answers AS MATERIALIZED (
  SELECT u.id, u.http, u.err, u.at, u.cls, u.body::jsonb AS j, $8::bigint AS owner
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[],
                $5::timestamptz[], $6::text[]) AS u(id, http, body, err, at, cls)),
 parsed AS (
  SELECT r.id, r.owner, r.at, r.http, r.cls, r.j #>> '{messages,0,id}' AS wamid,
         CASE WHEN jsonb_typeof(r.j #> '{error,code}') = 'number'
               AND (r.j #>> '{error,code}') ~ '^-?[0-9]{1,9}$'
              THEN (r.j #>> '{error,code}')::int END AS code,
         regexp_replace(
           coalesce(r.j #>> '{error,message}', r.err,
                    CASE WHEN r.http <> 200 THEN 'HTTP ' || r.http END,
                    'response without a message id'),
           'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g') AS msg,
         r.http = 200 AND r.j #>> '{messages,0,id}' IS NOT NULL AS ok,
         r.j #>> '{messages,0,message_status}' = 'held_for_quality_assessment' AS held
    FROM answers r),
 keyed AS (
  SELECT v.*,
         CASE WHEN v.ok THEN NULL WHEN v.code IS NOT NULL THEN 'api'
              ELSE coalesce(v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'
                                        ELSE 'bad_response' END) END AS class,
         coalesce(v.code::text, v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'
                                            ELSE 'bad_response' END) AS key
    FROM parsed v),
 policed AS MATERIALIZED (
  SELECT k.*,
         CASE WHEN k.ok THEN 'sent' ELSE coalesce(ep.action, dp.action, 'fail') END AS action,
         coalesce(ep.backoff, dp.backoff, interval '2 seconds') AS backoff,
         coalesce(ep.backoff_factor, dp.backoff_factor, 2) AS factor,
         CASE WHEN ep.code IS NOT NULL THEN ep.pause_for ELSE dp.pause_for END AS pause_for,
         coalesce(ep.slow_down, dp.slow_down, false) AS slow_down,
         coalesce(ep.jitter, dp.jitter, 0.2) AS jitter,
         coalesce(ep.retry_once, dp.retry_once, false) AS retry_once,
         x.unsure,
         CASE WHEN x.unsure AND u.hold > interval '0' THEN k.at + u.hold END AS hold_until,
         x.unsure AND u.hold <= interval '0' AND u.fail_unsure AS fail_unsure
    FROM keyed k
    CROSS JOIN LATERAL (
      SELECT NOT k.ok AND k.key IN ('timeout', 'reset', 'transport', 'http_5xx', 'bad_response') AS unsure) x
    CROSS JOIN (SELECT coalesce(nullif(current_setting('wasend.uncertain_retry_delay', true), '')::interval,
                                interval '60 seconds') AS hold,
                       coalesce(current_setting('wasend.on_uncertain', true) = 'fail', false) AS fail_unsure) u
    LEFT JOIN wasend.error_policy ep ON ep.code = k.key AND NOT k.ok
    LEFT JOIN wasend.error_policy dp ON dp.code = '*' AND ep.code IS NULL AND NOT k.ok),
 recorded AS (
  UPDATE wasend.send_queue q
     SET status = CASE WHEN w.ok AND coalesce(w.held, false) THEN 'held'
                       WHEN w.ok THEN 'sent'
                       WHEN w.fail_unsure THEN 'failed'
                       WHEN w.action = 'retry' AND q.attempts < $7
                       AND NOT (w.retry_once AND q.last_error_code IS NOT DISTINCT FROM w.code) THEN 'ready'
                       WHEN w.action IN ('pause_number', 'pause_campaign') THEN 'ready'
                       ELSE 'failed' END,
         wa_message_id = w.wamid,
         last_error_code = CASE WHEN w.ok THEN NULL ELSE w.code END,
         last_error_class = CASE WHEN w.fail_unsure THEN 'uncertain' ELSE w.class END,
         last_error = CASE WHEN w.ok THEN NULL
                           WHEN w.fail_unsure THEN 'outcome unknown (' || w.msg || '): failed, not sent again'
                           ELSE w.msg END,
         sent_at = CASE WHEN w.ok AND NOT coalesce(w.held, false) THEN w.at END,
         failed_at = CASE WHEN w.ok THEN NULL
                          WHEN w.fail_unsure THEN w.at
                          WHEN (w.action = 'retry' AND q.attempts < $7
                                AND NOT (w.retry_once AND q.last_error_code IS NOT DISTINCT FROM w.code))
                               OR w.action IN ('pause_number', 'pause_campaign')
                          THEN NULL ELSE w.at END,
         next_attempt_at = CASE WHEN w.ok OR w.fail_unsure THEN q.next_attempt_at
                                WHEN w.action = 'retry' AND q.attempts < $7
                                AND NOT (w.retry_once AND q.last_error_code IS NOT DISTINCT FROM w.code)
              THEN greatest(w.hold_until,
                            w.at + make_interval(secs => least(
                              extract(epoch FROM w.backoff)::float8
                              * exp(least(ln(w.factor) * greatest(q.attempts - 1, 0), 20)),
                              greatest(86400, extract(epoch FROM w.backoff)::float8))
                            * (1 - w.jitter + 2 * w.jitter * random())))
                                WHEN w.action IN ('pause_number', 'pause_campaign')
              THEN greatest(q.next_attempt_at, w.hold_until)
              ELSE q.next_attempt_at END,
         -- (hold_until is set only for an uncertain answer that is not to fail)
         waiting_for = CASE WHEN w.hold_until IS NOT NULL
                             AND ((w.action = 'retry' AND q.attempts < $7
                                   AND NOT (w.retry_once AND q.last_error_code IS NOT DISTINCT FROM w.code))
                                  OR w.action IN ('pause_number', 'pause_campaign'))
                            THEN 'uncertain' END,
         uncertain = q.uncertain OR w.unsure,
         attempts = CASE WHEN w.action IN ('pause_number', 'pause_campaign') AND NOT w.fail_unsure
                         THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,
         claimed_by = NULL
    FROM policed w
   WHERE q.id = w.id AND q.claimed_by = w.owner
  RETURNING q.id, q.recipient, q.campaign_id, q.status AS outcome, w.ok, w.slow_down,
            w.action, w.key, w.msg, w.at, w.pause_for, q.claimed_at),
 -- A number is paused by the answer to its latest request, and only if
 -- that request was claimed after the number's row last changed: a 190
 -- to a request sent with the old token must not pause again a number a
 -- person has just resumed with a new one (its row goes back to ready
 -- and is sent again, the attempt not counted).
 number_pauses AS (
  SELECT DISTINCT ON (c.number_id) c.number_id, u.key, u.msg, u.at, u.pause_for, u.claimed_at
    FROM recorded u JOIN wasend.campaigns c ON c.id = u.campaign_id
   WHERE u.action = 'pause_number' AND NOT u.ok
   ORDER BY c.number_id, u.claimed_at DESC, u.at),
 paused_numbers AS (
  UPDATE wasend.whatsapp_numbers n
     SET status = 'paused', updated_at = now(),
         pause_reason = format('error %s: %s', x.key, x.msg),
         paused_until = x.at + x.pause_for
    FROM number_pauses x
   WHERE n.id = x.number_id AND n.status = 'active' AND n.updated_at <= x.claimed_at
     AND n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                   WHERE l.id IN (SELECT number_id FROM number_pauses)
                     FOR UPDATE SKIP LOCKED)
  RETURNING n.id),
 campaign_pauses AS (
  SELECT DISTINCT ON (campaign_id) campaign_id, key, msg
    FROM recorded WHERE action = 'pause_campaign' AND NOT ok
   ORDER BY campaign_id, at),
 paused_campaigns AS (
  UPDATE wasend.campaigns c
     SET status = 'paused', paused_at = now(), updated_at = now(),
         pause_reason = format('error %s: %s', x.key, x.msg),
         pause_rule = CASE WHEN x.key IN ('132015', '132016') THEN 'template' END
    FROM campaign_pauses x
   WHERE c.id = x.campaign_id AND c.status = 'running'
     AND c.id IN (SELECT l.id FROM wasend.campaigns l
                   WHERE l.id IN (SELECT campaign_id FROM campaign_pauses)
                     FOR UPDATE SKIP LOCKED)
  RETURNING c.id),
 held AS (
  INSERT INTO wasend.held_messages (row_id, campaign_id, held_at)
  SELECT u.id, u.campaign_id, u.at FROM recorded u WHERE u.outcome = 'held'
  ON CONFLICT (row_id) DO NOTHING),
 paced AS (
  -- pacing: Meta holds messages of the campaign; start no new rows until
  -- they are settled, at most pacing_hold after the latest hold
  UPDATE wasend.campaigns c
     SET paced_until = greatest(c.paced_until, x.at + c.pacing_hold)
    FROM (SELECT campaign_id, max(at) AS at FROM recorded
           WHERE outcome = 'held' GROUP BY 1) x
   WHERE c.id = x.campaign_id AND c.pacing <> 'off'
     AND c.id IN (SELECT l.id FROM wasend.campaigns l
                   WHERE l.id IN (SELECT campaign_id FROM recorded WHERE outcome = 'held')
                     FOR UPDATE SKIP LOCKED)
  RETURNING c.id),
 suppressed AS (
  INSERT INTO wasend.suppressions AS x (recipient, reason, scope)
  SELECT DISTINCT ON (u.recipient) u.recipient, format('message failed with %s', u.key),
         CASE WHEN u.key = '131050' THEN 'marketing' ELSE 'all' END
    FROM recorded u
   WHERE u.outcome = 'failed' AND u.key IN ('131050', '131026')
   ORDER BY u.recipient, u.key
  ON CONFLICT (recipient) DO UPDATE SET scope = 'all', reason = excluded.reason
   WHERE excluded.scope = 'all' AND x.scope <> 'all'),
 per_campaign AS (
  SELECT u.campaign_id,
         count(*) FILTER (WHERE u.outcome IN ('sent', 'held')) AS sent,
         count(*) FILTER (WHERE u.outcome = 'failed') AS failed,
         count(*) FILTER (WHERE u.slow_down AND NOT u.ok) AS slow
    FROM recorded u GROUP BY 1)
SELECT g.campaign_id, c.number_id, g.sent, g.failed, g.slow,
       (SELECT count(*) FROM paused_numbers) + (SELECT count(*) FROM paused_campaigns)
         + (SELECT count(*) FROM paced),
       -- the error answers by key: keys and their counts (for the metrics);
       -- NULL when there are none
       e.keys, e.counts
  FROM per_campaign g JOIN wasend.campaigns c ON c.id = g.campaign_id
  CROSS JOIN LATERAL (
    SELECT array_agg(k.key) AS keys, array_agg(k.n) AS counts
      FROM (SELECT u.key, count(*) AS n FROM recorded u
             WHERE u.campaign_id = g.campaign_id AND NOT u.ok GROUP BY 1) k) e

-- name: record_poison
-- The last resort for one answer that the record statement cannot store
-- (it failed even alone): the row fails as bad_response with the error,
-- so that no answer can keep a row, or the sender, from moving on.
-- $1 row id, $2 claim token, $3 time of the answer, $4 the error text.
UPDATE wasend.send_queue q
   SET status = 'failed', failed_at = $3, wa_message_id = NULL,
       last_error_code = NULL, last_error_class = 'bad_response',
       last_error = regexp_replace('answer could not be recorded: ' || $4,
                                   'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g'),
       claimed_by = NULL
 WHERE q.id = $1 AND q.claimed_by = $2

-- name: release
-- Give claimed, unsent rows back, as if never claimed: to the queue when
-- their campaign was paused, to 'cancelled' when it was cancelled (the
-- cancel only reaches rows that were ready).
UPDATE wasend.send_queue q
   SET status = CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE 'ready' END,
       attempts = greatest(q.attempts - 1, 0),
       claimed_by = NULL, claimed_at = NULL
  FROM wasend.campaigns c
 WHERE q.id = ANY ($1::bigint[]) AND q.claimed_by = $2
   AND c.id = q.campaign_id

-- name: lock_done
-- Completing a campaign takes its row lock first, in its own statement:
-- wasend_enqueue() and the send_queue insert trigger hold a share lock on
-- the campaign while they add rows, so once we hold the lock, the next
-- statement's snapshot sees every row that will ever be added.  Campaigns
-- someone is adding to (or holds locked) are skipped, never waited for,
-- and tried again on a later pass: only the campaigns returned here may be
-- completed.
SELECT id FROM wasend.campaigns
 WHERE id = ANY ($1::bigint[]) AND status = 'running'
 ORDER BY id FOR UPDATE SKIP LOCKED

-- name: complete
-- Complete those of the campaigns lock_done locked that have nothing left
-- (never a transactional lane: wasend_send keeps adding to it).
UPDATE wasend.campaigns c
   SET status = 'completed', completed_at = now(), updated_at = now()
 WHERE c.id = ANY ($1::bigint[]) AND c.status = 'running' AND c.kind = 'campaign'
   AND NOT EXISTS (SELECT 1 FROM wasend.send_queue q
                    WHERE q.campaign_id = c.id
                      AND q.sent_at IS NULL AND q.failed_at IS NULL
                      AND q.status IN ('ready', 'sending'))

-- name: pending
-- Statuses that arrived before their send's commit wait in
-- wasend.pending_statuses; expire old ones and check the unsettled ones,
-- whose status transaction may have missed a record running at the same
-- time (see wasend._apply_pending_statuses()).  Settled ones cost nothing.
SELECT wasend._apply_pending_statuses()
 WHERE EXISTS (SELECT 1 FROM wasend.pending_statuses)

-- name: pending_recorded
-- After a record: apply the waiting statuses of the wamids it stored ($1
-- the batch's row ids), looked up by send_queue's and pending_statuses'
-- primary keys, and those that name a row of the batch by its
-- biz_opaque_callback_data (pending_statuses_row_idx).  A status of an
-- earlier request of the row (one that timed out or lost its connection,
-- or that libcurl itself sent again on a new connection) may have come
-- while this request was in flight: a row in flight takes none, so it
-- waited; now it settles an uncertain row, or counts a duplicate of a
-- sent one (wasend._apply_row_statuses).  Nothing is called when none
-- waits.  The batch's rows are read in a MATERIALIZED CTE by id alone:
-- with "wa_message_id IS NOT NULL" beside the id, statistics taken before
-- the sends (no row had a wamid) made the planner read every row sent so
-- far through send_queue_wamid_idx (whose predicate that is), testing
-- each against the batch's ids, for every record (a NULL wamid matches no
-- pending status anyway).
WITH batch AS MATERIALIZED (
    SELECT q.id, q.wa_message_id FROM wasend.send_queue q
     WHERE q.id = ANY ($1::bigint[])),
 by_wamid AS (
    SELECT array_agg(b.wa_message_id) AS wamids FROM batch b
     WHERE EXISTS (SELECT 1 FROM wasend.pending_statuses p
                    WHERE p.wa_message_id = b.wa_message_id)),
 by_row AS (
    SELECT array_agg(DISTINCT p.row_id) AS ids FROM wasend.pending_statuses p
     WHERE p.row_id = ANY ($1::bigint[]))
SELECT CASE WHEN w.wamids IS NOT NULL THEN wasend._apply_pending_statuses(w.wamids) END,
       CASE WHEN r.ids IS NOT NULL THEN wasend._apply_row_statuses(r.ids) END
  FROM by_wamid w, by_row r
 WHERE w.wamids IS NOT NULL OR r.ids IS NOT NULL

-- name: unsettle_recorded
-- When pending_recorded failed (a lock, a cancel): the statuses it would
-- have applied ($1 the batch's row ids) are marked unsettled, so that the
-- senders' refresh (pending), which reads only unsettled ones, checks and
-- applies them; a settled status is otherwise applied only by a record of
-- its wamid or its row.  The batch's wamids are read by id alone, as in
-- pending_recorded.
WITH batch AS MATERIALIZED (
    SELECT q.wa_message_id FROM wasend.send_queue q
     WHERE q.id = ANY ($1::bigint[]))
UPDATE wasend.pending_statuses p
   SET settled = false, checked_xmax = NULL
 WHERE p.settled
   AND (p.row_id = ANY ($1::bigint[])
        OR p.wa_message_id IN (SELECT b.wa_message_id FROM batch b))

-- name: breaker
-- The circuit breaker pauses a campaign, saying why; not if a user holds
-- the campaign locked (the breaker trips again on the next result).
UPDATE wasend.campaigns c
   SET status = 'paused', paused_at = now(), updated_at = now(),
       pause_reason = format('circuit breaker: %s of the last %s results failed (threshold %s%%)',
                             $2, $3, round(c.error_threshold * 100, 2))
 WHERE c.id = $1 AND c.status = 'running'
   AND c.id IN (SELECT l.id FROM wasend.campaigns l WHERE l.id = $1
                  FOR UPDATE SKIP LOCKED)

-- name: recover
-- Settle rows left 'sending' by senders that are gone.  Every sender the
-- launcher started and has not seen exit holds a claim token ($1); a row
-- whose claimed_by is none of them belongs to no running sender.  Whether
-- its request went out is unknown, so the row is marked uncertain and, per
-- wasend.on_uncertain ($2), queued again or failed; it is failed anyway
-- once it has had wasend.max_attempts ($3) attempts, so that an answer
-- that kills senders cannot loop forever.  The launcher assigns a token
-- before it starts a sender, so a sender still starting is never taken
-- for a dead one (no clock is involved).  The rows are found through
-- send_queue_ready_idx (no index names status: see the claim).
--
-- Meta reports a message that reached it in a status webhook that names
-- the row (biz_opaque_callback_data), which settles the row as sent
-- (wasend._apply_statuses); wasend.uncertain_retry_delay ($4 seconds)
-- gives it that time: the row waits, ready, until then (waiting_for
-- 'uncertain'), and only a row no status settled by then is retried, or,
-- when it is to fail, failed by the claim that finds it due (see the
-- claim's 'uncertain' decision).  With no delay it is queued or failed at
-- once.  Returns the count and the ids, whose waiting statuses are then
-- applied (row_statuses).
WITH settled AS (
  UPDATE wasend.send_queue q
     SET status = CASE WHEN ($2 OR q.attempts >= $3) AND $4 <= 0 THEN 'failed' ELSE 'ready' END,
         uncertain = true,
         last_error_class = 'uncertain',
         last_error = 'outcome unknown: the sender stopped while the message was claimed or in flight',
         failed_at = CASE WHEN ($2 OR q.attempts >= $3) AND $4 <= 0 THEN now() END,
         next_attempt_at = now() + make_interval(secs => greatest($4, 0)),
         waiting_for = CASE WHEN $4 > 0 THEN 'uncertain' END,
         claimed_by = NULL
   WHERE q.sent_at IS NULL AND q.failed_at IS NULL
     AND q.status = 'sending'
     AND (q.claimed_by IS NULL OR NOT (q.claimed_by = ANY ($1::bigint[])))
  RETURNING q.id)
SELECT count(*), array_agg(id) FROM settled

-- name: row_statuses
-- After recover, in its transaction: the statuses that waited for the
-- rows it marked uncertain ($1) settle them (wasend._apply_row_statuses).
-- After release, the same for the rows given back: a status of an
-- earlier request of a row that came while the row was claimed waited.
SELECT wasend._apply_row_statuses($1::bigint[])
 WHERE EXISTS (SELECT 1 FROM wasend.pending_statuses p WHERE p.row_id = ANY ($1::bigint[]))

-- name: token_refused
-- A number whose token is its file (access_token NULL) and whose file
-- cannot be used ($1 the number, $2 why, by path): paused with that
-- reason until a person resumes it, as after a 190.  SKIP LOCKED: a user
-- holding the row is not waited for (the next refresh tries again; until
-- then no sender sends for the number).  Returns the phone number id when
-- this statement paused it.
UPDATE wasend.whatsapp_numbers n
   SET status = 'paused', pause_reason = $2, paused_until = NULL, pause_rule = NULL,
       updated_at = now()
 WHERE n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                 WHERE l.id = $1 AND l.status = 'active' AND l.access_token IS NULL
                   FOR UPDATE SKIP LOCKED)
RETURNING n.phone_number_id

-- name: limits_due
-- Numbers whose messaging limit, quality and health are due to be read
-- (README, "Meta's account limits"): taken by one sender (SKIP LOCKED) and
-- marked as being read, due again in $1 seconds in case this sender stops
-- before the answer is written.  Returns what the GET needs.
UPDATE wasend.whatsapp_numbers n
   SET limits_due_at = now() + make_interval(secs => $1)
 WHERE n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                 WHERE l.limits_due_at <= now()
                 ORDER BY l.limits_due_at LIMIT 16
                   FOR UPDATE SKIP LOCKED)
RETURNING n.id, n.phone_number_id, n.access_token

-- name: limits_apply
-- Store an answer of the Graph API's phone number GET ($1 number, $2 HTTP
-- status, $3 body) and apply its rules; raises an error for an answer it
-- cannot use (see wasend._apply_number_limits).
SELECT wasend._apply_number_limits($1, $2, $3)

-- name: limits_failed
-- The answer could not be used ($2 says why): keep the old values, read
-- again in a minute.
SELECT wasend._number_limits_failed($1, $2)

-- name: limits_all_due
-- The launcher starts the senders: every number is read again now.
UPDATE wasend.whatsapp_numbers n
   SET limits_due_at = '-infinity'
 WHERE n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                 WHERE l.limits_due_at > '-infinity'
                   FOR UPDATE SKIP LOCKED)

-- name: number_metrics
-- For the metrics endpoint (the supervisor, with campaign_metrics): each
-- number and whether it is paused, at most $1.
SELECT n.phone_number_id, n.status = 'paused'
  FROM wasend.whatsapp_numbers n
 ORDER BY n.id LIMIT $1

-- name: campaign_metrics
-- For the metrics endpoint (the supervisor, every few seconds when
-- wasend.metrics_port is set): rows by status of the campaigns that are
-- not finished, or finished within the hour, newest first, at most $1.
-- A campaign's rows are read through send_queue_campaign_recipient_key
-- (campaign rows have no priority), a transactional lane's rows only for
-- a lane: so the refresh costs the rows of these campaigns, not a scan of
-- the whole history.
SELECT c.id, left(c.name, 63), c.status,
       count(q.id) FILTER (WHERE q.status = 'ready'),
       count(q.id) FILTER (WHERE q.status = 'sending'),
       count(q.id) FILTER (WHERE q.status = 'held'),
       count(q.id) FILTER (WHERE q.status = 'sent'),
       count(q.id) FILTER (WHERE q.status = 'delivered'),
       count(q.id) FILTER (WHERE q.status = 'read'),
       count(q.id) FILTER (WHERE q.status = 'failed'),
       count(q.id) FILTER (WHERE q.status = 'cancelled')
  FROM (SELECT x.id, x.name, x.status, x.kind FROM wasend.campaigns x
         WHERE x.status IN ('scheduled', 'running', 'paused')
            OR x.updated_at > now() - interval '1 hour'
         ORDER BY x.id DESC LIMIT $1) c
  LEFT JOIN LATERAL (
        SELECT y.id, y.status FROM wasend.send_queue y
         WHERE y.campaign_id = c.id AND y.priority IS NULL
        UNION ALL
        SELECT y.id, y.status FROM wasend.send_queue y
         WHERE y.campaign_id = c.id AND y.priority IS NOT NULL AND c.kind = 'transactional') q ON true
 GROUP BY c.id, c.name, c.status
 ORDER BY c.id DESC

-- name: prune_batch
-- Retention (the supervisor, src/supervisor.c): one batch of the rows of
-- campaigns finished more than $1 minutes ago (wasend.retention), at most
-- $2 rows with an id above $3; see wasend._prune_batch.  Returns the rows
-- pruned and the last id.
SELECT b.pruned, b.last_id
  FROM wasend._prune_batch(make_interval(mins => $1), $2, $3) b

-- name: expire_caches
-- Retention: at most $2 expired rows of each cache (recipient_window,
-- inbound_messages older than $1 minutes, pending_statuses); see
-- wasend._expire_caches.
SELECT wasend._expire_caches(make_interval(mins => $1), $2)
