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
-- Running campaigns whose number may send, with what sending needs.
SELECT c.id, n.id, n.phone_number_id, n.access_token, n.max_send_rate_per_sec,
       c.error_threshold::float8, c.error_window
  FROM wasend.campaigns c
  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
 WHERE c.status = 'running' AND n.status = 'active'

-- name: claim
-- Claim up to lim ready rows of each campaign, oldest first, skipping rows
-- another sender holds, and build each request body: the row's payload or
-- the campaign's message, plus the envelope fields.  Each campaign's rows
-- come from send_queue_ready_idx in id order (LIMIT stops the scan; the
-- sent_at / failed_at conditions are that index's predicate).  Setting
-- status = 'sending' touches no indexed column, so it is a HOT update when
-- the page has room (see the fillfactor in the extension script).  The
-- UPDATE finds the picked rows by ctid (a TID scan): they are locked, so
-- their ctid cannot change before it runs, and it saves a primary-key
-- descent and heap visit per row (measured with callgrind: see
-- bench/profile.sh).  A campaign paused meanwhile is caught by the
-- sender's next refresh, which releases rows.
--
-- after_id ($4) is a keyset cursor: the highest id this sender claimed last
-- time for the campaign.  Without it each claim would walk again over the
-- index entries of every row claimed since the last vacuum (they stay in
-- the index until then); the sender resets it at every refresh, so rows
-- put back behind it (retries, released rows) are found within a second.
-- $3 is the sender's claim token (random per sender start, see launcher.c).
--
-- A claim takes nothing of a campaign that is not running, or whose number
-- is not active, as its own snapshot sees them: a pause that committed
-- before the claim began stops it even if the sender has not refreshed
-- its running set yet (one row per campaign asked for, not per row).
WITH want AS (
  SELECT w.* FROM unnest($1::bigint[], $2::int[], $4::bigint[])
                  AS w(campaign_id, lim, after_id)
   WHERE EXISTS (SELECT 1 FROM wasend.campaigns c
                   JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
                  WHERE c.id = w.campaign_id AND c.status = 'running'
                    AND n.status = 'active')),
 picked AS (
  SELECT p.ctid FROM want w CROSS JOIN LATERAL (
    SELECT q.ctid FROM wasend.send_queue q
     WHERE q.campaign_id = w.campaign_id AND q.id > w.after_id
       AND q.sent_at IS NULL AND q.failed_at IS NULL
       AND q.status = 'ready' AND q.next_attempt_at <= now()
     ORDER BY q.id LIMIT w.lim
       FOR UPDATE SKIP LOCKED) p)
 UPDATE wasend.send_queue q
    SET status = 'sending', attempts = q.attempts + 1,
        claimed_at = now(), claimed_by = $3
  WHERE q.ctid = ANY (ARRAY(SELECT ctid FROM picked))
 RETURNING q.id, q.campaign_id,
   (coalesce(q.payload, (SELECT c.message FROM wasend.campaigns c
                          WHERE c.id = q.campaign_id))
    || jsonb_build_object(
      'messaging_product', 'whatsapp', 'recipient_type', 'individual',
      'to', q.recipient, 'biz_opaque_callback_data', 'wasend:' || q.id))::text

-- name: record
-- Write the outcomes of a batch and apply wasend.error_policy, all in one
-- statement:
--
--  - a 200 with a message id is sent, its wamid stored;
--  - otherwise the error's key (the Graph API error.code, or the transport
--    class the sender gives) picks a policy row ('*' when none matches):
--    retry puts the row back to ready after
--    backoff * factor^(attempt-1), at most 24 hours, with +-20% jitter,
--    and fails it once wasend.max_attempts ($7) is reached; fail fails it;
--    pause_number and pause_campaign put the row back to ready (the attempt
--    does not count) and pause the number (for pause_for, or until
--    resumed) or the campaign, with the reason stored.  A number or
--    campaign row a user holds locked is not waited for: the pause is
--    skipped, and the next answer with that error pauses it.
--
-- Returns one row per (campaign, number) of the batch: rows sent, rows
-- failed, answers asking to slow down, and how many numbers and campaigns
-- the batch paused.
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
-- failed_at, next_attempt_at and attempts) rather than in a join before.
-- r and w are materialized: each answer is parsed once (r; inlined, the
-- cast ran once per reference to j: json_lex was 11% of a sender's
-- instructions under make profile), and searched, and its policy looked
-- up, once per row (w), not once per reference in the SET list nor in a
-- nested loop under the row lookups (measured: 110 us per row recorded
-- otherwise, against 45).  The token is compared as a column of the batch
-- (owner), not as a constant: claimed_by is NULL in almost every row
-- ANALYZE sees, so "claimed_by = $8" alone is estimated at one row and the
-- planner would scan the table for it and join the batch in a nested loop
-- (500 x 500 comparisons, measured 123 ms for a batch against 36 ms).
WITH r AS MATERIALIZED (
  SELECT u.id, u.http, u.err, u.at, u.cls, u.body::jsonb AS j, $8::bigint AS owner
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[],
                $5::timestamptz[], $6::text[]) AS u(id, http, body, err, at, cls)),
 v AS (
  SELECT r.id, r.owner, r.at, r.http, r.cls, r.j #>> '{messages,0,id}' AS wamid,
         CASE WHEN jsonb_typeof(r.j #> '{error,code}') = 'number'
               AND (r.j #>> '{error,code}') ~ '^-?[0-9]{1,9}$'
              THEN (r.j #>> '{error,code}')::int END AS code,
         regexp_replace(
           coalesce(r.j #>> '{error,message}', r.err,
                    CASE WHEN r.http <> 200 THEN 'HTTP ' || r.http END,
                    'response without a message id'),
           'EA[A-Za-z0-9]{20,}', '[redacted token]', 'g') AS msg,
         r.http = 200 AND r.j #>> '{messages,0,id}' IS NOT NULL AS ok
    FROM r),
 k AS (
  SELECT v.*,
         CASE WHEN v.ok THEN NULL WHEN v.code IS NOT NULL THEN 'api'
              ELSE coalesce(v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'
                                        ELSE 'bad_response' END) END AS class,
         coalesce(v.code::text, v.cls, CASE WHEN v.http >= 500 THEN 'http_5xx'
                                            ELSE 'bad_response' END) AS key
    FROM v),
 w AS MATERIALIZED (
  SELECT k.*,
         CASE WHEN k.ok THEN 'sent' ELSE coalesce(ep.action, dp.action, 'fail') END AS action,
         coalesce(ep.backoff, dp.backoff, interval '2 seconds') AS backoff,
         coalesce(ep.backoff_factor, dp.backoff_factor, 2) AS factor,
         CASE WHEN ep.code IS NOT NULL THEN ep.pause_for ELSE dp.pause_for END AS pause_for,
         coalesce(ep.slow_down, dp.slow_down, false) AS slow_down
    FROM k
    LEFT JOIN wasend.error_policy ep ON ep.code = k.key AND NOT k.ok
    LEFT JOIN wasend.error_policy dp ON dp.code = '*' AND ep.code IS NULL AND NOT k.ok),
 upd AS (
  UPDATE wasend.send_queue q
     SET status = CASE WHEN w.ok THEN 'sent'
                       WHEN w.action = 'retry' AND q.attempts < $7 THEN 'ready'
                       WHEN w.action IN ('pause_number', 'pause_campaign') THEN 'ready'
                       ELSE 'failed' END,
         wa_message_id = w.wamid,
         last_error_code = CASE WHEN w.ok THEN NULL ELSE w.code END,
         last_error_class = w.class,
         last_error = CASE WHEN w.ok THEN NULL ELSE w.msg END,
         sent_at = CASE WHEN w.ok THEN w.at END,
         failed_at = CASE WHEN w.ok OR (w.action = 'retry' AND q.attempts < $7)
                               OR w.action IN ('pause_number', 'pause_campaign')
                          THEN NULL ELSE w.at END,
         next_attempt_at = CASE WHEN w.action = 'retry' AND q.attempts < $7
              THEN w.at + make_interval(secs => least(
                     extract(epoch FROM w.backoff)::float8
                     * exp(least(ln(w.factor) * greatest(q.attempts - 1, 0), 20)),
                     86400) * (0.8 + 0.4 * random()))
              ELSE q.next_attempt_at END,
         attempts = CASE WHEN w.action IN ('pause_number', 'pause_campaign')
                         THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,
         claimed_by = NULL
    FROM w
   WHERE q.id = w.id AND q.claimed_by = w.owner
  RETURNING q.campaign_id, q.status AS outcome, w.ok, w.slow_down,
            w.action, w.key, w.msg, w.at, w.pause_for),
 pnx AS (
  SELECT DISTINCT ON (c.number_id) c.number_id, u.key, u.msg, u.at, u.pause_for
    FROM upd u JOIN wasend.campaigns c ON c.id = u.campaign_id
   WHERE u.action = 'pause_number' AND NOT u.ok
   ORDER BY c.number_id, u.at),
 pn AS (
  UPDATE wasend.whatsapp_numbers n
     SET status = 'paused', updated_at = now(),
         pause_reason = format('error %s: %s', x.key, x.msg),
         paused_until = x.at + x.pause_for
    FROM pnx x
   WHERE n.id = x.number_id AND n.status = 'active'
     AND n.id IN (SELECT l.id FROM wasend.whatsapp_numbers l
                   WHERE l.id IN (SELECT number_id FROM pnx)
                     FOR UPDATE SKIP LOCKED)
  RETURNING n.id),
 pcx AS (
  SELECT DISTINCT ON (campaign_id) campaign_id, key, msg
    FROM upd WHERE action = 'pause_campaign' AND NOT ok
   ORDER BY campaign_id, at),
 pc AS (
  UPDATE wasend.campaigns c
     SET status = 'paused', paused_at = now(), updated_at = now(),
         pause_reason = format('error %s: %s', x.key, x.msg)
    FROM pcx x
   WHERE c.id = x.campaign_id AND c.status = 'running'
     AND c.id IN (SELECT l.id FROM wasend.campaigns l
                   WHERE l.id IN (SELECT campaign_id FROM pcx)
                     FOR UPDATE SKIP LOCKED)
  RETURNING c.id),
 g AS (
  SELECT u.campaign_id,
         count(*) FILTER (WHERE u.outcome = 'sent') AS sent,
         count(*) FILTER (WHERE u.outcome = 'failed') AS failed,
         count(*) FILTER (WHERE u.slow_down AND NOT u.ok) AS slow
    FROM upd u GROUP BY 1)
SELECT g.campaign_id, c.number_id, g.sent, g.failed, g.slow,
       (SELECT count(*) FROM pn) + (SELECT count(*) FROM pc)
  FROM g JOIN wasend.campaigns c ON c.id = g.campaign_id

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
-- Complete those of the campaigns lock_done locked that have nothing left.
UPDATE wasend.campaigns c
   SET status = 'completed', completed_at = now(), updated_at = now()
 WHERE c.id = ANY ($1::bigint[]) AND c.status = 'running'
   AND NOT EXISTS (SELECT 1 FROM wasend.send_queue q
                    WHERE q.campaign_id = c.id
                      AND q.sent_at IS NULL AND q.failed_at IS NULL
                      AND q.status IN ('ready', 'sending'))

-- name: pending
-- Statuses that arrived before their send's commit wait in
-- wasend.pending_statuses; apply those whose wamid is now known.
SELECT wasend._apply_pending_statuses()
 WHERE EXISTS (SELECT 1 FROM wasend.pending_statuses)

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
WITH settled AS (
  UPDATE wasend.send_queue q
     SET status = CASE WHEN $2 OR q.attempts >= $3 THEN 'failed' ELSE 'ready' END,
         uncertain = true,
         last_error_class = 'uncertain',
         last_error = 'outcome unknown: the sender stopped while the message was claimed or in flight',
         failed_at = CASE WHEN $2 OR q.attempts >= $3 THEN now() END,
         next_attempt_at = now(),
         claimed_by = NULL
   WHERE q.sent_at IS NULL AND q.failed_at IS NULL
     AND q.status = 'sending'
     AND (q.claimed_by IS NULL OR NOT (q.claimed_by = ANY ($1::bigint[])))
  RETURNING 1)
SELECT count(*) FROM settled
