/*-------------------------------------------------------------------------
 *
 * claim_plan.c
 *		What a sender claims: which campaigns, how many rows each, within
 *		the budget its numbers need; and where the claimed rows go.
 *
 * The one module that knows both the campaigns (campaign_cache.c) and the
 * numbers' FIFOs (number_queue.c); neither of those knows the other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"

#include "campaign_cache.h"
#include "claim_plan.h"
#include "number_queue.h"
#include "settings.h"

/* A number's highest priority among the campaigns that ask, in one plan. */
typedef struct NumberTop
{
	int64		number_id;		/* hash key */
	int			priority;		/* highest priority of its campaigns that
								 * want rows */
	int			count;			/* how many of them have it */
} NumberTop;

/*
 * Replace the running set with the one just read from the database: the
 * numbers first (their rate, id, token; which of them this sender claims,
 * being share_ordinal of share_count senders), then the campaigns (see
 * campaigns_begin_refresh for the cursors and rewinds).
 */
void
wasend_claim_plan_refresh(const RunningCampaign *rc, int n, bool rewinds,
						  int share_ordinal, int share_count)
{
	int			i;

	wasend_numbers_begin_refresh(share_ordinal, share_count);
	wasend_campaigns_begin_refresh(rewinds);
	for (i = 0; i < n; i++)
	{
		NumberState *ns = wasend_number_get(rc[i].number_id);

		wasend_number_refresh(ns, rc[i].rate, rc[i].phone_number_id,
							  rc[i].access_token);
		/* a number this sender just took over: its cursors start over */
		(void) wasend_campaign_refresh(&rc[i], ns->mine && !ns->was_mine);
	}
	wasend_campaigns_end_refresh();
}

/*
 * The rows this sender may still claim: what its numbers need, less what
 * it holds and the answers not yet recorded (rows still 'sending' in the
 * table).
 */
static int
claim_budget(int unrecorded)
{
	return wasend_numbers_budget() - wasend_campaigns_held() - unrecorded;
}

/*
 * The rows this sender may still hold at all (wasend.max_inflight, less
 * what it holds and the answers not yet recorded).  The transactional
 * lanes may claim into the part of it beyond claim_budget(), each up to
 * its number's target of rows waiting at the front of the number's FIFO
 * (lane_extra): their rows go ahead of the campaign rows that filled the
 * budget, so several committed together are claimed together even when
 * the campaigns keep the FIFOs full, and no lane holds more than about a
 * second of its number's rate that way, whatever its backlog.
 */
static int
lane_room(int unrecorded)
{
	return wasend_max_inflight - wasend_campaigns_held() - unrecorded;
}

/*
 * How many rows a lane of number ns may claim beyond the budget, out of
 * extra rows of room above it (lane_room).
 */
static int
lane_extra(NumberState *ns, int extra)
{
	return Min(extra, Max(wasend_number_target(ns) -
						  wasend_number_priority_rows(ns), 0));
}

/*
 * The number of a campaign that may claim: running, not dry, its number
 * active and claimed by this sender; NULL otherwise.
 */
static NumberState *
claiming_number(const CampaignState *cs)
{
	NumberState *ns;

	if (!cs->running || cs->dry)
		return NULL;
	ns = wasend_number_find(cs->number_id);
	if (ns == NULL || !ns->active || !ns->mine)
		return NULL;
	return ns;
}

/*
 * Does some running campaign want more rows claimed?  A number wants
 * rows when its FIFO holds less than half of a claim's worth.  Never
 * while the sender is stopping.
 */
bool
wasend_claim_wanted(int unrecorded, bool stopping)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	bool		want = false;
	int			target = wasend_numbers_budget();
	int			budget = target - wasend_campaigns_held() - unrecorded;
	bool		lanes_may = lane_room(unrecorded) > 0;

	if ((budget <= 0 && !lanes_may) || stopping)
		return false;
	wasend_campaigns_scan(&seq);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns = claiming_number(cs);

		if (ns == NULL)
			continue;
		/*
		 * A transactional lane that is not dry wants a claim whatever the
		 * FIFO holds: its rows go ahead of it.  A campaign wants one when
		 * its number's FIFO runs low, and a claim costs a statement: not
		 * for a handful of rows.
		 */
		if ((cs->transactional &&
			 (budget > 0 || (lanes_may && lane_extra(ns, 1) > 0))) ||
			(!cs->transactional &&
			 ns->count * 2 < wasend_number_target(ns) &&
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
 * Does a campaign want to be claimed again at once (campaigns_mark_dry)?
 * Only while it may be claimed (claim_wanted), so that the sender never
 * spins on a claim it would not run.
 */
bool
wasend_claim_again(int unrecorded, bool stopping)
{
	return wasend_campaigns_claim_again() &&
		wasend_claim_wanted(unrecorded, stopping);
}

/*
 * Add a campaign to the request: lim rows, and its cursor.
 */
static void
request_add(ClaimRequest *req, CampaignState *cs, int lim)
{
	req->ids[req->n] = cs->campaign_id;
	req->lims[req->n] = lim;
	req->scans[req->n] = lim + cs->scan_extra;
	req->after[req->n] = cs->claim_after;
	cs->claim_again = false;
	req->n++;
}

/*
 * How many campaigns that are not lanes ask for rows.
 */
static int
campaigns_asking(void)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int			n = 0;

	wasend_campaigns_scan(&seq);
	while ((cs = hash_seq_search(&seq)) != NULL)
		if (!cs->transactional && claiming_number(cs) != NULL)
			n++;
	return n;
}

/*
 * First pass of a plan: the transactional lanes ask for a batch each,
 * whatever their number's FIFO holds (their rows go to the front), before
 * any campaign takes the budget; and each number's highest priority among
 * its campaigns, and how many have it, go into tops.  When campaigns ask
 * too, the lanes ask for half the budget at most: the budget follows
 * Little's law (number_queue.c) and may be a few dozen rows, and a lane
 * asking for all of it would leave none to its number's campaigns in every
 * claim (a lane usually has nothing, and marks itself dry only once the
 * claim has run).  Beyond that share the lanes may use the room that
 * wasend.max_inflight leaves above the budget (lane_room), which the
 * campaigns never take.  Returns the budget left.
 */
static int
plan_lanes(ClaimRequest *req, HTAB *tops, int budget, int room)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;
	int			share = Max(budget, 0);
	int			extra = Max(room - share, 0);

	if (campaigns_asking() > 0)
		share = (share + 1) / 2;

	wasend_campaigns_scan(&seq);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns;
		NumberTop  *top;
		bool		found;

		if ((ns = claiming_number(cs)) == NULL)
			continue;
		if (cs->transactional)
		{
			int			above = lane_extra(ns, extra);
			int			lim = Min(wasend_batch_size, share + above);

			if (lim > 0)
			{
				/* the room above the budget goes first */
				int			from_budget = Max(lim - above, 0);

				request_add(req, cs, lim);
				extra -= lim - from_budget;
				share -= from_budget;
				budget -= from_budget;
			}
			continue;
		}
		top = hash_search(tops, &cs->number_id, HASH_ENTER, &found);
		if (!found || cs->priority > top->priority)
		{
			top->priority = cs->priority;
			top->count = 0;
		}
		if (cs->priority == top->priority)
			top->count++;
	}
	return budget;
}

/*
 * Second pass of a plan: the campaigns of a number's highest priority
 * share the room left in its FIFO equally, so that they share the
 * number's rate; lower priorities wait until those run dry.
 */
static void
plan_campaigns(ClaimRequest *req, HTAB *tops, int budget)
{
	HASH_SEQ_STATUS seq;
	CampaignState *cs;

	wasend_campaigns_scan(&seq);
	while ((cs = hash_seq_search(&seq)) != NULL)
	{
		NumberState *ns;
		NumberTop  *top;
		int			room;
		int			lim;

		if (cs->transactional || budget <= 0 ||
			(ns = claiming_number(cs)) == NULL)
			continue;
		top = hash_search(tops, &cs->number_id, HASH_FIND, NULL);
		if (top == NULL || cs->priority != top->priority)
			continue;
		room = wasend_number_target(ns) - ns->count;
		lim = Min((room + top->count - 1) / Max(top->count, 1), budget);
		if (lim <= 0)
			continue;
		request_add(req, cs, lim);
		budget -= lim;
	}
}

/*
 * Fill req (arrays with room for campaigns_count() entries) with what to
 * claim: per campaign, how many rows, how many due rows to look at for
 * them, and the keyset cursor.  Returns how many campaigns ask.
 */
int
wasend_claim_plan(ClaimRequest *req, int unrecorded)
{
	HASHCTL		ctl;
	HTAB	   *tops;
	int			budget;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(NumberTop);
	ctl.hcxt = CurrentMemoryContext;
	tops = hash_create("wasend claim plan", 64, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	req->n = 0;
	budget = plan_lanes(req, tops, claim_budget(unrecorded), lane_room(unrecorded));
	plan_campaigns(req, tops, budget);
	hash_destroy(tops);
	return req->n;
}

/*
 * Take the rows a committed claim returned: move the cursors, count them
 * held (campaign_claimed_row) and queue those claimed for sending at
 * their numbers, to start once the claim's commit (ending at claim_lsn)
 * is durable.
 */
void
wasend_claim_take(const ClaimedRow *rows, int nrows, XLogRecPtr claim_lsn)
{
	int			i;

	for (i = 0; i < nrows; i++)
	{
		CampaignState *cs = wasend_campaign_claimed_row(&rows[i]);

		if (rows[i].body != NULL)
			wasend_number_push(wasend_number_get(cs->number_id), &rows[i],
							   claim_lsn);
	}
}

/*
 * Take out of the FIFOs the rows of campaigns that no longer run (every
 * row with drop_all), for them to be given back (numbers_take_stopped).
 */
int
wasend_claim_take_stopped(int64 *ids, int64 *campaign_ids, bool drop_all)
{
	return wasend_numbers_take_stopped(ids, campaign_ids,
									   wasend_campaign_sends, drop_all);
}
