/*-------------------------------------------------------------------------
 *
 * sender.c
 *		The sender background worker's event loop: claim, send at the
 *		number's rate, record.
 *
 * Each turn of the loop a sender:
 *
 *	1. collects finished requests into a result batch;
 *	2. when there is database work (results to write, rows running low, a
 *	   control change, the periodic poll), runs one short transaction
 *	   (db_cycle.c) that records the results, re-reads which campaigns may
 *	   send, gives back rows of campaigns paused meanwhile, completes
 *	   campaigns with nothing left and claims more rows;
 *	3. starts as many requests as the shared rate gate allows for each
 *	   number with rows waiting (number_queue.c, rate_gate.c);
 *	4. sleeps on its latch, postmaster death and curl's sockets together,
 *	   for no longer than curl's timer, the next gate slot, the result
 *	   flush deadline or the poll interval allow.
 *
 * Rows are locked only inside step 2's transaction, never while HTTP is in
 * flight: a claimed row is marked 'sending' with this sender's claim token,
 * which is what makes it invisible to other senders.  The token is random
 * per sender start and given by its supervisor (supervisor.c); a sender whose
 * slot no longer carries its token (a new supervisor took over) stops.
 *
 * A control change (start, pause, resume, cancel, new rows) bumps a
 * generation counter in shared memory and sets this sender's latch at
 * commit, so a start sends within milliseconds and a pause stops new sends
 * as soon as the next turn sees it.
 *
 * Every deadline of the loop is on the monotonic clock (wasend_mono_us), so
 * a step of the wall clock neither stalls a sender nor makes it spin.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include <curl/curl.h>

#include "access/xlog.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http_client.h"
#include "sender.h"
#include "clock.h"
#include "latency.h"
#include "metrics.h"
#include "queue.h"
#include "rate_gate.h"
#include "settings.h"
#include "shmem.h"
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

/* the number's own token is redacted from error answers if this long */
#define MIN_REDACTED_TOKEN		8

volatile sig_atomic_t wasend_shutdown_requested = false;
MemoryContext wasend_sender_context = NULL;
WasendSenderSlot *wasend_my_slot = NULL;
int64		wasend_my_token = 0;
int			wasend_held_total = 0;
ResultBatch wasend_results;
bool		wasend_results_have_error = false;	/* a non-200 answer waits in results */
LimitsAnswer wasend_limits_answers[MAX_LIMITS_ANSWERS];	/* answers of limits GETs */
int			wasend_nlimits_answers = 0;

static int	sender_index;		/* our slot in WasendState->senders */
static Oid	my_dboid;
static uint64 seen_generation = UINT64_MAX;
static int64 next_poll = 0;

/*
 * SIGTERM: finish what is in flight, give back what is not, then exit.
 */
static void
sender_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	wasend_shutdown_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Clear this sender's registration in its slot when the process exits.
 * The token stays: the supervisor clears it once it has seen the exit and
 * settled what the sender left behind.
 */
static void
sender_detach(int code, Datum arg)
{
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (wasend_my_slot->pid == MyProcPid)
	{
		wasend_my_slot->pid = 0;
		wasend_my_slot->latch = NULL;
	}
	LWLockRelease(wasend_state->lock);
	pg_atomic_write_u32(&wasend_my_slot->inflight, 0);
	pg_atomic_write_u32(&wasend_my_slot->held, 0);
	wasend_http_shutdown();
}

/*
 * The error_policy key of a request that got no usable HTTP answer.
 */
static const char *
transport_class(int curl_code)
{
	switch (curl_code)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return "timeout";
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			return "connect";
		case CURLE_GOT_NOTHING:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			return "reset";
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
			return "tls";
		default:
			return "transport";
	}
}

/*
 * An error answer with the access token its request carried replaced, as
 * Meta's text for a malformed token can echo it; the answer itself when it
 * does not contain the token.  The copy is palloc'd.
 */
const char *
wasend_redact_token(const char *resp, const char *token)
{
	StringInfoData buf;
	size_t		tlen;
	const char *p;
	const char *hit;

	if (resp == NULL || token == NULL ||
		(tlen = strlen(token)) < MIN_REDACTED_TOKEN ||
		strstr(resp, token) == NULL)
		return resp;
	initStringInfo(&buf);
	for (p = resp; (hit = strstr(p, token)) != NULL; p = hit + tlen)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, "[redacted token]");
	}
	appendStringInfoString(&buf, p);
	return buf.data;
}

/*
 * Keep the answer of a limits GET for the next database cycle (the body
 * with the token the GET carried redacted: the number may have no state in
 * this sender, when it has no running campaign or is read for the first
 * time).  If the list is full the answer is dropped: the number is due
 * again soon anyway.
 */
static void
collect_limits(HttpRequest *req)
{
	LimitsAnswer *a;
	const char *body = req->curl_code == 0 && !req->resp_too_big ? req->resp : NULL;

	if (wasend_nlimits_answers >= MAX_LIMITS_ANSWERS)
		return;
	a = &wasend_limits_answers[wasend_nlimits_answers++];
	a->number_id = req->number_id;
	a->http_status = req->http_status;
	a->tries = 0;
	a->not_before = 0;
	a->done = false;
	a->error = req->curl_code != 0 || req->resp_too_big ?
		MemoryContextStrdup(wasend_sender_context, req->errbuf) : NULL;

	/*
	 * An answer that is not valid in the database encoding (a proxy's
	 * Latin-1 error page, say) must not reach a stored text: a dump would
	 * not restore.  It is an error of its own instead.
	 */
	if (body != NULL && !pg_verifymbstr(body, (int) strlen(body), true))
	{
		body = NULL;
		if (a->error == NULL)
			a->error = MemoryContextStrdup(wasend_sender_context,
										   "the answer is not valid in the database encoding");
	}
	a->body = NULL;
	if (body != NULL)
	{
		const char *redacted = wasend_redact_token(body, req->token);

		a->body = MemoryContextStrdup(wasend_sender_context, redacted);
		if (redacted != body)
			pfree(unconstify(char *, redacted));
	}
	/* the connection it used is one of ours, like a send's */
	if (req->new_connections > 0)
		pg_atomic_fetch_add_u64(&wasend_my_slot->conns_opened, req->new_connections);
	else
		pg_atomic_fetch_add_u64(&wasend_my_slot->conns_reused, 1);
}

/*
 * Forget the limits answers a committed cycle stored (or gave up on); keep
 * those whose storing met a user's lock, for a later cycle
 * (store_limits_answers).
 */
void
wasend_limits_answers_done(void)
{
	int			i;
	int			kept = 0;

	for (i = 0; i < wasend_nlimits_answers; i++)
	{
		if (!wasend_limits_answers[i].done)
		{
			wasend_limits_answers[kept++] = wasend_limits_answers[i];
			continue;
		}
		if (wasend_limits_answers[i].body)
			pfree(wasend_limits_answers[i].body);
		if (wasend_limits_answers[i].error)
			pfree(wasend_limits_answers[i].error);
	}
	wasend_nlimits_answers = kept;
}

/*
 * Mark every limits answer done (nothing can store them: no extension) or
 * not done (the cycle that stored them failed, so the store is undone).
 */
void
wasend_limits_answers_mark(bool done)
{
	int			i;

	for (i = 0; i < wasend_nlimits_answers; i++)
		wasend_limits_answers[i].done = done;
}

/*
 * Is there a limits answer no cycle has tried to store yet?  The loop runs
 * a cycle for it at once: a number does not send until its limit is
 * stored, and the sender that read it may have nothing else to do.
 */
bool
wasend_limits_answers_fresh(void)
{
	int			i;

	for (i = 0; i < wasend_nlimits_answers; i++)
		if (wasend_limits_answers[i].tries == 0 && !wasend_limits_answers[i].done)
			return true;
	return false;
}

/*
 * Start the GETs of the numbers whose limits are due (their tokens are in
 * lc, not necessarily in a NumberState: a number without a running
 * campaign is read too).
 */
void
wasend_start_limits_reads(const LimitsCheck *lc, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		char	   *url = wasend_number_limits_url(lc[i].phone_number_id, lc[i].access_token);

		wasend_http_start_get(url, lc[i].access_token, lc[i].number_id);
		pfree(url);
	}
}

/*
 * Is this answer Meta's 130429 (throughput limit reached)?  Only non-200
 * answers are looked at, with PostgreSQL's JSON parser, for the number at
 * error.code (wasend_answer_error_code): the same field the record
 * statement reads.
 */
static bool
is_throughput_refusal(const HttpRequest *req)
{
	int			code;

	if (req->http_status == 200 || req->resp == NULL || req->resp_too_big)
		return false;
	return wasend_answer_error_code(req->resp, strlen(req->resp), &code) &&
		code == 130429;
}

/*
 * Move finished requests into the result batch and the statistics.
 */
static void
collect_done(void)
{
	HttpRequest *req;

	while (wasend_results.n < wasend_results.cap && (req = wasend_http_next_done()) != NULL)
	{
		const char *err = NULL;
		const char *cls = NULL;
		const char *body = req->curl_code == 0 ? req->resp : NULL;
		const char *redacted = body;
		NumberState *ns;

		if (req->kind == HTTP_LIMITS)
		{
			collect_limits(req);
			wasend_http_release(req);
			continue;
		}
		if (req->curl_code != 0 || req->resp_too_big)
		{
			err = req->errbuf;
			cls = req->resp_too_big ? "bad_response" : transport_class(req->curl_code);
		}
		ns = wasend_number_find(req->number_id);
		if (ns != NULL)
		{
			int64		now = wasend_mono_us();

			wasend_metrics_note_answer(ns->phone_number_id, req->http_status, req->latency_us);
			wasend_number_answered(ns);

			/*
			 * Little's law takes the API's latency as curl saw it, not the
			 * time until this collection: that one grows with the
			 * sender's own load, and sizing in flight by it feeds back
			 * (more in flight, more work per event, longer turns, more in
			 * flight: a 1,000,000-message run ran up to the cap).  The
			 * turns of the loop are INFLIGHT_SLACK_SEC's business.
			 */
			wasend_number_note_latency(ns, req->latency_us, now);
			if (req->rttvar_us >= 0)
				wasend_rate_gate_note_rttvar(ns->gate_key, req->rttvar_us, now);
		}
		/*
		 * A 130429 refused the message, so sending it again cannot
		 * duplicate it: while the campaign may send, it goes again in
		 * the number's next slot, still held, and the number slows down
		 * (rate_gate.c).  It is sent again MAX_REFUSALS times; a
		 * further refusal is recorded, and wasend.error_policy's row for
		 * 130429 applies from then on (its retry with backoff, by
		 * default).  A sender shutting down records it at once: it is
		 * known unsent, so it must not be left to the supervisor as
		 * uncertain.
		 */
		if (err == NULL && ns != NULL && ns->active && !wasend_shutdown_requested &&
			is_throughput_refusal(req) && req->refusals < MAX_REFUSALS)
		{
			CampaignState *cs = wasend_campaign_find(req->campaign_id);

			if (cs != NULL && cs->running)
			{
				wasend_rate_gate_slow_down(ns->gate_key, wasend_mono_us());
				wasend_metrics_note_error(ns->phone_number_id, "130429", 1);
				wasend_number_requeue(ns, req->row_id, req->campaign_id, req->priority,
							   req->refusals + 1, req->body);
				wasend_http_release(req);
				continue;
			}
		}

		/* an error may pause the number or campaign: record it at once */
		if (err != NULL || req->http_status != 200)
		{
			wasend_results_have_error = true;
			wasend_campaign_note_error(req->campaign_id);
			redacted = wasend_redact_token(body, req->token);
		}
		wasend_result_batch_add(&wasend_results, req->row_id, req->campaign_id,
						 req->http_status, redacted, err, cls,
						 GetCurrentTimestamp(), wasend_mono_us());
		if (redacted != body)
			pfree(unconstify(char *, redacted));
		if (req->new_connections > 0)
			pg_atomic_fetch_add_u64(&wasend_my_slot->conns_opened, req->new_connections);
		else
			pg_atomic_fetch_add_u64(&wasend_my_slot->conns_reused, 1);
		pg_atomic_fetch_add_u64(&wasend_my_slot->latency_us_sum, req->latency_us);
		wasend_latency_note(wasend_my_slot->latency_hist, req->latency_us);
		if (req->server_us >= 0)
			wasend_latency_note(wasend_my_slot->added_hist, req->latency_us - req->server_us);
		pg_atomic_fetch_add_u64(&wasend_my_slot->requests, 1);
		wasend_hold(req->campaign_id, -1);
		wasend_http_release(req);
	}
	pg_atomic_write_u32(&wasend_my_slot->inflight, wasend_http_inflight());
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
sender_register(void)
{
	bool		mine;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	mine = wasend_my_slot->token == wasend_my_token && wasend_my_token != 0 && wasend_my_slot->pid == 0;
	if (mine)
	{
		wasend_my_slot->pid = MyProcPid;
		wasend_my_slot->latch = MyLatch;
	}
	LWLockRelease(wasend_state->lock);
	return mine;
}

/*
 * Which of its database's senders this one is (0-based, in slot order),
 * and how many the database has: a started sender's slot carries its
 * token.  Each phone number is claimed by one of them (number_refresh):
 * two senders claiming the same campaigns walk past each other's rows in
 * flight at every claim, hold twice what Little's law asks, and split a
 * campaign's outcomes between two circuit breakers.  Read at every
 * refresh, so when a sender stops the others take its numbers within a
 * poll interval.
 */
void
wasend_sender_share(int *ordinal, int *count)
{
	int			i;
	int			n = 0;
	int			me = 0;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *s = &wasend_state->senders[i];

		if (s->dboid != my_dboid || s->token == 0)
			continue;
		if (i < sender_index)
			me++;
		n++;
	}
	LWLockRelease(wasend_state->lock);
	*ordinal = me;
	*count = Max(n, 1);
}

/*
 * Is our slot still ours?  A new supervisor clears the tokens of the senders
 * it did not start, then asks them to stop.
 */
static bool
sender_still_mine(void)
{
	bool		mine;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	mine = wasend_my_slot->token == wasend_my_token;
	LWLockRelease(wasend_state->lock);
	return mine;
}

/*
 * The end of a shutdown: record the answers in hand and give back every
 * row not sent, trying again (a lock, a failed cycle) until that is done
 * or the drain time is up, then exit.  What is left then is settled by
 * the supervisor as uncertain.
 */
static void
sender_finish(int64 drain_deadline)
{
	int64		deadline = Max(drain_deadline, wasend_mono_us()) + DRAIN_TIMEOUT_US;

	for (;;)
	{
		QueryCancelPending = false;
		collect_done();
		if (wasend_db_cycle_settled() || wasend_mono_us() >= deadline)
			break;
		if (wasend_mono_us() >= Max(wasend_db_cycle_not_before(), wasend_db_record_not_before()))
			wasend_db_cycle(false, true);
		if (wasend_db_cycle_settled())
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	ereport(LOG,
			(errmsg("wasend sender %d stopping (%d requests abandoned, %d answers unrecorded, %d rows held)",
					sender_index + 1, wasend_http_inflight(), wasend_results.n, wasend_held_total)));
	proc_exit(0);
}

/*
 * Entry point of a sender background worker.
 */
void
wasend_sender_main(Datum main_arg)
{
	WaitEventSet *wes;
	int64		drain_deadline = 0;
	int64		next_pool_trim = 0;

	sender_index = DatumGetInt32(main_arg);
	memcpy(&wasend_my_token, MyBgworkerEntry->bgw_extra, sizeof(int64));
	memcpy(&my_dboid, MyBgworkerEntry->bgw_extra + sizeof(int64), sizeof(Oid));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, sender_sigterm);
	BackgroundWorkerUnblockSignals();

	wasend_worker_connect(NULL, my_dboid, "100ms", true);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	if (RecoveryInProgress())
		proc_exit(0);			/* a standby never sends */

	wasend_my_slot = &wasend_state->senders[sender_index];
	if (!sender_register())
	{
		ereport(LOG,
				(errmsg("wasend sender %d exits: its supervisor was replaced",
						sender_index + 1)));
		proc_exit(0);
	}
	pg_atomic_write_u64(&wasend_my_slot->sent, 0);
	pg_atomic_write_u64(&wasend_my_slot->failed, 0);
	pg_atomic_write_u64(&wasend_my_slot->conns_opened, 0);
	pg_atomic_write_u64(&wasend_my_slot->conns_reused, 0);
	pg_atomic_write_u64(&wasend_my_slot->latency_us_sum, 0);
	pg_atomic_write_u64(&wasend_my_slot->requests, 0);
	pg_atomic_write_u64(&wasend_my_slot->db_retries, 0);
	wasend_latency_reset(wasend_my_slot->latency_hist);
	wasend_latency_reset(wasend_my_slot->added_hist);
	before_shmem_exit(sender_detach, 0);

	wasend_sender_context = AllocSetContextCreate(TopMemoryContext, "wasend sender",
										   ALLOCSET_DEFAULT_SIZES);
	wasend_numbers_init();
	wasend_campaigns_init();
	wasend_result_batch_init(&wasend_results, wasend_max_inflight, wasend_sender_context);

	wasend_http_init();

	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, wasend_http_event_fd(), NULL, NULL);

	ereport(LOG, (errmsg("wasend sender %d started", sender_index + 1)));

	for (;;)
	{
		WaitEvent	events[3];
		int			nev;
		int			i;
		long		timeout = -1;
		int64		now;
		int64		gate_wake;
		uint64		generation;
		bool		refresh;
		bool		flush;

		/*
		 * SIGINT keeps PostgreSQL's handler: lock_timeout works by the
		 * backend sending itself SIGINT, and a cancel (pg_cancel_backend)
		 * interrupts the statement in progress, whose error the cycle
		 * catches.  A cancel that arrives between transactions has nothing
		 * to cancel and is dropped here, as PostgresMain does between
		 * commands, instead of ending the sender.
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			wasend_http_configure();
			/* a larger max_inflight needs a larger result batch */
			wasend_result_batch_grow(&wasend_results, wasend_max_inflight);
			seen_generation = UINT64_MAX;	/* URLs may have changed */
		}
		if (!wasend_shutdown_requested && !sender_still_mine())
		{
			ereport(LOG,
					(errmsg("wasend sender %d stops: a new supervisor took over",
							sender_index + 1)));
			wasend_shutdown_requested = true;
		}

		collect_done();
		now = wasend_mono_us();
		if (now >= next_pool_trim)
		{
			wasend_http_trim_pool();
			next_pool_trim = now + POOL_TRIM_US;
		}

		if (wasend_shutdown_requested && drain_deadline == 0)
			drain_deadline = now + DRAIN_TIMEOUT_US;

		generation = pg_atomic_read_u64(&wasend_state->generation);
		refresh = generation != seen_generation || now >= next_poll ||
			(wasend_next_scheduled_start != 0 && now >= wasend_next_scheduled_start);
		flush = wasend_results.n > 0 && now >= wasend_db_record_not_before() &&
			(wasend_results_have_error || wasend_results.n * 2 >= wasend_results.cap || wasend_shutdown_requested ||
			 now >= wasend_results.oldest + FLUSH_DELAY_US);

		if ((refresh || flush || wasend_shutdown_requested || wasend_campaigns_want_claim() ||
			 wasend_limits_answers_fresh()) &&
			now >= wasend_db_cycle_not_before())
		{
			if (refresh)
			{
				static int	polls = 0;

				next_poll = now + POLL_INTERVAL_US;
				wasend_refresh_rewinds = generation != seen_generation ||
					++polls % REWIND_EVERY == 0;
			}
			if (wasend_db_cycle(refresh, wasend_shutdown_requested) && refresh)
				seen_generation = generation;
		}

		if (wasend_shutdown_requested &&
			(wasend_http_inflight() == 0 || wasend_mono_us() >= drain_deadline))
			sender_finish(drain_deadline);

		gate_wake = wasend_numbers_start_sends(wasend_mono_us());

		/* how long may we sleep? */
		now = wasend_mono_us();
		sooner(&timeout, wasend_http_timeout_ms(now));
		if (gate_wake != 0)
			sooner(&timeout, ms_until(now, gate_wake));
		{
			/* when the next database cycle is due, never before it may run */
			int64		db_due = next_poll;

			if (wasend_results.n > 0)
				db_due = Min(db_due, Max(wasend_results.oldest + FLUSH_DELAY_US,
										 wasend_db_record_not_before()));
			if (wasend_next_scheduled_start != 0)
				db_due = Min(db_due, wasend_next_scheduled_start);
			sooner(&timeout, ms_until(now, Max(db_due, wasend_db_cycle_not_before())));
		}
		if (wasend_shutdown_requested)
			sooner(&timeout, 100);
		/* a claim found only rows that wait: the next one at once */
		if (!wasend_shutdown_requested && wasend_campaigns_claim_again() &&
			wasend_mono_us() >= wasend_db_cycle_not_before())
			sooner(&timeout, 0);

		now = wasend_mono_us();
		nev = WaitEventSetWait(wes, timeout, events, lengthof(events),
							   PG_WAIT_EXTENSION);
		{
			int64		woke = wasend_mono_us();

			wasend_sender_note_turn(woke - now, woke);
		}
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
}
