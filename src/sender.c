/*-------------------------------------------------------------------------
 *
 * sender.c
 *		The sender background worker: the Sender that owns its state, and
 *		its event loop (collect answers, run the database cycle, start the
 *		sends the rate gate allows, sleep on latch, sockets and timers).
 *
 * A row is locked only inside the database cycle's transaction, never
 * while HTTP is in flight, and every deadline is on the monotonic clock.
 * See docs/internals/sender.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "campaign_cache.h"
#include "claim_plan.h"
#include "clock.h"
#include "db_cycle.h"
#include "graph_api.h"
#include "http_client.h"
#include "latency.h"
#include "limits_reader.h"
#include "metrics.h"
#include "number_queue.h"
#include "queue.h"
#include "rate_gate.h"
#include "sender.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"
#include "worker_session.h"

/* how often an idle sender looks for work without being woken, in us */
#define POLL_INTERVAL_US		(1000 * 1000)

/* a refresh rewinds every claim cursor at least every this many polls */
#define REWIND_EVERY			10

/* longest a result waits before it is written, in us */
#define FLUSH_DELAY_US			(20 * 1000)

/* longest a stopping sender waits for requests in flight, in us */
#define DRAIN_TIMEOUT_US		(5000 * 1000)

/* how often the sender frees the pooled requests it did not need */
#define POOL_TRIM_US			(10 * 1000 * 1000)

/*
 * a row refused with 130429 is sent again by the sender this many times;
 * the next refusal is recorded (the error policy's retry)
 */
#define MAX_REFUSALS			3

/*
 * Clear this sender's registration in its slot when the process exits.
 * The token stays: the supervisor clears it once it has seen the exit and
 * settled what the sender left behind.
 */
static void
sender_detach(int code, Datum arg)
{
	Sender	   *s = (Sender *) DatumGetPointer(arg);

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (s->slot->pid == MyProcPid)
	{
		s->slot->pid = 0;
		s->slot->latch = NULL;
	}
	LWLockRelease(wasend_state->lock);
	pg_atomic_write_u32(&s->slot->inflight, 0);
	pg_atomic_write_u32(&s->slot->held, 0);
	pg_atomic_write_u32(&s->slot->awaiting_durable, 0);
	pg_atomic_write_u64(&s->slot->awaiting_since, 0);
	wasend_http_shutdown();
}

/*
 * The HTTP client's on-wire callback: a send reached the wire, which the
 * rate gate counts (the first write settles its grant).
 */
static void
send_on_wire(int64 gate_key, int64 when, bool first)
{
	wasend_rate_gate_on_wire(gate_key, when, first);
}

/*
 * The HTTP client's unsent callback: a send that never reached the wire
 * no longer counts at the rate gate.
 */
static void
send_unsent(int64 gate_key)
{
	wasend_rate_gate_unsent(gate_key);
}

/*
 * The error_policy key of a request that got no usable HTTP answer.
 * written says whether curl began to write it (prereq_cb).  One it never
 * wrote never reached Meta: its connection could not be opened, or its
 * set-up timed out ("connect"), or its TLS handshake failed ("tls"); the
 * record retries it as before.  One it wrote may have reached Meta
 * whatever went wrong after, even a connection curl failed to open again
 * to send it once more: it is never "connect" or "tls" then, but one of
 * the keys the record marks uncertain (timeout, reset, transport).
 */
static const char *
transport_class(int curl_code, bool written)
{
	switch (curl_code)
	{
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
			return written ? "reset" : "tls";
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			return written ? "reset" : "connect";
		default:
			break;
	}
	if (!written)
		return "connect";
	switch (curl_code)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return "timeout";
		case CURLE_GOT_NOTHING:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			return "reset";
		default:
			return "transport";
	}
}

/*
 * Count a finished request's connection in the slot: it opened some, or
 * reused one.
 */
static void
note_connection(Sender *s, const HttpRequest *req)
{
	if (req->new_connections > 0)
		pg_atomic_fetch_add_u64(&s->slot->conns_opened, req->new_connections);
	else
		pg_atomic_fetch_add_u64(&s->slot->conns_reused, 1);
}

/*
 * A send's answer came back: its number has one request less in flight
 * and learns its latency, the metrics count the answer.
 */
static void
note_answer(NumberState *ns, const HttpRequest *req)
{
	int64		now = wasend_mono_us();

	wasend_metrics_note_answer(ns->phone_number_id, req->http_status, req->latency_us);
	wasend_number_answered(ns);

	/*
	 * Little's law takes the API's latency as curl saw it, not the time
	 * until this collection: that one grows with the sender's own load,
	 * and sizing in flight by it feeds back (more in flight, more work per
	 * event, longer turns, more in flight: a 1,000,000-message run ran up
	 * to the cap).  The turns of the loop are INFLIGHT_SLACK_SEC's
	 * business.
	 */
	wasend_number_note_latency(ns, req->latency_us, now);
	if (req->rttvar_us >= 0)
		wasend_rate_gate_note_rttvar(ns->gate_key, req->rttvar_us, now);
}

/*
 * A 130429 refused the message, so sending it again cannot duplicate it:
 * while the campaign may send, it goes again in the number's next slot,
 * still held, and the number slows down (rate_gate.c).  It is sent again
 * MAX_REFUSALS times; a further refusal is recorded, and
 * wasend.error_policy's row for 130429 applies from then on (its retry
 * with backoff, by default).  A sender shutting down records it at once:
 * it is known unsent, so it must not be left to the supervisor as
 * uncertain.  Returns whether the row was queued again.
 */
static bool
requeue_refused(NumberState *ns, const HttpRequest *req)
{
	if (ns == NULL || !ns->active || ShutdownRequestPending ||
		req->resp_too_big || req->refusals >= MAX_REFUSALS ||
		!wasend_graph_throughput_refused(req->http_status, req->resp) ||
		!wasend_campaign_sends(req->campaign_id))
		return false;
	wasend_rate_gate_slow_down(ns->gate_key, wasend_mono_us());
	wasend_metrics_note_error(ns->phone_number_id, "130429", 1);
	wasend_number_requeue(ns, req->row_id, req->campaign_id, req->priority,
						  req->refusals + 1, req->body, req->claim_lsn);
	return true;
}

/*
 * Put a send's outcome into the result batch, and its figures into the
 * slot.  An error answer may pause the number or campaign: it is recorded
 * at once, with the token its request carried redacted.
 */
static void
add_result(Sender *s, const HttpRequest *req, const char *err, const char *cls)
{
	const char *body = req->curl_code == 0 ? req->resp : NULL;
	const char *redacted = body;

	if (err != NULL || req->http_status != 200)
	{
		s->results_have_error = true;
		wasend_campaign_note_error(req->campaign_id);
		redacted = wasend_redact_token(body, req->token);
	}
	wasend_result_batch_add(&s->results, req->row_id, req->campaign_id,
							req->http_status, redacted, err, cls,
							GetCurrentTimestamp(), wasend_mono_us());
	if (redacted != body)
		pfree(unconstify(char *, redacted));
	note_connection(s, req);
	pg_atomic_fetch_add_u64(&s->slot->latency_us_sum, req->latency_us);
	wasend_latency_note(s->slot->latency_hist, req->latency_us);
	if (req->server_us >= 0)
		wasend_latency_note(s->slot->added_hist, req->latency_us - req->server_us);
	pg_atomic_fetch_add_u64(&s->slot->requests, 1);
	wasend_hold(req->campaign_id, -1);
}

/*
 * The text of an X-Ad-Api-Version-Warning header as it may be logged: the
 * request's token, anything shaped like a Meta access token ("EA" and 20
 * or more ASCII letters and digits, as wasend._redact) and any byte that
 * is not printable ASCII (a header's value is ASCII) replaced.  palloc'd.
 */
static char *
version_warning_text(const HttpRequest *req)
{
	const char *t = wasend_redact_token(req->version_warning, req->token);
	StringInfoData buf;
	const char *p;

	initStringInfo(&buf);
	for (p = t; *p != '\0';)
	{
		int			run = 0;

		if (p[0] == 'E' && p[1] == 'A')
			while ((p[2 + run] >= 'A' && p[2 + run] <= 'Z') ||
				   (p[2 + run] >= 'a' && p[2 + run] <= 'z') ||
				   (p[2 + run] >= '0' && p[2 + run] <= '9'))
				run++;
		if (run >= 20)
		{
			appendStringInfoString(&buf, "[redacted token]");
			p += 2 + run;
			continue;
		}
		appendStringInfoChar(&buf, (unsigned char) *p < 0x20 ||
							 (unsigned char) *p >= 0x7f ? '?' : *p);
		p++;
	}
	if (t != req->version_warning)
		pfree(unconstify(char *, t));
	return buf.data;
}

/*
 * An answer carried X-Ad-Api-Version-Warning: Meta upgraded a call to a
 * deprecated API version (wasend.api_base_url names it).  Logged once per
 * number in this sender's lifetime, not per message: every answer of the
 * number carries it.  Runs after curl returned (the header callback only
 * kept the text).
 */
static void
note_version_warning(Sender *s, const HttpRequest *req)
{
	char	   *text;
	int			i;

	if (req->version_warning[0] == '\0')
		return;
	for (i = 0; i < s->nwarned; i++)
		if (s->warned_numbers[i] == req->number_id)
			return;
	if (s->nwarned == s->warned_cap)
	{
		int			cap = Max(16, s->warned_cap * 2);

		s->warned_numbers = s->warned_numbers == NULL ?
			MemoryContextAlloc(s->cxt, sizeof(int64) * cap) :
			repalloc(s->warned_numbers, sizeof(int64) * cap);
		s->warned_cap = cap;
	}
	s->warned_numbers[s->nwarned++] = req->number_id;
	text = version_warning_text(req);
	ereport(WARNING,
			(errmsg("wasend: the Graph API upgraded a call of number id %lld to another API version: %s",
					(long long) req->number_id, text),
			 errhint("Set wasend.api_base_url to a current version (its default names one), then reload.")));
	pfree(text);
}

/*
 * Move finished requests into the result batch (limits answers into the
 * limits reader) and the statistics.
 */
static void
collect_done(Sender *s)
{
	HttpRequest *req;

	while (s->results.n < s->results.cap && (req = wasend_http_next_done()) != NULL)
	{
		const char *err = NULL;
		const char *cls = NULL;
		NumberState *ns;

		note_version_warning(s, req);
		if (req->kind == HTTP_LIMITS)
		{
			wasend_limits_collect(&s->limits, req);
			/* the connection it used is one of ours, like a send's */
			note_connection(s, req);
			wasend_http_release(req);
			continue;
		}
		if (req->curl_code != 0 || req->resp_too_big)
		{
			err = req->errbuf;
			cls = req->resp_too_big ? "bad_response" :
				transport_class(req->curl_code, req->writes > 0);
		}
		ns = wasend_number_find(req->number_id);
		if (ns != NULL)
			note_answer(ns, req);
		if (err == NULL && requeue_refused(ns, req))
		{
			wasend_http_release(req);
			continue;
		}
		add_result(s, req, err, cls);
		wasend_http_release(req);
	}
	pg_atomic_write_u32(&s->slot->inflight, wasend_http_inflight());
}

/*
 * Milliseconds from now until t (monotonic us), rounded up, never negative.
 */
static long
ms_until(int64 now, int64 t)
{
	if (t <= now)
		return 0;
	return (long) ((t - now + 999) / 1000);
}

/*
 * Lower *timeout to ms if that is sooner (-1 means "no timeout yet").
 */
static void
sooner(long *timeout, long ms)
{
	if (ms >= 0 && (*timeout < 0 || ms < *timeout))
		*timeout = ms;
}

/*
 * Register in our slot, if it is still ours: the supervisor gave the slot
 * our token before it started us.  A sender of an earlier supervisor that
 * starts late finds another token (or none) and leaves.
 */
static bool
sender_register(Sender *s)
{
	bool		mine;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	mine = s->slot->token == s->token && s->token != 0 && s->slot->pid == 0;
	if (mine)
	{
		s->slot->pid = MyProcPid;
		s->slot->latch = MyLatch;
	}
	LWLockRelease(wasend_state->lock);
	return mine;
}

/*
 * Is our slot still ours?  A new supervisor clears the tokens of the senders
 * it did not start, then asks them to stop.
 */
static bool
sender_still_mine(Sender *s)
{
	bool		mine;

	LWLockAcquire(wasend_state->lock, LW_SHARED);
	mine = s->slot->token == s->token;
	LWLockRelease(wasend_state->lock);
	return mine;
}

/*
 * Has the sender nothing left to record or give back?  (For the end of a
 * shutdown.)
 */
static bool
sender_settled(Sender *s)
{
	return s->results.n == 0 && s->nrelease == 0 && wasend_campaigns_held() == 0;
}

/*
 * Run a database cycle and keep what it decided.
 */
static void
run_cycle(Sender *s, bool refresh, bool release_all)
{
	s->cycle = wasend_db_cycle(s, refresh, release_all);
}

/*
 * The end of a shutdown: record the answers in hand and give back every
 * row not sent, trying again (a lock, a failed cycle) until that is done
 * or the drain time is up, then exit.  What is left then is settled by
 * the supervisor as uncertain.
 */
static void
sender_finish(Sender *s)
{
	int64		deadline = Max(s->drain_deadline, wasend_mono_us()) + DRAIN_TIMEOUT_US;

	for (;;)
	{
		QueryCancelPending = false;
		collect_done(s);
		if (sender_settled(s) || wasend_mono_us() >= deadline)
			break;
		if (wasend_mono_us() >= Max(s->cycle.not_before, s->cycle.record_not_before))
			run_cycle(s, false, true);
		if (sender_settled(s))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	ereport(LOG,
			(errmsg("wasend sender %d stopping (%d requests abandoned, %d answers unrecorded, %d rows held)",
					s->index + 1, wasend_http_inflight(), s->results.n,
					wasend_campaigns_held())));
	proc_exit(0);
}

/*
 * Zero the counters of a slot that this sender starts in.
 */
static void
slot_reset_counters(WasendSenderSlot *slot)
{
	pg_atomic_write_u64(&slot->sent, 0);
	pg_atomic_write_u64(&slot->failed, 0);
	pg_atomic_write_u64(&slot->conns_opened, 0);
	pg_atomic_write_u64(&slot->conns_reused, 0);
	pg_atomic_write_u64(&slot->latency_us_sum, 0);
	pg_atomic_write_u64(&slot->requests, 0);
	pg_atomic_write_u64(&slot->db_retries, 0);
	pg_atomic_write_u32(&slot->awaiting_durable, 0);
	pg_atomic_write_u64(&slot->awaiting_since, 0);
	wasend_latency_reset(slot->latency_hist);
	wasend_latency_reset(slot->added_hist);
}

/*
 * Make the sender: its identity from the supervisor (slot, token,
 * database), its connection, its registration in the slot (or exit: a
 * standby never sends, a replaced supervisor's sender leaves), its memory
 * and the parts that keep state.
 */
static Sender *
sender_start(Datum main_arg)
{
	Sender	   *s = MemoryContextAllocZero(TopMemoryContext, sizeof(Sender));

	s->index = DatumGetInt32(main_arg);
	memcpy(&s->token, MyBgworkerEntry->bgw_extra, sizeof(int64));
	memcpy(&s->dboid, MyBgworkerEntry->bgw_extra + sizeof(int64), sizeof(Oid));
	s->seen_generation = UINT64_MAX;
	s->rewinds = true;

	wasend_worker_signals();
	wasend_worker_connect(NULL, s->dboid, "100ms", true);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	if (RecoveryInProgress())
		proc_exit(0);			/* a standby never sends */

	s->slot = &wasend_state->senders[s->index];
	if (!sender_register(s))
	{
		ereport(LOG,
				(errmsg("wasend sender %d exits: its supervisor was replaced",
						s->index + 1)));
		proc_exit(0);
	}
	slot_reset_counters(s->slot);
	before_shmem_exit(sender_detach, PointerGetDatum(s));

	s->cxt = AllocSetContextCreate(TopMemoryContext, "wasend sender",
								   ALLOCSET_DEFAULT_SIZES);
	wasend_numbers_init(s->cxt);
	wasend_campaigns_init(s->cxt, &s->slot->held);
	wasend_result_batch_init(&s->results, wasend_max_inflight, s->cxt);
	wasend_limits_init(&s->limits, s->cxt);
	wasend_http_init(send_on_wire, send_unsent);
	return s;
}

/*
 * After a configuration reload: the pool's settings, a larger result
 * batch for a larger max_inflight, and a refresh (URLs may have changed).
 */
static void
sender_reconfigure(Sender *s)
{
	wasend_http_configure();
	wasend_result_batch_grow(&s->results, wasend_max_inflight);
	s->seen_generation = UINT64_MAX;
	/* wasend.durability or synchronous_standby_names may have changed */
	wasend_durable_forget(&s->durable);
}

/*
 * Should the answers in the batch be written now?  Soon after the first
 * came, at once for an error (it may pause something), when the batch is
 * half full, and when stopping; never while the record backs off.
 */
static bool
flush_due(Sender *s, int64 now)
{
	return s->results.n > 0 && now >= s->cycle.record_not_before &&
		(s->results_have_error || s->results.n * 2 >= s->results.cap ||
		 ShutdownRequestPending || now >= s->results.oldest + FLUSH_DELAY_US);
}

/*
 * Run a database cycle when there is work for one (a control change, the
 * poll, a scheduled start, answers to write, rows to claim, limits to
 * store, a shutdown) and it may run.
 */
static void
maybe_cycle(Sender *s, int64 now)
{
	uint64		generation = pg_atomic_read_u64(&wasend_state->generation);
	bool		refresh;

	refresh = generation != s->seen_generation || now >= s->next_poll ||
		(s->cycle.next_scheduled_start != 0 && now >= s->cycle.next_scheduled_start);
	if (!(refresh || flush_due(s, now) || ShutdownRequestPending ||
		  wasend_claim_wanted(s->results.n, ShutdownRequestPending) ||
		  wasend_limits_fresh(&s->limits)) ||
		now < s->cycle.not_before)
		return;
	if (refresh)
	{
		s->next_poll = now + POLL_INTERVAL_US;
		s->rewinds = generation != s->seen_generation ||
			++s->polls % REWIND_EVERY == 0;
	}
	run_cycle(s, refresh, ShutdownRequestPending);
	if (s->cycle.refreshed && refresh)
		s->seen_generation = generation;
}

/*
 * How long the loop may sleep, in ms (-1: no limit): until curl's timer,
 * the rate gate's next slot (gate_wake), the next database cycle (never
 * before it may run), at most 100 ms while stopping; not at all when a
 * claim found only rows that wait and may run again now.
 */
static long
sleep_ms(Sender *s, int64 gate_wake)
{
	long		timeout = -1;
	int64		now = wasend_mono_us();
	int64		db_due = s->next_poll;

	sooner(&timeout, wasend_http_timeout_ms(now));
	if (gate_wake != 0)
		sooner(&timeout, ms_until(now, gate_wake));
	if (s->results.n > 0)
		db_due = Min(db_due, Max(s->results.oldest + FLUSH_DELAY_US,
								 s->cycle.record_not_before));
	if (s->cycle.next_scheduled_start != 0)
		db_due = Min(db_due, s->cycle.next_scheduled_start);
	sooner(&timeout, ms_until(now, Max(db_due, s->cycle.not_before)));
	if (ShutdownRequestPending)
		sooner(&timeout, 100);
	/* claims wait to be durable: read the position again, backing off */
	sooner(&timeout, wasend_durable_sleep_ms(&s->durable, now));
	if (!ShutdownRequestPending &&
		wasend_claim_again(s->results.n, ShutdownRequestPending) &&
		wasend_mono_us() >= s->cycle.not_before)
		sooner(&timeout, 0);
	return timeout;
}

/*
 * Sleep on the latch, postmaster death and curl's sockets together for
 * at most timeout ms, then let curl work on what woke us.
 */
static void
sender_wait(WaitEventSet *wes, long timeout)
{
	WaitEvent	events[3];
	int64		now = wasend_mono_us();
	int64		woke;
	int			nev;
	int			i;

	nev = WaitEventSetWait(wes, timeout, events, lengthof(events),
						   PG_WAIT_EXTENSION);
	woke = wasend_mono_us();
	wasend_numbers_note_turn(woke - now, woke);
	for (i = 0; i < nev; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & WL_SOCKET_READABLE)
			wasend_http_drive(true, false);
	}
	if (wasend_http_timer_due(wasend_mono_us()))
		wasend_http_drive(false, true);
}

/*
 * Start the requests the rate gate allows for rows whose claims are
 * durable (durability.c), and show in the slot how many rows wait for
 * that and since when.  *gate_wake: when the gate opens again.
 */
static void
start_sends(Sender *s, int64 *gate_wake)
{
	int64		now = wasend_mono_us();
	XLogRecPtr	durable;
	int			awaiting = 0;
	char		who[32];

	snprintf(who, sizeof(who), "sender %d", s->index + 1);
	durable = wasend_durable_position(&s->durable, now, who);
	*gate_wake = wasend_numbers_start_sends(now, ShutdownRequestPending, durable,
											s->durable.count > 0, &awaiting);
	pg_atomic_write_u32(&s->slot->awaiting_durable, awaiting);
	/* since the oldest commit that is not durable: a lasting wait, not a round trip */
	pg_atomic_write_u64(&s->slot->awaiting_since, awaiting > 0 ?
						(uint64) wasend_durable_waiting_since(&s->durable) : 0);
}

/*
 * One turn of the loop: interrupts, answers, the database cycle, the
 * sends the gate allows, then sleep.  A stopping sender (SIGTERM, or its
 * slot no longer its own) drains what is in flight and finishes.
 */
static void
sender_turn(Sender *s, WaitEventSet *wes)
{
	int64		now;
	int64		gate_wake;

	/*
	 * SIGINT keeps PostgreSQL's handler: lock_timeout works by the backend
	 * sending itself SIGINT, and a cancel (pg_cancel_backend) interrupts
	 * the statement in progress, whose error the cycle catches.  A cancel
	 * between transactions is dropped by wasend_worker_interrupts.
	 */
	if (wasend_worker_interrupts())
		sender_reconfigure(s);
	if (!ShutdownRequestPending && !sender_still_mine(s))
	{
		ereport(LOG,
				(errmsg("wasend sender %d stops: a new supervisor took over",
						s->index + 1)));
		ShutdownRequestPending = true;
	}

	collect_done(s);
	now = wasend_mono_us();
	if (now >= s->next_pool_trim)
	{
		wasend_http_trim_pool();
		s->next_pool_trim = now + POOL_TRIM_US;
	}
	if (ShutdownRequestPending && s->drain_deadline == 0)
		s->drain_deadline = now + DRAIN_TIMEOUT_US;

	maybe_cycle(s, now);

	if (ShutdownRequestPending &&
		(wasend_http_inflight() == 0 || wasend_mono_us() >= s->drain_deadline))
		sender_finish(s);

	start_sends(s, &gate_wake);
	pg_atomic_write_u32(&s->slot->inflight, wasend_http_inflight());
	pg_atomic_write_u32(&s->slot->hold_target, wasend_numbers_budget());

	sender_wait(wes, sleep_ms(s, gate_wake));
}

/*
 * Entry point of a sender background worker.
 */
void
wasend_sender_main(Datum main_arg)
{
	Sender	   *s = sender_start(main_arg);
	WaitEventSet *wes;

	wes = wasend_worker_wait_set(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, wasend_http_event_fd(), NULL, NULL);

	ereport(LOG, (errmsg("wasend sender %d started", s->index + 1)));

	for (;;)
		sender_turn(s, wes);
}
