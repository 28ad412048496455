/*-------------------------------------------------------------------------
 *
 * db_cycle.c
 *		A sender's database work: one short transaction per turn, each
 *		step in a subtransaction, so that no data and no user can kill
 *		the sender or make it wait.
 *
 * A cycle runs, in one transaction:
 *
 *	1. record: write the batch of answers in one statement;
 *	2. refresh (when asked): start due campaigns, resume numbers, apply
 *	   waiting statuses, re-read the running set, take the numbers whose
 *	   messaging limit, quality and health are due to be read (the GETs
 *	   start after the commit); and store the answers of earlier reads;
 *	3. release: give back rows of campaigns that stopped;
 *	4. claim: more rows, in one statement;
 *	5. complete: campaigns that ran dry and of which nobody holds rows.
 *
 * Every step runs in a subtransaction.  A step that fails rolls back alone
 * and the sender carries on:
 *
 *	- An error that is about locks (lock_timeout, a deadlock, a
 *	  serialization failure) is "try again on a later turn": the answers,
 *	  rows to release or campaigns to complete stay where they are.  The
 *	  statements skip rows other sessions hold (SKIP LOCKED), and the
 *	  workers run with a short lock_timeout for the locks they cannot skip,
 *	  so a user's open transaction never stops the event loop for long: curl
 *	  keeps being driven, and answers that arrived are never turned into
 *	  timeouts and duplicates.
 *	- Any other error in the record is about the data: the batch is then
 *	  recorded row by row, and a row whose answer still cannot be recorded
 *	  fails as bad_response with the error (record_poison).  An answer can
 *	  thus fail its own row, never the sender, and never strand a row.
 *	- A data error in the read of the running set or in a claim is about
 *	  one campaign's row (or rows): the read or claim is done in halves,
 *	  and a campaign that fails alone is set aside for a back-off
 *	  (set_aside), so one campaign never holds up the others, a number's
 *	  lane included.
 *
 * If the transaction as a whole fails (its commit, say), it is rolled back
 * and nothing it did counts: the answers stay in the batch, the claimed
 * rows were never taken into the FIFOs (they are only queued after the
 * commit), and the next cycle waits a second.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "http_client.h"
#include "sender.h"
#include "clock.h"
#include "metrics.h"
#include "queue.h"
#include "rate_gate.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"

/* after a failed cycle, the next one waits this long, in us */
#define CYCLE_BACKOFF_US		(1 * USECS_PER_SEC)

/* after the record met a lock, it waits this long, in us */
#define RECORD_LOCK_BACKOFF_US	(200 * 1000)

/* how often storing a limits answer may meet a lock before it is dropped */
#define LIMITS_STORE_TRIES		10

/* lock_timeout of the record's halves when the whole batch met a lock */
#define SHORT_LOCK_TIMEOUT		"10ms"

int64		wasend_next_scheduled_start = 0;

static int64 cycle_backoff_until = 0;
static int64 record_backoff_until = 0;

/* rows taken out of the FIFOs and not yet given back */
static int64 *release_ids = NULL;
static int64 *release_campaigns = NULL;
static int	nrelease = 0;
static int	release_cap = 0;

/*
 * No cycle runs before this time (monotonic us): a second after a failed
 * one.
 */
int64
wasend_db_cycle_not_before(void)
{
	return cycle_backoff_until;
}

/*
 * The answers waiting in the batch are not written before this time
 * (monotonic us): after a lock was in the way, the record waits a little.
 */
int64
wasend_db_record_not_before(void)
{
	return record_backoff_until;
}

/*
 * Errors that say "someone holds what you need": try again later.
 */
static bool
is_transient(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		sqlerrcode == ERRCODE_QUERY_CANCELED;
}

/*
 * Errors that are about the data of an answer (or what a user's trigger
 * made of it): the row that carries it can be failed.  Anything else (no
 * memory, disk full, a read-only or dropped schema) says nothing about the
 * row, which is then kept and tried again later.
 */
static bool
is_data_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_TO_CATEGORY(ERRCODE_DATA_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_PROGRAM_LIMIT_EXCEEDED) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_SQL_ROUTINE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION);
}

/*
 * Run fn(arg) in a subtransaction.  Returns 0 on success; otherwise the
 * subtransaction is rolled back, the error is logged (a lock problem, or
 * with quiet, only at DEBUG1) and its SQLSTATE returned, with its message
 * in *message when asked for (allocated in the caller's context).
 */
static int
run_step(const char *what, void (*fn) (void *), void *arg, char **message,
		 bool quiet)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile int sqlerrcode = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;

		sqlerrcode = edata->sqlerrcode;
		if (sqlerrcode == 0)
			sqlerrcode = ERRCODE_INTERNAL_ERROR;
		pg_atomic_fetch_add_u64(&wasend_my_slot->db_retries, 1);
		ereport(quiet || is_transient(sqlerrcode) ? DEBUG1 : WARNING,
				(errcode(sqlerrcode),
				 errmsg("wasend sender: %s skipped: %s", what,
						edata->message ? edata->message : "unknown error"),
				 errdetail("The sender goes on; what was skipped is tried again or settled per row.")));
		if (message != NULL)
			*message = pstrdup(edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return sqlerrcode;
}

/* ---- record ---- */

typedef struct RecordStep
{
	int		   *idx;
	int			n;
	bool		short_lock;		/* wait at most SHORT_LOCK_TIMEOUT for a lock */
	RecordGroup *groups;
	int			ngroups;
} RecordStep;

/*
 * Step: write the answers idx[] of the batch.
 */
static void
step_record(void *arg)
{
	RecordStep *r = arg;

	/* local to the subtransaction: reverts when it ends */
	if (r->short_lock)
		(void) set_config_option("lock_timeout", SHORT_LOCK_TIMEOUT,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
	r->ngroups = wasend_queue_record(&wasend_results, r->idx, r->n, wasend_max_attempts,
							  wasend_my_token, &r->groups);
}

/*
 * Step: apply the statuses that waited for the wamids just recorded.
 */
static void
step_pending_recorded(void *arg)
{
	RecordStep *r = arg;

	wasend_queue_apply_pending_recorded(&wasend_results, r->idx, r->n);
}

typedef struct PoisonStep
{
	int			i;
	const char *message;
	bool		done;
} PoisonStep;

/*
 * Step: fail one row whose answer cannot be recorded.
 */
static void
step_poison(void *arg)
{
	PoisonStep *p = arg;

	p->done = wasend_queue_record_poison(DatumGetInt64(wasend_results.ids[p->i]), wasend_my_token,
								  DatumGetTimestampTz(wasend_results.at[p->i]),
								  p->message);
}

typedef struct BreakerStep
{
	CampaignState *cs;
	bool		applied;
} BreakerStep;

/*
 * Step: pause a campaign whose breaker tripped.
 */
static void
step_breaker(void *arg)
{
	BreakerStep *b = arg;

	b->applied = wasend_queue_trip_breaker(b->cs->campaign_id, b->cs->breaker.failures,
									b->cs->breaker.window);
}

/*
 * Count a batch's error answers of a number in the metrics: errors is the
 * record statement's "key=count,..." (keys are Graph API error codes or
 * transport classes, which hold neither ',' nor '=').
 */
static void
note_errors(const char *phone_number_id, const char *errors)
{
	char	   *copy = pstrdup(errors);
	char	   *save = NULL;
	char	   *pair;

	for (pair = strtok_r(copy, ",", &save); pair != NULL;
		 pair = strtok_r(NULL, ",", &save))
	{
		char	   *eq = strrchr(pair, '=');

		if (eq == NULL)
			continue;
		*eq = '\0';
		wasend_metrics_note_error(phone_number_id, pair, strtoll(eq + 1, NULL, 10));
	}
	pfree(copy);
}

/*
 * Act on what a record statement said: statistics, slowing numbers down,
 * the circuit breaker.  Returns true when something was paused, so that
 * every sender should look again.
 */
static bool
apply_groups(const RecordGroup *groups, int n)
{
	int			i;
	bool		paused = false;
	uint64		sent = 0;
	uint64		failed = 0;
	int64		now = wasend_mono_us();

	for (i = 0; i < n; i++)
	{
		CampaignState *cs = wasend_campaign_find(groups[i].campaign_id);

		sent += groups[i].sent;
		failed += groups[i].failed;
		if (groups[i].slow_down > 0 || groups[i].errors != NULL)
		{
			NumberState *ns = wasend_number_find(groups[i].number_id);

			if (ns != NULL && groups[i].slow_down > 0)
				wasend_rate_gate_slow_down(ns->gate_key, now);
			if (ns != NULL && groups[i].errors != NULL)
				note_errors(ns->phone_number_id, groups[i].errors);
		}
		if (groups[i].paused > 0)
			paused = true;
		if (cs != NULL && cs->running &&
			wasend_breaker_add(&cs->breaker, groups[i].sent, groups[i].failed))
		{
			BreakerStep b = {cs, false};

			if (run_step("pausing a campaign (circuit breaker)", step_breaker,
						 &b, NULL, false) == 0 && b.applied)
			{
				ereport(LOG,
						(errmsg("wasend paused campaign " INT64_FORMAT ": %d of its last %d results failed",
								cs->campaign_id, cs->breaker.failures,
								cs->breaker.window)));
				cs->running = false;
				paused = true;
			}
		}
	}
	pg_atomic_fetch_add_u64(&wasend_my_slot->sent, sent);
	pg_atomic_fetch_add_u64(&wasend_my_slot->failed, failed);
	return paused;
}

/*
 * Record the answers idx[0..n-1] of the batch, clearing their keep[].  When
 * that fails on the data of an answer, the range is recorded in halves, and
 * an answer that fails alone is failed as bad_response (record_poison): k
 * bad answers among n cost about 2k log2(n) subtransactions, not n.  When
 * it fails on a lock (a user holds one of the rows), the halves are tried
 * too, each waiting at most SHORT_LOCK_TIMEOUT, so that only the rows
 * someone holds wait for a later cycle, not the whole batch.  Any other
 * error (no memory, a read-only database) keeps the range for a later
 * cycle.  Either kind of waiting sets the record's back-off.  Returns true
 * when something was paused.
 */
static bool
record_range(int *idx, int n, bool *keep, bool first)
{
	RecordStep	r;
	char	   *message = NULL;
	int			err;
	int			i;

	r.idx = idx;
	r.n = n;
	r.short_lock = !first;
	err = run_step(n == 1 ? "recording an answer" : "recording answers",
				   step_record, &r, &message, !first);
	if (err == 0)
	{
		for (i = 0; i < n; i++)
			keep[idx[i]] = false;
		/* a failure here loses nothing: the statuses keep waiting */
		run_step("applying statuses that waited for these answers",
				 step_pending_recorded, &r, NULL, false);
		return apply_groups(r.groups, r.ngroups);
	}
	if (!is_data_error(err) && !(is_transient(err) && n > 1))
	{
		/* a lock is short-lived; anything else gets a longer pause */
		record_backoff_until = wasend_mono_us() +
			(is_transient(err) ? RECORD_LOCK_BACKOFF_US : CYCLE_BACKOFF_US);
		return false;
	}
	if (n > 1)
	{
		bool		paused = record_range(idx, n / 2, keep, false);

		return record_range(idx + n / 2, n - n / 2, keep, false) || paused;
	}
	else
	{
		PoisonStep	p = {idx[0], message, false};

		err = run_step("failing an unrecordable answer", step_poison, &p, NULL, false);
		if (err != 0)
		{
			record_backoff_until = wasend_mono_us() + CYCLE_BACKOFF_US;
			return false;
		}
		keep[idx[0]] = false;
		if (p.done)
		{
			ereport(LOG,
					(errmsg("wasend failed row " INT64_FORMAT " as bad_response: its answer could not be recorded: %s",
							DatumGetInt64(wasend_results.ids[idx[0]]), message)));
			pg_atomic_fetch_add_u64(&wasend_my_slot->failed, 1);
		}
		return false;
	}
}

/*
 * Write the batch of answers.  keep[i] stays set for the answers that
 * must wait for a later cycle.  Returns true when something was paused.
 */
static bool
record_results(bool *keep)
{
	int		   *idx;
	int			i;

	for (i = 0; i < wasend_results.n; i++)
		keep[i] = true;
	if (wasend_mono_us() < record_backoff_until)
		return false;
	idx = palloc(sizeof(int) * wasend_results.n);
	for (i = 0; i < wasend_results.n; i++)
		idx[i] = i;
	return record_range(idx, wasend_results.n, keep, true);
}

/* ---- campaigns set aside ---- */

typedef struct FaultStep
{
	int64		campaign_id;
	const char *message;
	int64		backoff;
	int64	   *ids;
	int			n;
} FaultStep;

/*
 * Step: say on a campaign why it is set aside.
 */
static void
step_fault_note(void *arg)
{
	FaultStep  *f = arg;

	wasend_queue_fault_note(f->campaign_id, f->message, (double) f->backoff / USECS_PER_SEC);
}

/*
 * Step: forget what was said of campaigns that went through again.
 */
static void
step_fault_clear(void *arg)
{
	FaultStep  *f = arg;

	wasend_queue_fault_clear(f->n, f->ids);
}

/*
 * A statement failed on the data of this campaign alone: set it aside (it
 * leaves the running set, its rows wait) for a back-off, say so once in
 * the log and on the campaign.  The other campaigns go on.
 */
static void
set_aside(int64 campaign_id, int step, const char *what, const char *message)
{
	FaultStep	f = {campaign_id, message, 0, NULL, 0};

	f.backoff = wasend_campaign_fault(campaign_id, step);
	ereport(WARNING,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("wasend sender: campaign " INT64_FORMAT " set aside for %d s: %s failed on it: %s",
					campaign_id, (int) (f.backoff / USECS_PER_SEC), what, message),
			 errdetail("Its rows wait; the other campaigns go on.  It is tried again then, and set aside twice as long each time it fails again, at most a minute."),
			 errhint("Correct the campaign's row (or its rows); wasend.campaign_progress.waiting shows the error until it goes through.")));
	run_step("noting a campaign set aside", step_fault_note, &f, NULL, false);
}

/*
 * The campaigns ids[0..n-1] went through step: forget their faults (see
 * campaign_faults_passed).
 */
static void
faults_passed(const int64 *ids, int n, int step, bool all)
{
	FaultStep	f = {0, NULL, 0, NULL, 0};

	if (wasend_campaign_faults_count() == 0)
		return;
	f.ids = palloc(sizeof(int64) * wasend_campaign_faults_count());
	f.n = wasend_campaign_faults_passed(ids, n, step, all, f.ids);
	if (f.n > 0)
		run_step("clearing campaigns set aside", step_fault_clear, &f, NULL, false);
}

/*
 * Log a step's failure as run_step does when not quiet: for the steps run
 * quietly first, because a data error is then looked into per campaign.
 */
static void
log_skipped(const char *what, int sqlerrcode, const char *message)
{
	ereport(is_transient(sqlerrcode) ? DEBUG1 : WARNING,
			(errcode(sqlerrcode),
			 errmsg("wasend sender: %s skipped: %s", what, message),
			 errdetail("The sender goes on; what was skipped is tried again or settled per row.")));
}

/* ---- refresh ---- */

typedef struct RefreshStep
{
	TimestampTz next_start;
	RunningCampaign *rc;
	int			n;
	int64	   *excl;			/* campaigns set aside */
	int			nexcl;
	int64	   *only;			/* read only these, unless NULL */
	int			nonly;
	MemoryContext cxt;
} RefreshStep;

/*
 * Step: start due campaigns, resume numbers.
 */
static void
step_activate(void *arg)
{
	RefreshStep *r = arg;

	r->next_start = wasend_queue_activate_scheduled();
}

/*
 * Step: read the running set (or the part of it in r->only).
 */
static void
step_running(void *arg)
{
	RefreshStep *r = arg;

	r->n = wasend_queue_running_campaigns(r->nexcl, r->excl, r->nonly, r->only,
								   &r->rc, r->cxt);
}

/*
 * Step: list the ids the running set would hold.
 */
static void
step_running_ids(void *arg)
{
	RefreshStep *r = arg;

	r->nonly = wasend_queue_running_ids(r->nexcl, r->excl, &r->only, r->cxt);
}

/*
 * Read the running set of the campaigns ids[0..n-1], in halves while it
 * fails on the data, and set aside a campaign whose read fails alone: k
 * such campaigns among n cost about 2k log2(n) reads.
 */
static void
isolate_running(RefreshStep *r, int64 *ids, int n)
{
	char	   *message = NULL;
	int			err;

	r->only = ids;
	r->nonly = n;
	err = run_step("reading part of the running set", step_running, r, &message, true);
	if (err == 0 || !is_data_error(err))
		return;
	if (n > 1)
	{
		isolate_running(r, ids, n / 2);
		isolate_running(r, ids + n / 2, n - n / 2);
	}
	else
		set_aside(ids[0], FAULT_REFRESH, "reading the running set", message);
}

/*
 * Read the running set, without the campaigns set aside.  When the read
 * fails on the data (a value in a campaign's row that it cannot use: a
 * send_timezone that is no time zone, say), the campaign at fault is
 * found (isolate_running) and set aside, and the set is read again
 * without it: one bad campaign row never holds up the others.  Returns
 * whether the set was read.
 */
static bool
read_running(RefreshStep *r)
{
	char	   *message = NULL;
	int			err;

	r->excl = palloc(sizeof(int64) * Max(wasend_campaign_faults_count(), 1));
	r->nexcl = wasend_campaign_faults_excluded(r->excl);
	r->only = NULL;
	r->nonly = 0;
	err = run_step("refreshing the running set", step_running, r, &message, true);
	if (err == 0)
		return true;
	if (!is_data_error(err))
	{
		log_skipped("refreshing the running set", err, message);
		return false;
	}
	if (run_step("listing running campaigns", step_running_ids, r, NULL, false) != 0)
		return false;
	isolate_running(r, r->only, r->nonly);

	r->excl = palloc(sizeof(int64) * Max(wasend_campaign_faults_count(), 1));
	r->nexcl = wasend_campaign_faults_excluded(r->excl);
	r->only = NULL;
	r->nonly = 0;
	return run_step("refreshing the running set", step_running, r, NULL, false) == 0;
}

/*
 * Step: apply status webhooks that waited for their wamid.
 */
static void
step_pending(void *arg)
{
	wasend_queue_apply_pending_statuses();
}

/* ---- the numbers' messaging limits, quality and health ---- */

typedef struct LimitsStep
{
	const LimitsAnswer *a;
	const char *message;
	LimitsCheck *due;
	int			ndue;
	MemoryContext cxt;
} LimitsStep;

/*
 * Step: store one limits answer and apply its rules.
 */
static void
step_limits_apply(void *arg)
{
	LimitsStep *l = arg;

	if (l->a->error != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read the messaging limit of a number: %s", l->a->error)));
	wasend_queue_limits_apply(l->a->number_id, l->a->http_status, l->a->body);
}

/*
 * Step: note on the number that its limits could not be read.
 */
static void
step_limits_failed(void *arg)
{
	LimitsStep *l = arg;

	wasend_queue_limits_failed(l->a->number_id, l->message);
}

/*
 * Step: take the numbers whose limits are due to be read.  If no answer
 * is written before, they are due again after a request's time and a
 * minute.
 */
static void
step_limits_due(void *arg)
{
	LimitsStep *l = arg;

	l->ndue = wasend_queue_limits_due(wasend_request_timeout_ms / 1000 + 60, &l->due, l->cxt);
}

/*
 * Store the answers of the limits GETs.  An answer that cannot be used
 * (an error, an unknown tier) leaves the number's values as they were
 * and says why on the number (limits_error); a lock in the way drops the
 * answer, and the number is read again soon.  Every answer is handled:
 * the list is emptied once the transaction commits.
 */
static void
store_limits_answers(void)
{
	int			i;

	for (i = 0; i < wasend_nlimits_answers; i++)
	{
		LimitsStep	l = {&wasend_limits_answers[i], NULL, NULL, 0, NULL};
		char	   *message = NULL;
		int			err;

		if (wasend_limits_answers[i].done || wasend_mono_us() < wasend_limits_answers[i].not_before)
			continue;
		err = run_step("storing a number's messaging limit", step_limits_apply,
					   &l, &message, false);
		if (err != 0 && !is_transient(err))
		{
			l.message = message;
			run_step("noting a failed read of a messaging limit", step_limits_failed,
					 &l, NULL, false);
		}
		/*
		 * A user holding the number's row (a lock): try again in a second,
		 * a few times, instead of dropping the answer and waiting for the
		 * number to be due again (a minute and more, with the number not
		 * sending meanwhile).
		 */
		if (err != 0 && is_transient(err) && ++wasend_limits_answers[i].tries < LIMITS_STORE_TRIES)
			wasend_limits_answers[i].not_before = wasend_mono_us() + USECS_PER_SEC;
		else
			wasend_limits_answers[i].done = true;
	}
}

/* ---- release, complete, claim ---- */

/*
 * Step: give back the rows on the release list.
 */
static void
step_release(void *arg)
{
	wasend_queue_release(nrelease, release_ids, wasend_my_token);
}

typedef struct CompleteStep
{
	int64	   *ids;
	int			n;
	int64	   *locked;
	int			nlocked;
} CompleteStep;

/*
 * Step: complete the campaigns that ran dry.
 */
static void
step_complete(void *arg)
{
	CompleteStep *c = arg;

	wasend_queue_complete(c->n, c->ids, c->locked, &c->nlocked);
}

typedef struct ClaimStep
{
	int64	   *ids;
	int32	   *lims;
	int32	   *scans;
	int64	   *after;
	int			n;
	ClaimedRow *rows;
	int			nrows;
	MemoryContext cxt;
} ClaimStep;

/*
 * Step: claim rows for the campaigns that want them.
 */
static void
step_claim(void *arg)
{
	ClaimStep  *c = arg;

	c->nrows = wasend_queue_claim(c->n, c->ids, c->lims, c->scans, c->after, wasend_my_token,
						   &c->rows, c->cxt);
}

/*
 * Claim for the campaigns req[lo..lo+n-1], in halves while the claim
 * fails on the data, and set aside a campaign whose claim fails alone.
 * What went through is added to acc: its campaigns (for the dry marks)
 * and its rows.
 */
static void
claim_range(const ClaimStep *req, int lo, int n, ClaimStep *acc)
{
	ClaimStep	part;
	char	   *message = NULL;
	int			err;

	memset(&part, 0, sizeof(part));
	part.ids = req->ids + lo;
	part.lims = req->lims + lo;
	part.scans = req->scans + lo;
	part.after = req->after + lo;
	part.n = n;
	part.cxt = req->cxt;
	err = run_step("claiming rows of some campaigns", step_claim, &part, &message, true);
	if (err == 0)
	{
		memcpy(acc->ids + acc->n, part.ids, sizeof(int64) * n);
		memcpy(acc->lims + acc->n, part.lims, sizeof(int32) * n);
		memcpy(acc->scans + acc->n, part.scans, sizeof(int32) * n);
		memcpy(acc->after + acc->n, part.after, sizeof(int64) * n);
		acc->n += n;
		if (part.nrows > 0)
		{
			acc->rows = acc->rows == NULL ?
				MemoryContextAlloc(req->cxt, sizeof(ClaimedRow) * part.nrows) :
				repalloc(acc->rows, sizeof(ClaimedRow) * (acc->nrows + part.nrows));
			memcpy(acc->rows + acc->nrows, part.rows, sizeof(ClaimedRow) * part.nrows);
			acc->nrows += part.nrows;
		}
		return;
	}
	if (!is_data_error(err))
		return;					/* a lock, say: these wait for a later turn */
	if (n > 1)
	{
		claim_range(req, lo, n / 2, acc);
		claim_range(req, lo + n / 2, n - n / 2, acc);
	}
	else
		set_aside(req->ids[lo], FAULT_CLAIM, "claiming rows", message);
}

/*
 * Claim rows for the campaigns c asks for.  When the claim fails on the
 * data (a value it cannot use in a campaign's row or in one of its rows:
 * a negative sample_left, say), the campaign at fault is found by
 * claiming in halves and set aside; the others' rows are claimed all the
 * same, a number's lane included.  On return c->ids, lims, scans and after hold
 * only the campaigns whose claim went through (c->n of them), and c->rows
 * what they gave.
 */
static void
claim_rows(ClaimStep *c)
{
	ClaimStep	acc;
	char	   *message = NULL;
	int			err;

	err = run_step("claiming rows", step_claim, c, &message, true);
	if (err == 0)
	{
		faults_passed(c->ids, c->n, FAULT_CLAIM, false);
		return;
	}
	c->nrows = 0;
	if (!is_data_error(err))
	{
		log_skipped("claiming rows", err, message);
		c->n = 0;				/* nothing claimed: mark none dry */
		return;
	}
	memset(&acc, 0, sizeof(acc));
	acc.ids = palloc(sizeof(int64) * c->n);
	acc.lims = palloc(sizeof(int32) * c->n);
	acc.scans = palloc(sizeof(int32) * c->n);
	acc.after = palloc(sizeof(int64) * c->n);
	claim_range(c, 0, c->n, &acc);
	c->ids = acc.ids;
	c->lims = acc.lims;
	c->scans = acc.scans;
	c->after = acc.after;
	c->n = acc.n;
	c->rows = acc.rows;
	c->nrows = acc.nrows;
	faults_passed(c->ids, c->n, FAULT_CLAIM, false);
}

/*
 * Take the rows of stopped campaigns (all rows with release_all) out of
 * the FIFOs onto the release list, and try to give the list back.  Returns
 * true when the list was given back; it is forgotten only once the
 * transaction committed (release_done).
 */
static bool
release_rows(bool release_all)
{
	int			need = nrelease + wasend_held_total + 1;

	if (need > release_cap)
	{
		int			cap = Max(need, 64);

		if (release_ids == NULL)
		{
			release_ids = MemoryContextAlloc(wasend_sender_context, sizeof(int64) * cap);
			release_campaigns = MemoryContextAlloc(wasend_sender_context, sizeof(int64) * cap);
		}
		else
		{
			release_ids = repalloc(release_ids, sizeof(int64) * cap);
			release_campaigns = repalloc(release_campaigns, sizeof(int64) * cap);
		}
		release_cap = cap;
	}
	nrelease += wasend_numbers_take_stopped(release_ids + nrelease,
									 release_campaigns + nrelease, release_all);
	if (nrelease == 0)
		return false;
	/* on failure the rows stay held and listed, tried again next cycle */
	return run_step("giving rows back", step_release, NULL, NULL, false) == 0;
}

/*
 * The release list was given back and committed: forget it.
 */
static void
release_done(void)
{
	int			i;

	for (i = 0; i < nrelease; i++)
		wasend_hold(release_campaigns[i], -1);
	nrelease = 0;
}

/*
 * Has the sender nothing left to give back or record?  (For the end of a
 * shutdown.)
 */
bool
wasend_db_cycle_settled(void)
{
	return wasend_results.n == 0 && nrelease == 0 && wasend_held_total == 0;
}

/*
 * Try to complete the campaigns that ran dry.
 */
static void
complete_campaigns(void)
{
	CompleteStep c;
	int			i;

	/* held counts only rows already queued; the statement checks the rest */
	c.ids = palloc(sizeof(int64) * Max(wasend_campaigns_count(), 1));
	c.locked = palloc(sizeof(int64) * Max(wasend_campaigns_count(), 1));
	c.n = wasend_campaigns_dry_done(c.ids);
	c.nlocked = 0;
	if (c.n == 0)
		return;
	if (run_step("completing campaigns", step_complete, &c, NULL, false) != 0)
		return;

	/* say once per campaign that someone holds it (adding rows, say) */
	for (i = 0; i < c.n; i++)
	{
		CampaignState *cs = wasend_campaign_find(c.ids[i]);
		bool		was_locked = true;
		int			j;

		for (j = 0; j < c.nlocked; j++)
			if (c.locked[j] == c.ids[i])
				was_locked = false;
		if (cs == NULL)
			continue;
		if (was_locked && !cs->lock_logged)
			ereport(LOG,
					(errmsg("wasend: campaign " INT64_FORMAT " has nothing left to send but is locked by another session (a user adding rows, or another sender completing it) or no longer running; completing it is tried again later",
							c.ids[i])));
		cs->lock_logged = was_locked;
	}
}

/*
 * One short transaction doing all pending database work.  Returns whether
 * the running set was refreshed (when asked); a refresh that could not be
 * done is asked for again by the caller.
 */
bool
wasend_db_cycle(bool refresh, bool release_all)
{
	MemoryContext tmp;
	MemoryContext old = CurrentMemoryContext;
	volatile bool ok = false;
	volatile bool refreshed = false;
	volatile bool paused = false;
	volatile bool released = false;
	bool	   *keep;
	ClaimStep	claim;
	LimitsStep	limits;

	tmp = AllocSetContextCreate(TopMemoryContext, "wasend cycle",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(tmp);
	keep = palloc0(sizeof(bool) * Max(wasend_results.n, 1));
	memset(&claim, 0, sizeof(claim));
	claim.cxt = tmp;
	memset(&limits, 0, sizeof(limits));
	limits.cxt = tmp;

	PG_TRY();
	{
		wasend_begin_transaction("wasend sender: claim/record");
		MemoryContextSwitchTo(tmp);

		if (!wasend_queue_extension_present())
		{
			/* nothing to do until CREATE EXTENSION; nothing can be held */
			memset(keep, 0, sizeof(bool) * Max(wasend_results.n, 1));
			wasend_limits_answers_mark(true);
			refreshed = true;
		}
		else
		{
			wasend_queue_prepare();

			if (wasend_results.n > 0)
				paused = record_results(keep);
			wasend_http_pump();

			/* a pause we caused: re-read at once which campaigns may send */
			if (refresh || paused)
			{
				RefreshStep r;

				memset(&r, 0, sizeof(r));
				r.cxt = tmp;
				if (run_step("starting scheduled campaigns", step_activate, &r, NULL, false) == 0)
					wasend_next_scheduled_start = r.next_start == 0 ? 0 :
						wasend_mono_us() + Max(r.next_start - GetCurrentTimestamp(), 0);
				if (read_running(&r))
				{
					int64	   *ids = palloc(sizeof(int64) * Max(r.n, 1));
					int			i;

					wasend_campaigns_refresh(r.rc, r.n);
					for (i = 0; i < r.n; i++)
						ids[i] = r.rc[i].campaign_id;
					faults_passed(ids, r.n, FAULT_REFRESH, true);
					refreshed = true;
				}
				run_step("applying waiting statuses", step_pending, NULL, NULL, false);

				/* which numbers' limits are due to be read */
				if (wasend_limits_refresh_interval > 0 && !release_all &&
					run_step("listing numbers whose limits are due", step_limits_due,
							 &limits, NULL, false) != 0)
					limits.ndue = 0;
			}
			else
				refreshed = true;

			if (wasend_nlimits_answers > 0)
				store_limits_answers();

			released = release_rows(release_all);
			wasend_http_pump();

			if (!release_all && wasend_campaigns_want_claim())
			{
				int			ncamp = Max(wasend_campaigns_count(), 1);

				claim.ids = palloc(sizeof(int64) * ncamp);
				claim.lims = palloc(sizeof(int32) * ncamp);
				claim.scans = palloc(sizeof(int32) * ncamp);
				claim.after = palloc(sizeof(int64) * ncamp);
				claim.n = wasend_campaigns_claim_request(claim.ids, claim.lims, claim.scans,
												  claim.after);
				if (claim.n > 0)
					claim_rows(&claim);
				/* only the campaigns whose claim went through */
				if (claim.n > 0)
					wasend_campaigns_mark_dry(claim.ids, claim.lims, claim.scans, claim.n,
									   claim.rows, claim.nrows);
			}

			/*
			 * After the claim: a campaign it found dry is completed in this
			 * very cycle (the completion sees this transaction's own claims,
			 * so a campaign that just gave rows is not complete).  Before,
			 * the refresh of the next cycle cleared the dry mark first, and
			 * an idle campaign could stay running.
			 */
			wasend_http_pump();
			complete_campaigns();
		}

		wasend_commit_transaction();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata = wasend_abort_transaction(tmp);

		pg_atomic_fetch_add_u64(&wasend_my_slot->db_retries, 1);
		/* what the cycle stored is rolled back: store it again next time */
		wasend_limits_answers_mark(false);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("wasend sender: database cycle failed: %s", edata->message),
				 errdetail("Nothing of it counts; the sender tries again in a second.")));
		cycle_backoff_until = wasend_mono_us() + CYCLE_BACKOFF_US;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	/* background workers flush their statistics themselves (autovacuum) */
	pgstat_report_stat(false);
	MemoryContextSwitchTo(tmp);

	if (ok)
	{
		if (wasend_results.n > 0)
			wasend_result_batch_keep(&wasend_results, keep);
		if (wasend_results.n == 0)
			wasend_results_have_error = false;
		if (released)
			release_done();
		if (claim.n > 0 && claim.nrows > 0)
			wasend_campaigns_claimed(claim.rows, claim.nrows);
		wasend_limits_answers_done();
		if (limits.ndue > 0)
			wasend_start_limits_reads(limits.due, limits.ndue);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);

	/* other senders must stop sending for what was paused */
	if (ok && paused)
		wasend_wake_senders();
	return ok && refreshed;
}
