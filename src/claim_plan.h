/*-------------------------------------------------------------------------
 *
 * claim_plan.h
 *		What to claim, and where claimed rows go: the one module that
 *		knows both the campaigns and the numbers; claim_plan.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_CLAIM_PLAN_H
#define WASEND_CLAIM_PLAN_H

#include "access/xlogdefs.h"

#include "queue.h"

/* What one claim asks for, per campaign (parallel arrays). */
typedef struct ClaimRequest
{
	int64	   *ids;
	int32	   *lims;			/* rows to claim */
	int32	   *scans;			/* due rows to look at for them */
	int64	   *after;			/* keyset cursor */
	int			n;
} ClaimRequest;

extern void wasend_claim_plan_refresh(const RunningCampaign *rc, int n,
									  bool rewinds, int share_ordinal,
									  int share_count);
extern bool wasend_claim_wanted(int unrecorded, bool stopping);
extern bool wasend_claim_again(int unrecorded, bool stopping);
extern int	wasend_claim_plan(ClaimRequest *req, int unrecorded);
extern void wasend_claim_take(const ClaimedRow *rows, int nrows,
							  XLogRecPtr claim_lsn);
extern int	wasend_claim_take_stopped(int64 *ids, int64 *campaign_ids,
									  bool drop_all);

#endif							/* WASEND_CLAIM_PLAN_H */
