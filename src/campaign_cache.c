/*-------------------------------------------------------------------------
 *
 * campaign_cache.c
 *		Per campaign: what a sender knows of the running set, the rows it
 *		holds, and which campaigns want rows claimed.
 *
 * The running set (campaigns whose status is running and whose number is
 * active) is read from the database at every refresh (db_cycle.c); between
 * refreshes the sender works from this cache.  A campaign stays in the
 * cache while it runs or while the sender still holds rows of it.  A claim
 * that returns fewer rows than asked marks the campaign dry: it is not
 * asked again until the next refresh, and once the sender holds none of
 * its rows it is offered for completion.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"

#include "sender.h"
#include "clock.h"
#include "queue.h"
#include "settings.h"

static HTAB *campaigns = NULL;

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
	int			step;			/* FAULT_REFRESH or FAULT_CLAIM */
} CampaignFault;

/* a campaign set aside the first time waits this long, in us, and at most */
#define FAULT_FIRST_US	(5 * USECS_PER_SEC)
#define FAULT_MAX_US	(60 * USECS_PER_SEC)

static HTAB *faults = NULL;

/*
 * Create the campaigns table (in sender_context).
 */
void
wasend_campaigns_init(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CampaignState);
	ctl.hcxt = wasend_sender_context;
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
wasend_campaign_fault(int64 campaign_id, int step)
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
wasend_campaign_faults_passed(const int64 *ids, int n, int step, bool all,
					   int64 *cleared)
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

/*
 * Does the next refresh rewind every campaign's claim cursor?  The sender
 * sets it when the refresh follows a control change (new rows, a resume:
 * rows may now be ready behind a cursor) and every REWIND_EVERY polls.
 */
bool		wasend_refresh_rewinds = true;

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
 * Replace the running set with the one just read from the database.
 *
 * The claim cursors: a claim walks the rows of a campaign never looked at
 * (send_queue_ready_idx, next_attempt_at '-infinity') from the campaign's
 * cursor on, since every index entry behind it is of a row this sender
 * decided (in flight, sent and dead until vacuum, or waiting), so walking
 * them again costs a heap visit each and finds nothing.  A row can come
 * back behind the cursor with its next_attempt_at unchanged only by a
 * release or a resume (a control change), or be committed late with a
 * lower id; so a cursor rewinds after those, and every REWIND_EVERY polls
 * anyway, not at every poll.  (Retried and waiting rows have a due time
 * and are found without the cursor; the rewind after an error answer,
 * campaign_note_error, is kept for a row put back by a pause.)
 */
void
wasend_campaigns_refresh(const RunningCampaign *rc, int n)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int			i;
	int64		now = wasend_mono_us();

	wasend_numbers_begin_refresh();
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		cs->running_before = cs->running;
		cs->running = false;
		cs->dry = false;
		if (wasend_refresh_rewinds || now < cs->rewind_until)
			cs->claim_after = 0;
	}

	for (i = 0; i < n; i++)
	{
		NumberState *ns = wasend_number_get(rc[i].number_id);

		wasend_number_refresh(ns, rc[i].rate, rc[i].phone_number_id, rc[i].access_token);

		cs = campaign_get(rc[i].campaign_id, rc[i].number_id);
		/* a number this sender just took over: its cursors start over */
		if (ns->mine && !ns->was_mine)
			cs->claim_after = 0;
		if (!cs->running_before || cs->breaker.window != rc[i].error_window)
			wasend_breaker_reset(&cs->breaker, rc[i].error_window, rc[i].error_threshold);	/* (re)started or resized */
		cs->breaker.threshold = rc[i].error_threshold;
		cs->running = true;
		cs->number_id = rc[i].number_id;
		cs->priority = rc[i].priority;
		cs->transactional = rc[i].transactional;
	}

	/* forget campaigns that stopped and of which we hold nothing */
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
	wasend_held_total += delta;
	pg_atomic_write_u32(&wasend_my_slot->held, wasend_held_total);
}

/*
 * Does some running campaign want more rows claimed?  A number wants
 * rows when its FIFO holds less than half of a claim's worth.
 */
bool
wasend_campaigns_want_claim(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	bool		want = false;
	int			target = wasend_sender_budget();
	int			budget = target - wasend_held_total - wasend_results.n;

	if (budget <= 0 || wasend_shutdown_requested)
		return false;
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns;

		if (!cs->running || cs->dry)
			continue;
		ns = wasend_number_find(cs->number_id);
		if (ns == NULL || !ns->active || !ns->mine)
			continue;
		/*
		 * A transactional lane that is not dry wants a claim whatever the
		 * FIFO holds: its rows go ahead of it.  A campaign wants one when
		 * its number's FIFO runs low, and a claim costs a statement: not
		 * for a handful of rows.
		 */
		if (cs->transactional ||
			(ns->count * 2 < wasend_number_target(ns) &&
			 budget >= Max(1, target / 20)))
		{
			want = true;
			hash_seq_term(&seq);
			break;
		}
	}
	return want;
}

/*
 * Fill the arrays (room for wasend_campaigns_count() entries) with what to claim:
 * per campaign, how many rows, how many due rows to look at for them, and
 * the keyset cursor.  Returns how many campaigns ask.
 */
int
wasend_campaigns_claim_request(int64 *ids, int32 *lims, int32 *scans, int64 *after)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	NumberState *ns;
	int			n = 0;
	/* answers not yet recorded are rows still 'sending' in the table */
	int			budget = wasend_sender_budget() - wasend_held_total - wasend_results.n;
	int			lane_budget;
	int			campaigns_asking = 0;

	/*
	 * First pass: the transactional lanes ask for a batch each, whatever
	 * their number's FIFO holds (their rows go to the front), before any
	 * campaign takes the budget; and each number's highest priority among
	 * its campaigns, and how many have it.  When campaigns ask too, the
	 * lanes ask for half the budget at most: the budget follows Little's
	 * law (number_queue.c) and may be a few dozen rows, and a lane asking
	 * for all of it would leave none to its number's campaigns in every
	 * claim (a lane usually has nothing, and marks itself dry only once
	 * the claim has run).
	 */
	wasend_numbers_reset_shares();
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		if (!cs->running || cs->dry || cs->transactional)
			continue;
		ns = wasend_number_find(cs->number_id);
		if (ns != NULL && ns->active && ns->mine)
			campaigns_asking++;
	}
	lane_budget = campaigns_asking > 0 ? (budget + 1) / 2 : budget;
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		if (!cs->running || cs->dry)
			continue;
		ns = wasend_number_find(cs->number_id);
		if (ns == NULL || !ns->active || !ns->mine)
			continue;
		if (cs->transactional)
		{
			if (lane_budget > 0)
			{
				ids[n] = cs->campaign_id;
				lims[n] = Min(wasend_batch_size, lane_budget);
				scans[n] = lims[n] + cs->scan_extra;
				cs->claim_again = false;
				after[n] = cs->claim_after;
				budget -= lims[n];
				lane_budget -= lims[n];
				n++;
			}
			continue;
		}
		if (ns->top_count == 0 || cs->priority > ns->top_priority)
		{
			ns->top_priority = cs->priority;
			ns->top_count = 0;
		}
		if (cs->priority == ns->top_priority)
			ns->top_count++;
	}

	/*
	 * Second pass: the campaigns of a number's highest priority share the
	 * room left in its FIFO equally, so that they share the number's rate;
	 * lower priorities wait until those run dry.
	 */
	hash_seq_init(&seq, campaigns);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		int			lim;

		if (!cs->running || cs->dry || cs->transactional || budget <= 0)
			continue;
		ns = wasend_number_find(cs->number_id);
		if (ns == NULL || !ns->active || !ns->mine)
			continue;
		if (cs->priority != ns->top_priority)
			continue;
		else
		{
			int			room = wasend_number_target(ns) - ns->count;

			lim = Min((room + ns->top_count - 1) / Max(ns->top_count, 1), budget);
		}
		if (lim <= 0)
			continue;
		ids[n] = cs->campaign_id;
		lims[n] = lim;
		scans[n] = lim + cs->scan_extra;
		cs->claim_again = false;
		after[n] = cs->claim_after;
		budget -= lim;
		n++;
	}
	return n;
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
 * Does a campaign want to be claimed again at once (campaigns_mark_dry)?
 * Only while it may be claimed (campaigns_want_claim), so that the sender
 * never spins on a claim it would not run.
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
	return again && wasend_campaigns_want_claim();
}

/*
 * Take the rows a committed claim returned: queue them at their numbers,
 * count them held and move the cursors (up to each row's advance: not past
 * a row the claim left for later).  A row without a body was not claimed
 * for sending (it waits for a limit, or failed as suppressed): only the
 * cursor moves past it.
 */
void
wasend_campaigns_claimed(const ClaimedRow *rows, int nrows)
{
	CampaignState *cs;
	int			i;

	for (i = 0; i < nrows; i++)
	{
		cs = wasend_campaign_find(rows[i].campaign_id);
		if (cs == NULL)
			elog(ERROR, "wasend: claimed a row of unknown campaign " INT64_FORMAT,
				 rows[i].campaign_id);
		cs->claim_after = Max(cs->claim_after, rows[i].advance);
		if (rows[i].body == NULL)
			continue;
		wasend_number_push(wasend_number_get(cs->number_id), &rows[i]);
		wasend_hold(rows[i].campaign_id, 1);
	}
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
