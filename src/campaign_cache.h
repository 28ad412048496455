/*-------------------------------------------------------------------------
 *
 * campaign_cache.h
 *		Per campaign: what a sender knows of the running set, its claim
 *		cursors, the rows it holds, the campaigns set aside;
 *		campaign_cache.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_CAMPAIGN_CACHE_H
#define WASEND_CAMPAIGN_CACHE_H

#include "port/atomics.h"
#include "utils/hsearch.h"

#include "breaker.h"
#include "queue.h"

/* What this sender knows about one campaign. */
typedef struct CampaignState
{
	int64		campaign_id;	/* hash key */
	int64		number_id;
	bool		running;		/* in the last refresh's running set */
	bool		running_before; /* ... and in the one before */
	bool		dry;			/* last claim found fewer rows than asked */
	bool		lock_logged;	/* said that completing it waits on a lock */
	int			held;			/* rows of it we hold (pending + in flight) */
	int64		claim_after;	/* keyset cursor of claims; see
								 * campaigns_begin_refresh */
	int64		rewind_until;	/* until then (monotonic us) every refresh
								 * rewinds the cursor: an error answer may
								 * have put a row back behind it */
	int			priority;		/* campaigns.priority */
	bool		transactional;	/* the number's wasend_send lane */
	int			scan_extra;		/* due rows a claim looks at beyond what it
								 * asks for: rows of it were found waiting */
	bool		claim_again;	/* its last claim looked at all it might and
								 * found only rows that wait: claim again
								 * now, not at the next poll */
	Breaker		breaker;
} CampaignState;

/* What failed on a campaign set aside (campaign_fault). */
typedef enum CampaignFaultStep
{
	FAULT_REFRESH = 1,			/* reading the running set */
	FAULT_CLAIM = 2				/* claiming its rows */
} CampaignFaultStep;

extern void wasend_campaigns_init(MemoryContext cxt, pg_atomic_uint32 *held_gauge);
extern CampaignState *wasend_campaign_find(int64 campaign_id);
extern bool wasend_campaign_sends(int64 campaign_id);
extern int	wasend_campaigns_count(void);
extern void wasend_campaigns_scan(HASH_SEQ_STATUS *seq);
extern void wasend_campaigns_begin_refresh(bool rewinds);
extern CampaignState *wasend_campaign_refresh(const RunningCampaign *rc,
											  bool number_taken_over);
extern void wasend_campaigns_end_refresh(void);
extern void wasend_campaign_note_error(int64 campaign_id);
extern void wasend_hold(int64 campaign_id, int delta);
extern int	wasend_campaigns_held(void);
extern CampaignState *wasend_campaign_claimed_row(const ClaimedRow *row);
extern bool wasend_campaigns_claim_again(void);
extern void wasend_campaigns_mark_dry(const int64 *ids, const int32 *lims,
									  const int32 *scans, int n,
									  const ClaimedRow *rows, int nrows);
extern int	wasend_campaigns_dry_done(int64 *ids);

extern int64 wasend_campaign_fault(int64 campaign_id, CampaignFaultStep step);
extern int	wasend_campaign_faults_excluded(int64 *excl);
extern int	wasend_campaign_faults_count(void);
extern int	wasend_campaign_faults_passed(const int64 *ids, int n,
										  CampaignFaultStep step, bool all,
										  int64 *cleared);

#endif							/* WASEND_CAMPAIGN_CACHE_H */
