/*-------------------------------------------------------------------------
 *
 * sender.h
 *		A sender: the state one sender process owns, passed to its
 *		database cycle; sender.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SENDER_H
#define WASEND_SENDER_H

#include "postgres.h"

#include "fmgr.h"

#include "clock.h"
#include "db_cycle.h"
#include "durability.h"
#include "limits_reader.h"
#include "queue.h"
#include "shmem.h"

/* What one sender process owns; made by wasend_sender_main. */
typedef struct Sender
{
	/* its identity */
	int			index;			/* its slot in wasend_state->senders */
	Oid			dboid;
	int64		token;			/* claim token its supervisor gave it */
	WasendSenderSlot *slot;
	MemoryContext cxt;			/* everything it keeps across turns */

	/* answers not yet recorded */
	ResultBatch results;
	bool		results_have_error; /* a non-200 answer waits in results */
	LimitsReader limits;		/* answers of limits GETs */

	/* numbers whose API version warning it logged (note_version_warning) */
	int64	   *warned_numbers;
	int			nwarned;
	int			warned_cap;

	/* rows taken out of the FIFOs and not yet given back (db_cycle.c) */
	int64	   *release_ids;
	int64	   *release_campaigns;
	int			nrelease;
	int			release_cap;

	/* its loop */
	DbCycleOutcome cycle;		/* what the last database cycle decided */
	bool		rewinds;		/* the next refresh rewinds every cursor */
	int			polls;
	uint64		seen_generation;
	int64		next_poll;		/* monotonic us */
	int64		drain_deadline; /* stopping: monotonic us; 0 = not yet */
	int64		next_pool_trim;

	/* claims whose rows wait until they are durable (durability.c) */
	WasendDurableWait durable;
} Sender;

extern PGDLLEXPORT void wasend_sender_main(Datum main_arg);

#endif							/* WASEND_SENDER_H */
