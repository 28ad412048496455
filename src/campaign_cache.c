/*-------------------------------------------------------------------------
 *
 * campaign_cache.c
 *		Per campaign: what a sender knows of the running set, its claim
 *		cursors, the rows it holds, and the campaigns set aside.
 *
 * The running set is read from the database at every refresh (db_cycle.c,
 * through claim_plan.c); between refreshes the sender works from this
 * cache.  A campaign stays in the cache while it runs or while the sender
 * still holds rows of it.  A claim that returns fewer rows than asked
 * marks the campaign dry: it is not asked again until the next refresh,
 * and once the sender holds none of its rows it is offered for
 * completion.  It knows nothing of the numbers' FIFOs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"

#include "campaign_cache.h"
#include "clock.h"

static MemoryContext campaigns_context = NULL;	/* the sender's */
static HTAB *campaigns = NULL;
static int	held_total = 0;		/* rows held, of all campaigns */
static pg_atomic_uint32 *held_gauge = NULL; /* where held_total is published */

/*
 * Campaigns set aside: a read of the running set or a claim failed on
 * them (a value in their row, or in a row of theirs, that the statement
 * cannot use).  Until retry_at the running set leaves them out, so that
 * they hold up no other campaign; then they are tried again, and set
 * aside for twice as long if they fail again.
 */
typedef struct CampaignFault
{
	int64		campaign_id;	/* hash key */
	int64		retry_at;		/* monotonic us: left out until then */
	int64		backoff;		/* us: how long the last failure set it aside */
	CampaignFaultStep step;
} CampaignFault;

/* a campaign set aside the first time waits this long, in us, and at most */
#define FAULT_FIRST_US	(5 * USECS_PER_SEC)
#define FAULT_MAX_US	(60 * USECS_PER_SEC)

static HTAB *faults = NULL;

/*
 * Create the campaigns table in cxt; the rows held are published in
 * *gauge (the sender's slot).
 */
void
wasend_campaigns_init(MemoryContext cxt, pg_atomic_uint32 *gauge)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CampaignState);
	campaigns_context = cxt;
	held_gauge = gauge;
	ctl.hcxt = cxt;
	campaigns = hash_create("wasend campaigns", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(CampaignFault);
	faults = hash_create("wasend campaign faults", 16, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Set a campaign aside after a failure of step (FAULT_REFRESH or
 * FAULT_CLAIM): for FAULT_FIRST_US the first time, twice as long at each
 * failure after, at most FAULT_MAX_US.  It stops running in this sender
 * at once (the rows it holds of it are given back).  Returns how long, in
 * us.
 */
int64
wasend_campaign_fault(int64 campaign_id, CampaignFaultStep step)
{
	bool		found;
	CampaignFault *f = hash_search(faults, &campaign_id, HASH_ENTER, &found);
	CampaignState *cs = wasend_campaign_find(campaign_id);

	f->backoff = found ? Min(f->backoff * 2, FAULT_MAX_US) : FAULT_FIRST_US;
	f->retry_at = wasend_mono_us() + f->backoff;
	f->step = step;
	if (cs != NULL)
		cs->running = false;
	return f->backoff;
}

/*
 * Fill excl (room for wasend_campaign_faults_count() entries) with the campaigns
 * set aside now.  Returns how many.
 */
int
wasend_campaign_faults_excluded(int64 *excl)
{
	HASH_SEQ_STATUS seq;
	CampaignFault *f;
	int			n = 0;
	int64		now = wasend_mono_us();

	hash_seq_init(&seq, faults);
	while ((f = hash_seq_search(&seq)) != NULL)
		if (now < f->retry_at)
			excl[n++] = f->campaign_id;
	return n;
}

/*
 * How many campaigns have a fault entry (an upper bound for arrays).
 */
int
wasend_campaign_faults_count(void)
{
	return (int) hash_get_num_entries(faults);
}

/*
 * The campaigns ids[0..n-1] went through step: those of them set aside
 * for that step are forgotten, and listed in cleared (room for
 * wasend_campaign_faults_count() entries) to be cleared in the table.  With
 * FAULT_REFRESH and all, ids is the whole running set just read: a
 * campaign set aside whose time is up and that is not in it stopped
 * running, and is forgotten too.  Returns how many were listed.
 */
int
wasend_campaign_faults_passed(const int64 *ids, int n, CampaignFaultStep step,
							  bool all, int64 *cleared)
{
	HASH_SEQ_STATUS seq;
	CampaignFault *f;
	int			ncleared = 0;
	int64		now = wasend_mono_us();
	int			i;

	if (hash_get_num_entries(faults) == 0)
		return 0;
	hash_seq_init(&seq, faults);
	while ((f = hash_seq_search(&seq)) != NULL)
	{
		bool		in = false;

		if (now < f->retry_at)
			continue;
		for (i = 0; i < n && !in; i++)
			in = ids[i] == f->campaign_id;
		if ((in && f->step == step) || (!in && all))
		{
			cleared[ncleared++] = f->campaign_id;
			hash_search(faults, &f->campaign_id, HASH_REMOVE, NULL);
		}
	}
	return ncleared;
}

/*
 * This sender's state for a campaign, or NULL.
 */
CampaignState *
wasend_campaign_find(int64 campaign_id)
{
	return hash_search(campaigns, &campaign_id, HASH_FIND, NULL);
}

/*
 * May the rows held of this campaign still be sent?  (It is in the
 * running set.)
 */
bool
wasend_campaign_sends(int64 campaign_id)
{
	CampaignState *cs = wasend_campaign_find(campaign_id);

	return cs != NULL && cs->running;
}

/*
 * Start a scan of every campaign in the cache (hash_seq_search).
 */
void
wasend_campaigns_scan(HASH_SEQ_STATUS *seq)
{
	hash_seq_init(seq, campaigns);
}

/*
 * How many campaigns the cache holds (an upper bound for arrays).
 */
int
wasend_campaigns_count(void)
{
	return (int) hash_get_num_entries(campaigns);
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
		cs->lock_logged = false;
		cs->held = 0;
		cs->claim_after = 0;
		cs->rewind_until = 0;
		cs->priority = 0;
		cs->transactional = false;
		cs->scan_extra = 0;
		cs->claim_again = false;
		memset(&cs->breaker, 0, sizeof(Breaker));
	}
	return cs;
}

/* after an error answer, rewind the campaign's cursor this long, in us */
#define REWIND_AFTER_ERROR_US	(30 * USECS_PER_SEC)

/*
 * At most this many due rows beyond what it asks for does a claim look at
 * to decide rows that wait (see claim in queue.sql): it bounds a claim's
 * time (rows that wait for a send window per recipient cost about 70 us
 * each to decide on this 2-core machine: 1,190 rows in 87 ms) while rows
 * that wait are pushed to their time in claims one right after the other.
 */
#define MAX_SCAN_EXTRA			2000

/*
 * An answer of the campaign was an error: its row may be put back to
 * 'ready' behind the claim cursor, to be retried after its backoff.  Keep
 * rewinding the cursor at every refresh for a while, so that the retry is
 * found within a poll interval of being due.
 */
void
wasend_campaign_note_error(int64 campaign_id)
{
	CampaignState *cs = wasend_campaign_find(campaign_id);

	if (cs != NULL)
		cs->rewind_until = wasend_mono_us() + REWIND_AFTER_ERROR_US;
}

/*
 * A refresh begins: no campaign runs until the running set says so.  With
 * rewinds every claim cursor starts over, else only those of campaigns
 * with a recent error answer.
 *
 * The claim cursors: a claim walks the rows of a campaign never looked at
 * (send_queue_ready_idx, next_attempt_at '-infinity') from the campaign's
 * cursor on, since every index entry behind it is of a row this sender
 * decided (in flight, sent and dead until vacuum, or waiting), so walking
 * them again costs a heap visit each and finds nothing.  A row can come
 * back behind the cursor with its next_attempt_at unchanged only by a
 * release or a resume (a control change), or be committed late with a
 * lower id; so a cursor rewinds after those, and every REWIND_EVERY polls
 * anyway (sender.c), not at every poll.  (Retried and waiting rows have a
 * due time and are found without the cursor; the rewind after an error
 * answer, campaign_note_error, is kept for a row put back by a pause.)
 */
void
wasend_campaigns_begin_refresh(bool rewinds)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int64		now = wasend_mono_us();

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		cs->running_before = cs->running;
		cs->running = false;
		cs->dry = false;
		if (rewinds || now < cs->rewind_until)
			cs->claim_after = 0;
	}
}

/*
 * A campaign of the running set just read: it runs, with its values.
 * When its number was just taken over by this sender, its cursor starts
 * over.
 */
CampaignState *
wasend_campaign_refresh(const RunningCampaign *rc, bool number_taken_over)
{
	CampaignState *cs = campaign_get(rc->campaign_id, rc->number_id);

	if (number_taken_over)
		cs->claim_after = 0;
	if (!cs->running_before || cs->breaker.window != rc->error_window)
		wasend_breaker_reset(&cs->breaker, rc->error_window, rc->error_threshold,
							 campaigns_context);	/* (re)started or resized */
	cs->breaker.threshold = rc->error_threshold;
	cs->running = true;
	cs->number_id = rc->number_id;
	cs->priority = rc->priority;
	cs->transactional = rc->transactional;
	return cs;
}

/*
 * The refresh is done: forget campaigns that stopped and of which we hold
 * nothing.
 */
void
wasend_campaigns_end_refresh(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (!cs->running && cs->held == 0)
		{
			wasend_breaker_free(&cs->breaker);
			hash_search(campaigns, &cs->campaign_id, HASH_REMOVE, NULL);
		}
}

/*
 * Count a row in or out of what this sender holds.
 */
void
wasend_hold(int64 campaign_id, int delta)
{
	CampaignState *cs = wasend_campaign_find(campaign_id);

	if (cs)
		cs->held += delta;
	held_total += delta;
	pg_atomic_write_u32(held_gauge, held_total);
}

/*
 * How many rows this sender holds (pending and in flight).
 */
int
wasend_campaigns_held(void)
{
	return held_total;
}

/*
 * Right after the claim statement: mark dry the campaigns of which the
 * claim sent fewer rows than asked and found no more due rows to look at,
 * so that completion can look at them in the same transaction.  (If the
 * transaction then fails, a dry mark does no harm: the next refresh clears
 * it.)  A campaign of which the claim found rows that wait looks at more
 * rows next time (twice the rows that waited, at most MAX_SCAN_EXTRA);
 * if it looked at all it might and found too few to send, it is claimed
 * again at once with four times the look, since rows that may go may be
 * behind those that wait.
 */
void
wasend_campaigns_mark_dry(const int64 *ids, const int32 *lims, const int32 *scans,
				   int n, const ClaimedRow *rows, int nrows)
{
	CampaignState *cs;
	int			i;

	for (i = 0; i < n; i++)
	{
		int			got = 0;
		int			sends = 0;
		int			j;

		for (j = 0; j < nrows; j++)
			if (rows[j].campaign_id == ids[i])
			{
				got++;
				if (rows[j].body != NULL)
					sends++;
			}
		if ((cs = wasend_campaign_find(ids[i])) == NULL)
			continue;
		if (sends < lims[i] && got < scans[i])
			cs->dry = true;
		if (got == sends)
			cs->scan_extra = 0;
		else if (sends < lims[i] && got >= scans[i])
		{
			cs->scan_extra = (int) Min((int64) scans[i] * 4, MAX_SCAN_EXTRA);
			cs->claim_again = true;
		}
		else
			cs->scan_extra = Min(2 * (got - sends), MAX_SCAN_EXTRA);
	}
}

/*
 * Does a running campaign want to be claimed again at once
 * (campaigns_mark_dry)?
 */
bool
wasend_campaigns_claim_again(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	bool		again = false;

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (cs->running && !cs->dry && cs->claim_again)
		{
			again = true;
			hash_seq_term(&seq);
			break;
		}
	return again;
}

/*
 * A committed claim returned this row: move its campaign's cursor (up to
 * the row's advance: not past a row the claim left for later) and, when
 * the row was claimed for sending (it has a body), count it held.  A row
 * without a body waits for a limit, or failed as suppressed: only the
 * cursor moves past it.  Returns the campaign.
 */
CampaignState *
wasend_campaign_claimed_row(const ClaimedRow *row)
{
	CampaignState *cs = wasend_campaign_find(row->campaign_id);

	if (cs == NULL)
		elog(ERROR, "wasend: claimed a row of unknown campaign " INT64_FORMAT,
			 row->campaign_id);
	cs->claim_after = Max(cs->claim_after, row->advance);
	if (row->body != NULL)
		wasend_hold(row->campaign_id, 1);
	return cs;
}

/*
 * The running campaigns that ran dry and of which this sender holds
 * nothing any more: if no other sender holds rows of them either, they are
 * done.  (If two senders finish the last rows at the same moment, neither
 * sees the other's commit; the next poll completes the campaign.)  ids has
 * room for wasend_campaigns_count() entries.
 */
int
wasend_campaigns_dry_done(int64 *ids)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int			n = 0;

	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (cs->running && cs->dry && cs->held == 0 && !cs->transactional)
			ids[n++] = cs->campaign_id;	/* a lane never completes */
	return n;
}
