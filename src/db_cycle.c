/*-------------------------------------------------------------------------
 *
 * db_cycle.c
 *		A sender's database work: one short transaction per turn (record,
 *		refresh, store limits, release, claim, complete) that returns what
 *		it decided.
 *
 * Each step runs in a subtransaction, so that no data and no user's lock
 * can kill the sender or make it wait.  See docs/internals/db_cycle.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "campaign_cache.h"
#include "claim_plan.h"
#include "clock.h"
#include "db_cycle.h"
#include "durability.h"
#include "http_client.h"
#include "limits_reader.h"
#include "metrics.h"
#include "number_queue.h"
#include "queue.h"
#include "rate_gate.h"
#include "sender.h"
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

/* One cycle's work: its sender, what it decides, its memory. */
typedef struct Cycle
{
	Sender	   *s;
	DbCycleOutcome out;
	MemoryContext cxt;			/* deleted when the cycle ends */
} Cycle;

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
 * Run fn(arg) in a subtransaction.  Returns 0 on success; otherwise the
 * subtransaction is rolled back, the error is logged (a lock problem, or
 * with quiet, only at DEBUG1) and its SQLSTATE returned, with its message
 * in *message when asked for (allocated in the caller's context).
 */
static int
run_step(Cycle *cy, const char *what, void (*fn) (void *), void *arg,
		 char **message, bool quiet)
{
	ErrorData  *edata = wasend_queue_in_subxact(fn, arg);
	int			sqlerrcode;

	if (edata == NULL)
		return 0;
	sqlerrcode = edata->sqlerrcode;
	if (sqlerrcode == 0)
		sqlerrcode = ERRCODE_INTERNAL_ERROR;
	pg_atomic_fetch_add_u64(&cy->s->slot->db_retries, 1);
	ereport(quiet || is_transient(sqlerrcode) ? DEBUG1 : WARNING,
			(errcode(sqlerrcode),
			 errmsg("wasend sender: %s skipped: %s", what,
					edata->message ? edata->message : "unknown error"),
			 errdetail("The sender goes on; what was skipped is tried again or settled per row.")));
	if (message != NULL)
		*message = pstrdup(edata->message ? edata->message : "unknown error");
	FreeErrorData(edata);
	return sqlerrcode;
}

/* ---- record ---- */

typedef struct RecordStep
{
	Sender	   *s;
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
	r->ngroups = wasend_queue_record(&r->s->results, r->idx, r->n,
									 wasend_max_attempts, r->s->token,
									 &r->groups);
}

/*
 * Step: apply the statuses that waited for the wamids just recorded.
 */
static void
step_pending_recorded(void *arg)
{
	RecordStep *r = arg;

	wasend_queue_apply_pending_recorded(&r->s->results, r->idx, r->n);
}

/*
 * Step, when step_pending_recorded failed: leave those statuses to the
 * senders' refresh.
 */
static void
step_unsettle_recorded(void *arg)
{
	RecordStep *r = arg;

	wasend_queue_unsettle_recorded(&r->s->results, r->idx, r->n);
}

typedef struct PoisonStep
{
	Sender	   *s;
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

	p->done = wasend_queue_record_poison(DatumGetInt64(p->s->results.ids[p->i]),
										 p->s->token,
										 DatumGetTimestampTz(p->s->results.at[p->i]),
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
 * Count a batch's error answers of a number in the metrics, by key (Graph
 * API error codes or transport classes).
 */
static void
note_errors(const char *phone_number_id, const RecordGroup *group)
{
	int			i;

	for (i = 0; i < group->nerrors; i++)
		wasend_metrics_note_error(phone_number_id, group->error_keys[i],
								  group->error_counts[i]);
}

/*
 * Act on what a record statement said: statistics, slowing numbers down,
 * the circuit breaker.  Returns true when something was paused, so that
 * every sender should look again.
 */
static bool
apply_groups(Cycle *cy, const RecordGroup *groups, int n)
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
		if (groups[i].slow_down > 0 || groups[i].nerrors > 0)
		{
			NumberState *ns = wasend_number_find(groups[i].number_id);

			if (ns != NULL && groups[i].slow_down > 0)
				wasend_rate_gate_slow_down(ns->gate_key, now);
			if (ns != NULL && groups[i].nerrors > 0)
				note_errors(ns->phone_number_id, &groups[i]);
		}
		if (groups[i].paused > 0)
			paused = true;
		if (cs != NULL && cs->running &&
			wasend_breaker_add(&cs->breaker, groups[i].sent, groups[i].failed))
		{
			BreakerStep b = {cs, false};

			/* the campaigns' trigger logs the pause (wasend._campaign_log) */
			if (run_step(cy, "pausing a campaign (circuit breaker)", step_breaker,
						 &b, NULL, false) == 0 && b.applied)
			{
				cs->running = false;
				paused = true;
			}
		}
	}
	pg_atomic_fetch_add_u64(&cy->s->slot->sent, sent);
	pg_atomic_fetch_add_u64(&cy->s->slot->failed, failed);
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
record_range(Cycle *cy, int *idx, int n, bool *keep, bool first)
{
	RecordStep	r;
	char	   *message = NULL;
	int			err;
	int			i;

	r.s = cy->s;
	r.idx = idx;
	r.n = n;
	r.short_lock = !first;
	err = run_step(cy, n == 1 ? "recording an answer" : "recording answers",
				   step_record, &r, &message, !first);
	if (err == 0)
	{
		for (i = 0; i < n; i++)
			keep[idx[i]] = false;
		/*
		 * a failure here costs no row: the statuses it could not apply
		 * keep waiting, marked for the senders' refresh to check again
		 */
		if (run_step(cy, "applying statuses that waited for these answers",
					 step_pending_recorded, &r, NULL, false) != 0)
			run_step(cy, "leaving the statuses of these answers to the refresh",
					 step_unsettle_recorded, &r, NULL, false);
		return apply_groups(cy, r.groups, r.ngroups);
	}
	if (!wasend_queue_is_data_error(err) && !(is_transient(err) && n > 1))
	{
		/* a lock is short-lived; anything else gets a longer pause */
		cy->out.record_not_before = wasend_mono_us() +
			(is_transient(err) ? RECORD_LOCK_BACKOFF_US : CYCLE_BACKOFF_US);
		return false;
	}
	if (n > 1)
	{
		bool		paused = record_range(cy, idx, n / 2, keep, false);

		return record_range(cy, idx + n / 2, n - n / 2, keep, false) || paused;
	}
	else
	{
		PoisonStep	p = {cy->s, idx[0], message, false};

		err = run_step(cy, "failing an unrecordable answer", step_poison, &p, NULL, false);
		if (err != 0)
		{
			cy->out.record_not_before = wasend_mono_us() + CYCLE_BACKOFF_US;
			return false;
		}
		keep[idx[0]] = false;
		if (p.done)
		{
			ereport(LOG,
					(errmsg("wasend failed row " INT64_FORMAT " as bad_response: its answer could not be recorded: %s",
							DatumGetInt64(cy->s->results.ids[idx[0]]), message)));
			pg_atomic_fetch_add_u64(&cy->s->slot->failed, 1);
		}
		return false;
	}
}

/*
 * Write the batch of answers.  keep[i] stays set for the answers that
 * must wait for a later cycle.  Returns true when something was paused.
 */
static bool
record_results(Cycle *cy, bool *keep)
{
	int			n = cy->s->results.n;
	int		   *idx;
	int			i;

	for (i = 0; i < n; i++)
		keep[i] = true;
	if (wasend_mono_us() < cy->out.record_not_before)
		return false;
	idx = palloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
		idx[i] = i;
	return record_range(cy, idx, n, keep, true);
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
set_aside(Cycle *cy, int64 campaign_id, CampaignFaultStep step, const char *what,
		  const char *message)
{
	FaultStep	f = {campaign_id, message, 0, NULL, 0};

	f.backoff = wasend_campaign_fault(campaign_id, step);
	ereport(WARNING,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("wasend sender: campaign " INT64_FORMAT " set aside for %d s: %s failed on it: %s",
					campaign_id, (int) (f.backoff / USECS_PER_SEC), what, message),
			 errdetail("Its rows wait; the other campaigns go on.  It is tried again then, and set aside twice as long each time it fails again, at most a minute."),
			 errhint("Correct the campaign's row (or its rows); wasend.campaign_progress.waiting shows the error until it goes through.")));
	run_step(cy, "noting a campaign set aside", step_fault_note, &f, NULL, false);
}

/*
 * The campaigns ids[0..n-1] went through step: forget their faults (see
 * campaign_faults_passed).
 */
static void
faults_passed(Cycle *cy, const int64 *ids, int n, CampaignFaultStep step, bool all)
{
	FaultStep	f = {0, NULL, 0, NULL, 0};

	if (wasend_campaign_faults_count() == 0)
		return;
	f.ids = palloc(sizeof(int64) * wasend_campaign_faults_count());
	f.n = wasend_campaign_faults_passed(ids, n, step, all, f.ids);
	if (f.n > 0)
		run_step(cy, "clearing campaigns set aside", step_fault_clear, &f, NULL, false);
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
isolate_running(Cycle *cy, RefreshStep *r, int64 *ids, int n)
{
	char	   *message = NULL;
	int			err;

	r->only = ids;
	r->nonly = n;
	err = run_step(cy, "reading part of the running set", step_running, r, &message, true);
	if (err == 0 || !wasend_queue_is_data_error(err))
		return;
	if (n > 1)
	{
		isolate_running(cy, r, ids, n / 2);
		isolate_running(cy, r, ids + n / 2, n - n / 2);
	}
	else
		set_aside(cy, ids[0], FAULT_REFRESH, "reading the running set", message);
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
read_running(Cycle *cy, RefreshStep *r)
{
	char	   *message = NULL;
	int			err;

	r->excl = palloc(sizeof(int64) * Max(wasend_campaign_faults_count(), 1));
	r->nexcl = wasend_campaign_faults_excluded(r->excl);
	r->only = NULL;
	r->nonly = 0;
	err = run_step(cy, "refreshing the running set", step_running, r, &message, true);
	if (err == 0)
		return true;
	if (!wasend_queue_is_data_error(err))
	{
		log_skipped("refreshing the running set", err, message);
		return false;
	}
	if (run_step(cy, "listing running campaigns", step_running_ids, r, NULL, false) != 0)
		return false;
	isolate_running(cy, r, r->only, r->nonly);

	r->excl = palloc(sizeof(int64) * Max(wasend_campaign_faults_count(), 1));
	r->nexcl = wasend_campaign_faults_excluded(r->excl);
	r->only = NULL;
	r->nonly = 0;
	return run_step(cy, "refreshing the running set", step_running, r, NULL, false) == 0;
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
store_limits_answers(Cycle *cy)
{
	LimitsReader *lr = &cy->s->limits;
	int			i;

	for (i = 0; i < lr->n; i++)
	{
		LimitsAnswer *a = &lr->answers[i];
		LimitsStep	l = {a, NULL, NULL, 0, NULL};
		char	   *message = NULL;
		int			err;

		if (a->done || wasend_mono_us() < a->not_before)
			continue;
		err = run_step(cy, "storing a number's messaging limit", step_limits_apply,
					   &l, &message, false);
		if (err != 0 && !is_transient(err))
		{
			l.message = message;
			run_step(cy, "noting a failed read of a messaging limit", step_limits_failed,
					 &l, NULL, false);
		}
		/*
		 * A user holding the number's row (a lock): try again in a second,
		 * a few times, instead of dropping the answer and waiting for the
		 * number to be due again (a minute and more, with the number not
		 * sending meanwhile).
		 */
		if (err != 0 && is_transient(err) && ++a->tries < LIMITS_STORE_TRIES)
			a->not_before = wasend_mono_us() + USECS_PER_SEC;
		else
			a->done = true;
	}
}

/* ---- release, complete, claim ---- */

/*
 * Step: give back the rows on the release list.
 */
static void
step_release(void *arg)
{
	Sender	   *s = arg;

	wasend_queue_release(s->nrelease, s->release_ids, s->token);
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
	int64		token;
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

	c->nrows = wasend_queue_claim(c->n, c->ids, c->lims, c->scans, c->after,
								  c->token, &c->rows, c->cxt);
}

/*
 * Claim for the campaigns req[lo..lo+n-1], in halves while the claim
 * fails on the data, and set aside a campaign whose claim fails alone.
 * What went through is added to acc: its campaigns (for the dry marks)
 * and its rows.
 */
static void
claim_range(Cycle *cy, const ClaimStep *req, int lo, int n, ClaimStep *acc)
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
	part.token = req->token;
	part.cxt = req->cxt;
	err = run_step(cy, "claiming rows of some campaigns", step_claim, &part, &message, true);
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
	if (!wasend_queue_is_data_error(err))
		return;					/* a lock, say: these wait for a later turn */
	if (n > 1)
	{
		claim_range(cy, req, lo, n / 2, acc);
		claim_range(cy, req, lo + n / 2, n - n / 2, acc);
	}
	else
		set_aside(cy, req->ids[lo], FAULT_CLAIM, "claiming rows", message);
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
claim_rows(Cycle *cy, ClaimStep *c)
{
	ClaimStep	acc;
	char	   *message = NULL;
	int			err;

	err = run_step(cy, "claiming rows", step_claim, c, &message, true);
	if (err == 0)
	{
		faults_passed(cy, c->ids, c->n, FAULT_CLAIM, false);
		return;
	}
	c->nrows = 0;
	if (!wasend_queue_is_data_error(err))
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
	claim_range(cy, c, 0, c->n, &acc);
	c->ids = acc.ids;
	c->lims = acc.lims;
	c->scans = acc.scans;
	c->after = acc.after;
	c->n = acc.n;
	c->rows = acc.rows;
	c->nrows = acc.nrows;
	faults_passed(cy, c->ids, c->n, FAULT_CLAIM, false);
}

/*
 * Take the rows of stopped campaigns (all rows with release_all) out of
 * the FIFOs onto the sender's release list, and try to give the list back.
 * Returns true when the list was given back; it is forgotten only once the
 * transaction committed (release_done).
 */
static bool
release_rows(Cycle *cy, bool release_all)
{
	Sender	   *s = cy->s;
	int			need = s->nrelease + wasend_campaigns_held() + 1;

	if (need > s->release_cap)
	{
		int			cap = Max(need, 64);

		if (s->release_ids == NULL)
		{
			s->release_ids = MemoryContextAlloc(s->cxt, sizeof(int64) * cap);
			s->release_campaigns = MemoryContextAlloc(s->cxt, sizeof(int64) * cap);
		}
		else
		{
			s->release_ids = repalloc(s->release_ids, sizeof(int64) * cap);
			s->release_campaigns = repalloc(s->release_campaigns, sizeof(int64) * cap);
		}
		s->release_cap = cap;
	}
	s->nrelease += wasend_claim_take_stopped(s->release_ids + s->nrelease,
											 s->release_campaigns + s->nrelease,
											 release_all);
	if (s->nrelease == 0)
		return false;
	/* on failure the rows stay held and listed, tried again next cycle */
	return run_step(cy, "giving rows back", step_release, s, NULL, false) == 0;
}

/*
 * The release list was given back and committed: forget it.
 */
static void
release_done(Sender *s)
{
	int			i;

	for (i = 0; i < s->nrelease; i++)
		wasend_hold(s->release_campaigns[i], -1);
	s->nrelease = 0;
}

/*
 * Say once per campaign that completing it waits on someone who holds it
 * (a user adding rows, say): those of ids[0..n-1] that are not in
 * completed[0..ncompleted-1].
 */
static void
log_locked_completions(const int64 *ids, int n, const int64 *completed,
					   int ncompleted)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		CampaignState *cs = wasend_campaign_find(ids[i]);
		bool		was_locked = true;
		int			j;

		for (j = 0; j < ncompleted; j++)
			if (completed[j] == ids[i])
				was_locked = false;
		if (cs == NULL)
			continue;
		if (was_locked && !cs->lock_logged)
			ereport(LOG,
					(errmsg("wasend: campaign " INT64_FORMAT " has nothing left to send but is locked by another session (a user adding rows, or another sender completing it) or no longer running; completing it is tried again later",
							ids[i])));
		cs->lock_logged = was_locked;
	}
}

/*
 * Try to complete the campaigns that ran dry.
 */
static void
complete_campaigns(Cycle *cy)
{
	CompleteStep c;

	/* held counts only rows already queued; the statement checks the rest */
	c.ids = palloc(sizeof(int64) * Max(wasend_campaigns_count(), 1));
	c.locked = palloc(sizeof(int64) * Max(wasend_campaigns_count(), 1));
	c.n = wasend_campaigns_dry_done(c.ids);
	c.nlocked = 0;
	if (c.n == 0)
		return;
	if (run_step(cy, "completing campaigns", step_complete, &c, NULL, false) != 0)
		return;
	log_locked_completions(c.ids, c.n, c.locked, c.nlocked);
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
static void
sender_share(const Sender *s, int *ordinal, int *count)
{
	int			i;
	int			n = 0;
	int			me = 0;

	LWLockAcquire(wasend_state->lock, LW_SHARED);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
	{
		WasendSenderSlot *slot = &wasend_state->senders[i];

		if (slot->dboid != s->dboid || slot->token == 0)
			continue;
		if (i < s->index)
			me++;
		n++;
	}
	LWLockRelease(wasend_state->lock);
	*ordinal = me;
	*count = Max(n, 1);
}

/*
 * The refresh of a cycle: start scheduled campaigns, re-read the running
 * set (setting aside a campaign that makes it fail), apply waiting
 * statuses, and list the numbers whose limits are due (none when the
 * sender gives everything back).  Returns whether the running set was read.
 */
static bool
cycle_refresh(Cycle *cy, bool release_all, LimitsStep *limits)
{
	RefreshStep r;
	bool		refreshed = false;

	memset(&r, 0, sizeof(r));
	r.cxt = cy->cxt;
	if (run_step(cy, "starting scheduled campaigns", step_activate, &r, NULL, false) == 0)
		cy->out.next_scheduled_start = r.next_start == 0 ? 0 :
			wasend_mono_us() + Max(r.next_start - GetCurrentTimestamp(), 0);
	if (read_running(cy, &r))
	{
		int64	   *ids = palloc(sizeof(int64) * Max(r.n, 1));
		int			ordinal;
		int			count;
		int			i;

		sender_share(cy->s, &ordinal, &count);
		wasend_claim_plan_refresh(r.rc, r.n, cy->s->rewinds, ordinal, count);
		for (i = 0; i < r.n; i++)
			ids[i] = r.rc[i].campaign_id;
		faults_passed(cy, ids, r.n, FAULT_REFRESH, true);
		refreshed = true;
	}
	run_step(cy, "applying waiting statuses", step_pending, NULL, NULL, false);

	/* which numbers' limits are due to be read */
	if (wasend_limits_refresh_interval > 0 && !release_all &&
		run_step(cy, "listing numbers whose limits are due", step_limits_due,
				 limits, NULL, false) != 0)
		limits->ndue = 0;
	return refreshed;
}

/*
 * The claim of a cycle: plan it, claim (setting aside a campaign that
 * makes it fail), and mark dry the campaigns whose claim went through
 * with fewer rows than asked.
 */
static void
cycle_claim(Cycle *cy, ClaimStep *claim)
{
	int			ncamp = Max(wasend_campaigns_count(), 1);
	ClaimRequest req;

	req.ids = claim->ids = palloc(sizeof(int64) * ncamp);
	req.lims = claim->lims = palloc(sizeof(int32) * ncamp);
	req.scans = claim->scans = palloc(sizeof(int32) * ncamp);
	req.after = claim->after = palloc(sizeof(int64) * ncamp);
	claim->n = wasend_claim_plan(&req, cy->s->results.n);
	if (claim->n > 0)
		claim_rows(cy, claim);
	/* only the campaigns whose claim went through */
	if (claim->n > 0)
		wasend_campaigns_mark_dry(claim->ids, claim->lims, claim->scans, claim->n,
								  claim->rows, claim->nrows);
}

/* What the steps of one cycle's transaction did, for after the commit. */
typedef struct CycleWork
{
	bool	   *keep;			/* answers that wait for a later cycle */
	bool		refreshed;
	bool		paused;			/* something was paused: wake every sender */
	bool		released;		/* the release list was given back */
	ClaimStep	claim;
	LimitsStep	limits;
	XLogRecPtr	commit_lsn;		/* the end of its commit record */
} CycleWork;

/*
 * The steps of a cycle, inside its transaction, with the extension there:
 * record, refresh, store limits, release, claim, complete.
 */
static void
cycle_steps(Cycle *cy, CycleWork *w, bool refresh, bool release_all)
{
	wasend_queue_prepare();

	if (cy->s->results.n > 0)
		w->paused = record_results(cy, w->keep);
	wasend_http_pump();

	/* a pause we caused: re-read at once which campaigns may send */
	if (refresh || w->paused)
		w->refreshed = cycle_refresh(cy, release_all, &w->limits);
	else
		w->refreshed = true;

	if (cy->s->limits.n > 0)
		store_limits_answers(cy);

	w->released = release_rows(cy, release_all);
	wasend_http_pump();

	if (!release_all && wasend_claim_wanted(cy->s->results.n, ShutdownRequestPending))
		cycle_claim(cy, &w->claim);

	/*
	 * After the claim: a campaign it found dry is completed in this very
	 * cycle (the completion sees this transaction's own claims, so a
	 * campaign that just gave rows is not complete).  Before, the refresh
	 * of the next cycle cleared the dry mark first, and an idle campaign
	 * could stay running.
	 */
	wasend_http_pump();
	complete_campaigns(cy);
}

/*
 * The cycle committed: drop the answers it recorded, forget the rows it
 * gave back, queue the rows it claimed, forget the limits answers it
 * stored and start the reads of the limits due.
 */
static void
cycle_committed(Cycle *cy, CycleWork *w)
{
	Sender	   *s = cy->s;

	if (s->results.n > 0)
		wasend_result_batch_keep(&s->results, w->keep);
	if (s->results.n == 0)
		s->results_have_error = false;
	if (w->released)
		release_done(s);
	if (w->claim.n > 0 && w->claim.nrows > 0)
	{
		/* no request before a failover keeps the claim: durability.c */
		wasend_claim_take(w->claim.rows, w->claim.nrows, w->commit_lsn);
		wasend_durable_note(&s->durable, w->commit_lsn);
	}
	wasend_limits_forget_done(&s->limits);
	if (w->limits.ndue > 0)
		wasend_limits_start_reads(w->limits.due, w->limits.ndue);
}

/*
 * One short transaction doing all pending database work.  Returns what it
 * decided; its refreshed says whether the running set was read (when
 * asked): a refresh that could not be done is asked for again by the
 * caller.
 */
DbCycleOutcome
wasend_db_cycle(Sender *s, bool refresh, bool release_all)
{
	MemoryContext old = CurrentMemoryContext;
	volatile bool ok = false;
	Cycle		cy;
	CycleWork	w;

	cy.s = s;
	cy.out = s->cycle;
	cy.out.refreshed = false;
	cy.cxt = AllocSetContextCreate(TopMemoryContext, "wasend cycle",
								   ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cy.cxt);
	memset(&w, 0, sizeof(w));
	w.keep = palloc0(sizeof(bool) * Max(s->results.n, 1));
	w.claim.token = s->token;
	w.claim.cxt = cy.cxt;
	w.limits.cxt = cy.cxt;

	PG_TRY();
	{
		wasend_begin_transaction("wasend sender: claim/record");
		MemoryContextSwitchTo(cy.cxt);

		if (!wasend_queue_extension_present())
		{
			/* nothing to do until CREATE EXTENSION; nothing can be held */
			memset(w.keep, 0, sizeof(bool) * Max(s->results.n, 1));
			wasend_limits_mark(&s->limits, true);
			w.refreshed = true;
		}
		else
			cycle_steps(&cy, &w, refresh, release_all);

		wasend_commit_transaction();
		w.commit_lsn = wasend_last_commit_lsn();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata = wasend_abort_transaction(cy.cxt);

		pg_atomic_fetch_add_u64(&s->slot->db_retries, 1);
		/* what the cycle stored is rolled back: store it again next time */
		wasend_limits_mark(&s->limits, false);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("wasend sender: database cycle failed: %s", edata->message),
				 errdetail("Nothing of it counts; the sender tries again in a second.")));
		cy.out.not_before = wasend_mono_us() + CYCLE_BACKOFF_US;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	/* background workers flush their statistics themselves (autovacuum) */
	pgstat_report_stat(false);
	MemoryContextSwitchTo(cy.cxt);

	if (ok)
		cycle_committed(&cy, &w);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cy.cxt);

	/* other senders must stop sending for what was paused */
	if (ok && w.paused)
		wasend_wake_senders();
	cy.out.refreshed = ok && w.refreshed;
	return cy.out;
}
