/*-------------------------------------------------------------------------
 *
 * db_cycle.h
 *		A sender's database cycle; db_cycle.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_DB_CYCLE_H
#define WASEND_DB_CYCLE_H

struct Sender;

/* What a database cycle decided, for the sender's loop. */
typedef struct DbCycleOutcome
{
	bool		refreshed;		/* committed, and the running set was read
								 * (when asked) */
	int64		not_before;		/* no cycle before (monotonic us): a second
								 * after a failed one */
	int64		record_not_before;	/* the answers waiting are not written
									 * before (monotonic us): a lock was in
									 * the way */
	int64		next_scheduled_start;	/* monotonic us; 0 = none */
} DbCycleOutcome;

extern DbCycleOutcome wasend_db_cycle(struct Sender *s, bool refresh,
									  bool release_all);

#endif							/* WASEND_DB_CYCLE_H */
