/*-------------------------------------------------------------------------
 *
 * sender.c
 *		The sender background worker: claim, send at the number's rate,
 *		record, in one event loop.
 *
 * A sender keeps, per phone number, a FIFO of rows it claimed and has not
 * sent yet.  Each turn of the loop it:
 *
 *	1. starts as many requests as the shared rate gate allows for each
 *	   number with rows waiting (see rate_gate.c);
 *	2. collects finished requests into a result batch;
 *	3. when there is database work (results to write, rows running low, a
 *	   control change, the periodic poll), runs one short transaction that
 *	   writes the results in one statement, re-reads which campaigns may
 *	   send (releasing rows of campaigns paused meanwhile), claims more rows
 *	   in one statement and completes campaigns with nothing left;
 *	4. sleeps on its latch, postmaster death and curl's sockets together,
 *	   for no longer than curl's timer, the next gate slot, the result
 *	   flush deadline or the poll interval allow.
 *
 * Rows are locked only inside step 3's transaction, never while HTTP is in
 * flight: a claimed row is marked 'sending' with this sender's pid, which
 * is what makes it invisible to other senders.
 *
 * A control change (start, pause, resume, cancel, new rows) bumps a
 * generation counter in shared memory and sets this sender's latch at
 * commit, so a start sends within milliseconds and a pause stops new sends
 * as soon as the next turn sees it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "http_client.h"
#include "queue.h"
#include "wasend.h"

/* how often an idle sender looks for work without being woken, in ms */
#define POLL_INTERVAL_MS		1000

/* longest a result waits before it is written, in ms */
#define FLUSH_DELAY_MS			20

/* longest a stopping sender waits for requests in flight, in ms */
#define DRAIN_TIMEOUT_MS		5000

/* A claimed row waiting for its turn at the rate gate. */
typedef struct PendingRow
{
	int64		id;
	int64		campaign_id;
	char	   *body;
} PendingRow;

/* What this sender knows about one phone number. */
typedef struct NumberState
{
	int64		number_id;		/* hash key */
	char	   *phone_number_id;
	char	   *access_token;
	char	   *url;
	int			rate;
	bool		active;			/* has a running campaign, number active */
	PendingRow *rows;			/* ring buffer of claimed, unsent rows */
	int			head;
	int			count;
	int			cap;
} NumberState;

/* What this sender knows about one campaign. */
typedef struct CampaignState
{
	int64		campaign_id;	/* hash key */
	int64		number_id;
	bool		running;		/* in the last refresh's running set */
	bool		running_before; /* ... and in the one before */
	bool		dry;			/* last claim found fewer rows than asked */
	int			held;			/* rows of it we hold (pending + in flight) */
	int64		claim_after;	/* keyset cursor of claims; 0 after a refresh */

	/* circuit breaker: this sender's last `window` final outcomes */
	double		error_threshold;
	int			window;
	bool	   *outcomes;		/* true = failed; ring of `window` entries */
	int			pos;
	int			filled;
	int			failures;
} CampaignState;

static volatile sig_atomic_t shutdown_requested = false;

static int	sender_index;
static WasendSenderSlot *my_slot;
static MemoryContext sender_context;
static HTAB *numbers;
static HTAB *campaigns;
static int	held_total = 0;
static ResultBatch results;
static bool results_have_error = false;	/* a non-200 answer waits in results */
static uint64 seen_generation = UINT64_MAX;
static TimestampTz next_poll = 0;
static TimestampTz next_scheduled_start = 0;
static int	active_numbers = 0;	/* numbers sending, as of the last refresh */

/*
 * SIGTERM: finish what is in flight, give back what is not, then exit.
 */
static void
sender_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	shutdown_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Clear this sender's slot in shared memory when the process exits.
 */
static void
sender_detach(int code, Datum arg)
{
	SpinLockAcquire(&WasendState->mutex);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	SpinLockRelease(&WasendState->mutex);
	pg_atomic_write_u32(&my_slot->inflight, 0);
	pg_atomic_write_u32(&my_slot->held, 0);
	http_shutdown();
}

/*
 * Replace a string owned by the sender if it changed.
 */
static void
set_string(char **field, const char *value)
{
	if (*field != NULL && strcmp(*field, value) == 0)
		return;
	if (*field != NULL)
		pfree(*field);
	*field = MemoryContextStrdup(sender_context, value);
}

/*
 * Find or create this sender's state for a number.
 */
static NumberState *
number_get(int64 number_id)
{
	bool		found;
	NumberState *ns = hash_search(numbers, &number_id, HASH_ENTER, &found);

	if (!found)
	{
		ns->phone_number_id = NULL;
		ns->access_token = NULL;
		ns->url = NULL;
		ns->rate = 1;
		ns->active = false;
		ns->cap = 64;
		ns->rows = MemoryContextAlloc(sender_context, sizeof(PendingRow) * ns->cap);
		ns->head = 0;
		ns->count = 0;
	}
	return ns;
}

/*
 * Find or create this sender's state for a campaign.
 */
static CampaignState *
campaign_get(int64 campaign_id, int64 number_id)
{
	bool		found;
	CampaignState *cs = hash_search(campaigns, &campaign_id, HASH_ENTER, &found);

	if (!found)
	{
		cs->number_id = number_id;
		cs->running = false;
		cs->running_before = false;
		cs->dry = false;
		cs->held = 0;
		cs->claim_after = 0;
		cs->error_threshold = 1.0;
		cs->window = 0;
		cs->outcomes = NULL;
		cs->pos = cs->filled = cs->failures = 0;
	}
	return cs;
}

/*
 * Count a row in or out of what this sender holds.
 */
static void
hold(int64 campaign_id, int delta)
{
	CampaignState *cs = hash_search(campaigns, &campaign_id, HASH_FIND, NULL);

	if (cs)
		cs->held += delta;
	held_total += delta;
	pg_atomic_write_u32(&my_slot->held, held_total);
}

/*
 * Append a claimed row to its number's FIFO, growing the ring if needed.
 */
static void
pending_push(NumberState *ns, const ClaimedRow *row)
{
	PendingRow *p;

	if (ns->count == ns->cap)
	{
		PendingRow *grown = MemoryContextAlloc(sender_context,
											   sizeof(PendingRow) * ns->cap * 2);
		int			i;

		for (i = 0; i < ns->count; i++)
			grown[i] = ns->rows[(ns->head + i) % ns->cap];
		pfree(ns->rows);
		ns->rows = grown;
		ns->head = 0;
		ns->cap *= 2;
	}
	p = &ns->rows[(ns->head + ns->count) % ns->cap];
	p->id = row->id;
	p->campaign_id = row->campaign_id;
	p->body = MemoryContextStrdup(sender_context, row->body);
	ns->count++;
}

/*
 * Remove, from every number's FIFO, the rows of campaigns that may no
 * longer send, and collect their ids so they can be released.
 */
static int
pending_drop_stopped(int64 **ids_out, bool drop_all)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	int64	   *ids = palloc(sizeof(int64) * Max(held_total, 1));
	int			n = 0;

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		int			kept = 0;
		int			i;

		for (i = 0; i < ns->count; i++)
		{
			PendingRow row = ns->rows[(ns->head + i) % ns->cap];
			CampaignState *cs = hash_search(campaigns, &row.campaign_id,
											HASH_FIND, NULL);

			if (drop_all || !ns->active || cs == NULL || !cs->running)
			{
				ids[n++] = row.id;
				pfree(row.body);
				hold(row.campaign_id, -1);
			}
			else
				ns->rows[(ns->head + kept++) % ns->cap] = row;
		}
		ns->count = kept;
	}
	*ids_out = ids;
	return n;
}

/*
 * Start as many requests as the rate gate allows.  Returns the earliest
 * time at which the gate opens again for a number that still has rows
 * waiting (0 if none waits).
 */
static TimestampTz
start_sends(void)
{
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	TimestampTz wake = 0;
	TimestampTz now = GetCurrentTimestamp();
	uint64		seqs[WASEND_MAX_RATE];

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
	{
		TimestampTz next;
		int			granted;
		int			i;

		if (ns->count == 0 || !ns->active)
			continue;
		granted = rate_gate_take(ns->number_id, ns->rate,
								 Min(ns->count, WASEND_MAX_RATE), now,
								 seqs, &next);
		for (i = 0; i < granted; i++)
		{
			PendingRow *p = &ns->rows[ns->head];

			http_start(ns->url, ns->access_token, p->body, p->id,
					   p->campaign_id, ns->number_id, seqs[i]);
			pfree(p->body);
			ns->head = (ns->head + 1) % ns->cap;
			ns->count--;
		}
		if (ns->count > 0 && (wake == 0 || next < wake))
			wake = next;
	}
	pg_atomic_write_u32(&my_slot->inflight, http_inflight());
	return wake;
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
 * Move finished requests into the result batch and the statistics.
 */
static void
collect_done(void)
{
	HttpRequest *req;

	while (results.n < results.cap && (req = http_next_done()) != NULL)
	{
		const char *err = NULL;
		const char *cls = NULL;

		if (req->curl_code != 0 || req->resp_too_big)
		{
			err = req->errbuf;
			cls = req->resp_too_big ? "bad_response" : transport_class(req->curl_code);
		}
		/* an error may pause the number or campaign: record it at once */
		if (err != NULL || req->http_status != 200)
			results_have_error = true;
		result_batch_add(&results, req->row_id, req->http_status,
						 req->curl_code == 0 ? req->resp : NULL, err, cls,
						 GetCurrentTimestamp());
		if (req->new_connections > 0)
			pg_atomic_fetch_add_u64(&my_slot->conns_opened, req->new_connections);
		else
			pg_atomic_fetch_add_u64(&my_slot->conns_reused, 1);
		pg_atomic_fetch_add_u64(&my_slot->latency_us_sum, req->latency_us);
		pg_atomic_fetch_add_u64(&my_slot->requests, 1);
		hold(req->campaign_id, -1);
		http_release(req);
	}
	pg_atomic_write_u32(&my_slot->inflight, http_inflight());
}

/*
 * The request URL of a number: base/{phone_number_id}/messages, with
 * appsecret_proof (hex HMAC-SHA256 of the token keyed with the app secret,
 * see signature.c) when wasend.app_secret_file is set.
 */
static char *
number_url(const char *phone_number_id, const char *token)
{
	char		proof[65];
	const char *secret;
	const char *error;

	secret = wasend_secret(WASEND_SECRET_APP, &error);
	if (error != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wasend sends without appsecret_proof: %s", error)));
	if (secret == NULL)
		return psprintf("%s/%s/messages", wasend_api_base_url, phone_number_id);
	wasend_hmac_sha256_hex(secret, token, strlen(token), proof);
	return psprintf("%s/%s/messages?appsecret_proof=%s",
					wasend_api_base_url, phone_number_id, proof);
}

/*
 * Rebuild the running set from the database: which campaigns may send,
 * with their number's URL, token and rate.
 */
static void
refresh_running(MemoryContext tmp)
{
	RunningCampaign *rc;
	int			n;
	int			i;
	HASH_SEQ_STATUS seq;
	NumberState *ns;
	CampaignState *cs;

	next_scheduled_start = queue_activate_scheduled();
	queue_apply_pending_statuses();
	n = queue_running_campaigns(&rc, tmp);

	hash_seq_init(&seq, numbers);
	while ((ns = hash_seq_search(&seq)) != NULL)
		ns->active = false;
	active_numbers = 0;
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		cs->running_before = cs->running;
		cs->running = false;
		cs->dry = false;
		cs->claim_after = 0;	/* look again from the start each refresh */
	}

	for (i = 0; i < n; i++)
	{
		char	   *url;

		ns = number_get(rc[i].number_id);
		if (!ns->active)
			active_numbers++;
		ns->active = true;
		ns->rate = rc[i].rate;
		set_string(&ns->phone_number_id, rc[i].phone_number_id);
		set_string(&ns->access_token, rc[i].access_token);
		url = number_url(rc[i].phone_number_id, rc[i].access_token);
		set_string(&ns->url, url);
		pfree(url);

		cs = campaign_get(rc[i].campaign_id, rc[i].number_id);
		if (!cs->running_before || cs->window != rc[i].error_window)
		{
			/* (re)started or resized: the breaker starts afresh */
			if (cs->outcomes)
				pfree(cs->outcomes);
			cs->window = rc[i].error_window;
			cs->outcomes = MemoryContextAllocZero(sender_context,
												  sizeof(bool) * cs->window);
			cs->pos = cs->filled = cs->failures = 0;
		}
		cs->error_threshold = rc[i].error_threshold;
		cs->running = true;
		cs->number_id = rc[i].number_id;
	}

	/* forget campaigns that stopped and of which we hold nothing */
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (!cs->running && cs->held == 0)
		{
			if (cs->outcomes)
				pfree(cs->outcomes);
			hash_search(campaigns, &cs->campaign_id, HASH_REMOVE, NULL);
		}
}

/*
 * How many rows this sender should hold for a number: about one second of
 * its rate, at most a batch, and a fair share of wasend.max_inflight among
 * the numbers that are sending (otherwise the first numbers claimed would
 * take the whole budget and the others would wait).
 */
static int
number_target(NumberState *ns)
{
	return Min(Min(wasend_batch_size, ns->rate),
			   Max(1, wasend_max_inflight / Max(active_numbers, 1)));
}

/*
 * Does some running campaign want more rows claimed?  A number wants
 * rows when its FIFO holds less than half of a claim's worth.
 */
static bool
wants_claim(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	bool		want = false;

	/* a claim costs a statement: not for a handful of rows */
	if (wasend_max_inflight - held_total < Max(1, wasend_max_inflight / 20) ||
		shutdown_requested)
		return false;
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns;

		if (!cs->running || cs->dry)
			continue;
		ns = hash_search(numbers, &cs->number_id, HASH_FIND, NULL);
		if (ns && ns->active && ns->count * 2 < number_target(ns))
		{
			want = true;
			hash_seq_term(&seq);
			break;
		}
	}
	return want;
}

/*
 * Claim rows for the campaigns that want them, in one statement, then try
 * to complete the campaigns found empty.
 */
static void
claim_rows(MemoryContext tmp)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int			ncamp = hash_get_num_entries(campaigns);
	int64	   *ids = palloc(sizeof(int64) * Max(ncamp, 1));
	int32	   *lims = palloc(sizeof(int32) * Max(ncamp, 1));
	int64	   *after = palloc(sizeof(int64) * Max(ncamp, 1));
	int			n = 0;
	int			budget = wasend_max_inflight - held_total;
	ClaimedRow *rows;
	int			nrows;
	int			i;

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns;
		int			target;
		int			lim;

		if (!cs->running || cs->dry || budget <= 0)
			continue;
		ns = hash_search(numbers, &cs->number_id, HASH_FIND, NULL);
		if (ns == NULL || !ns->active)
			continue;
		target = number_target(ns);
		lim = Min(target - ns->count, budget);
		if (lim <= 0)
			continue;
		ids[n] = cs->campaign_id;
		lims[n] = lim;
		after[n] = cs->claim_after;
		budget -= lim;
		n++;
	}
	if (n == 0)
		return;

	nrows = queue_claim(n, ids, lims, after, MyProcPid, &rows, tmp);
	for (i = 0; i < nrows; i++)
	{
		cs = hash_search(campaigns, &rows[i].campaign_id, HASH_FIND, NULL);
		Assert(cs != NULL);
		cs->claim_after = Max(cs->claim_after, rows[i].id);
		pending_push(number_get(cs->number_id), &rows[i]);
		hold(rows[i].campaign_id, 1);
	}

	/* campaigns that gave fewer rows than asked have run dry */
	for (i = 0; i < n; i++)
	{
		int			got = 0;
		int			j;

		for (j = 0; j < nrows; j++)
			if (rows[j].campaign_id == ids[i])
				got++;
		if (got < lims[i])
		{
			cs = hash_search(campaigns, &ids[i], HASH_FIND, NULL);
			cs->dry = true;
		}
	}
}

/*
 * Complete the running campaigns that ran dry and of which this sender
 * holds nothing any more: if no other sender holds rows of them either,
 * they are done.  (If two senders finish the last rows at the same moment,
 * neither sees the other's commit; the next poll completes the campaign.)
 */
static void
complete_dry_campaigns(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int64	   *done = palloc(sizeof(int64) * Max(hash_get_num_entries(campaigns), 1));
	int			ndone = 0;

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (cs->running && cs->dry && cs->held == 0)
			done[ndone++] = cs->campaign_id;
	if (ndone > 0)
		queue_complete(ndone, done);
}

/*
 * Add final outcomes to a campaign's breaker window; true if it trips.
 */
static bool
breaker_add(CampaignState *cs, int64 sent, int64 failed)
{
	int64		i;

	if (cs->window == 0)
		return false;
	for (i = 0; i < sent + failed; i++)
	{
		bool		fail = i < failed;

		if (cs->filled == cs->window)
			cs->failures -= cs->outcomes[cs->pos] ? 1 : 0;
		else
			cs->filled++;
		cs->outcomes[cs->pos] = fail;
		cs->failures += fail ? 1 : 0;
		cs->pos = (cs->pos + 1) % cs->window;
	}
	return cs->filled == cs->window &&
		cs->failures > cs->error_threshold * cs->window;
}

/*
 * Write the batch of results in one statement and act on what it says:
 * statistics, slowing numbers down, the circuit breaker.  Returns true
 * when something was paused, so that every sender should look again.
 */
static bool
record_results(void)
{
	RecordGroup *groups;
	int			n;
	int			i;
	bool		paused = false;
	uint64		sent = 0;
	uint64		failed = 0;
	TimestampTz now = GetCurrentTimestamp();

	n = queue_record(&results, wasend_max_attempts, MyProcPid, &groups);
	result_batch_reset(&results);
	results_have_error = false;
	for (i = 0; i < n; i++)
	{
		CampaignState *cs = hash_search(campaigns, &groups[i].campaign_id,
										HASH_FIND, NULL);

		sent += groups[i].sent;
		failed += groups[i].failed;
		if (groups[i].slow_down > 0)
			rate_gate_slow_down(groups[i].number_id, now);
		if (groups[i].paused > 0)
			paused = true;
		if (cs != NULL && cs->running &&
			breaker_add(cs, groups[i].sent, groups[i].failed))
		{
			queue_trip_breaker(cs->campaign_id, cs->failures, cs->window);
			ereport(LOG,
					(errmsg("wasend paused campaign " INT64_FORMAT ": %d of its last %d results failed",
							cs->campaign_id, cs->failures, cs->window)));
			cs->running = false;
			paused = true;
		}
	}
	pg_atomic_fetch_add_u64(&my_slot->sent, sent);
	pg_atomic_fetch_add_u64(&my_slot->failed, failed);
	return paused;
}

/*
 * One short transaction doing all pending database work.
 */
static void
db_cycle(bool refresh, bool release_all)
{
	MemoryContext tmp;
	MemoryContext old;
	bool		paused = false;

	tmp = AllocSetContextCreate(CurrentMemoryContext, "wasend cycle",
								ALLOCSET_DEFAULT_SIZES);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "wasend sender: claim/record");

	if (!queue_extension_present())
	{
		/* nothing to do until CREATE EXTENSION; nothing can be held */
		result_batch_reset(&results);
		results_have_error = false;
	}
	else
	{
		int64	   *ids;
		int			n;

		queue_prepare();
		old = MemoryContextSwitchTo(tmp);

		if (results.n > 0)
			paused = record_results();

		/* a pause we caused: re-read at once which campaigns may send */
		if (refresh || paused)
			refresh_running(tmp);
		n = pending_drop_stopped(&ids, release_all);
		queue_release(n, ids, MyProcPid);

		if (!release_all && wants_claim())
			claim_rows(tmp);
		complete_dry_campaigns();
		MemoryContextSwitchTo(old);
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextDelete(tmp);

	/* other senders must stop sending for what was paused */
	if (paused)
		wasend_wake_senders();
}

/*
 * Milliseconds from now until t, rounded up, never negative.
 */
static long
ms_until(TimestampTz now, TimestampTz t)
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
 * Entry point of a sender background worker.
 */
void
wasend_sender_main(Datum main_arg)
{
	WaitEventSet *wes;
	HASHCTL		ctl;
	TimestampTz drain_deadline = 0;

	sender_index = DatumGetInt32(main_arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, sender_sigterm);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(wasend_database, NULL, 0);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	if (RecoveryInProgress())
		proc_exit(0);			/* a standby never sends */

	/*
	 * The part of the queue the claims touch is hot in shared buffers; with
	 * the default random_page_cost the planner prefers walking the primary
	 * key in id order (the heap is perfectly correlated with id) over
	 * send_queue_ready_idx, and then filters past every row already sent.
	 */
	SetConfigOption("random_page_cost", "1.1", PGC_USERSET, PGC_S_SESSION);

	my_slot = &WasendState->senders[sender_index];
	SpinLockAcquire(&WasendState->mutex);
	my_slot->pid = MyProcPid;
	my_slot->started_at = GetCurrentTimestamp();
	my_slot->latch = MyLatch;
	SpinLockRelease(&WasendState->mutex);
	pg_atomic_write_u64(&my_slot->sent, 0);
	pg_atomic_write_u64(&my_slot->failed, 0);
	pg_atomic_write_u64(&my_slot->conns_opened, 0);
	pg_atomic_write_u64(&my_slot->conns_reused, 0);
	pg_atomic_write_u64(&my_slot->latency_us_sum, 0);
	pg_atomic_write_u64(&my_slot->requests, 0);
	before_shmem_exit(sender_detach, 0);

	sender_context = AllocSetContextCreate(TopMemoryContext, "wasend sender",
										   ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(NumberState);
	ctl.hcxt = sender_context;
	numbers = hash_create("wasend numbers", 64, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(CampaignState);
	campaigns = hash_create("wasend campaigns", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	result_batch_init(&results, wasend_max_inflight, sender_context);

	http_init();

	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, http_event_fd(), NULL, NULL);

	elog(LOG, "wasend sender %d started", sender_index + 1);

	for (;;)
	{
		WaitEvent	events[3];
		int			nev;
		int			i;
		long		timeout = -1;
		TimestampTz now;
		TimestampTz gate_wake;
		uint64		generation;
		bool		refresh;
		bool		flush;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			http_configure();
			/* a larger max_inflight needs a larger result batch */
			result_batch_grow(&results, wasend_max_inflight);
			seen_generation = UINT64_MAX;	/* URLs may have changed */
		}

		collect_done();
		now = GetCurrentTimestamp();

		if (shutdown_requested && drain_deadline == 0)
			drain_deadline = TimestampTzPlusMilliseconds(now, DRAIN_TIMEOUT_MS);

		generation = pg_atomic_read_u64(&WasendState->generation);
		refresh = generation != seen_generation || now >= next_poll ||
			(next_scheduled_start != 0 && now >= next_scheduled_start);
		flush = results.n > 0 &&
			(results_have_error || results.n * 2 >= results.cap || shutdown_requested ||
			 now >= TimestampTzPlusMilliseconds(results.oldest, FLUSH_DELAY_MS));

		if (refresh || flush || shutdown_requested || wants_claim())
		{
			if (refresh)
			{
				seen_generation = generation;
				next_poll = TimestampTzPlusMilliseconds(now, POLL_INTERVAL_MS);
			}
			db_cycle(refresh, shutdown_requested);
		}

		if (shutdown_requested &&
			(http_inflight() == 0 || GetCurrentTimestamp() >= drain_deadline))
		{
			collect_done();
			if (results.n > 0)
				db_cycle(false, true);
			elog(LOG, "wasend sender %d stopping (%d requests abandoned)",
				 sender_index + 1, http_inflight());
			proc_exit(0);
		}

		gate_wake = start_sends();

		/* how long may we sleep? */
		now = GetCurrentTimestamp();
		sooner(&timeout, http_timeout_ms(now));
		if (gate_wake != 0)
			sooner(&timeout, ms_until(now, gate_wake));
		if (results.n > 0)
			sooner(&timeout, ms_until(now, TimestampTzPlusMilliseconds(results.oldest, FLUSH_DELAY_MS)));
		sooner(&timeout, ms_until(now, next_poll));
		if (next_scheduled_start != 0)
			sooner(&timeout, ms_until(now, next_scheduled_start));
		if (shutdown_requested)
			sooner(&timeout, 100);

		nev = WaitEventSetWait(wes, timeout, events, lengthof(events),
							   PG_WAIT_EXTENSION);
		for (i = 0; i < nev; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if (events[i].events & WL_SOCKET_READABLE)
				http_drive(true, false);
		}
		if (http_timer_due(GetCurrentTimestamp()))
			http_drive(false, true);
	}
}
