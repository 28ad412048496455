/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		The registry in shared memory (launcher, database slots, sender
 *		slots) and the wake-ups that go through it.
 *
 * wasend_state->lock protects every slot; the generations are atomics so
 * that a worker can see a change without taking the lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"

#include "shmem.h"
#include "latency.h"

/* the LWLock tranche of wasend_state->lock */
#define WASEND_REGISTRY_TRANCHE	"wasend"

WasendShared *wasend_state = NULL;

/*
 * Size of the registry: one fixed struct.
 */
Size
wasend_shmem_size(void)
{
	return MAXALIGN(sizeof(WasendShared));
}

/*
 * Ask for the registry's LWLock (from the shmem request hook).
 */
void
wasend_shmem_request_locks(void)
{
	RequestNamedLWLockTranche(WASEND_REGISTRY_TRANCHE, 1);
}

/*
 * Create or attach to the registry (from the shmem startup hook, which
 * holds AddinShmemInitLock).
 */
void
wasend_shmem_init(void)
{
	bool		found;

	wasend_state = ShmemInitStruct("wasend", MAXALIGN(sizeof(WasendShared)), &found);
	if (!found)
	{
		int			i;
		int			j;

		memset(wasend_state, 0, sizeof(WasendShared));
		wasend_state->lock = &(GetNamedLWLockTranche(WASEND_REGISTRY_TRANCHE))->lock;
		pg_atomic_init_u64(&wasend_state->generation, 0);
		pg_atomic_init_u64(&wasend_state->extension_generation, 0);
		for (i = 0; i < WASEND_MAX_SENDERS; i++)
		{
			WasendSenderSlot *s = &wasend_state->senders[i];

			pg_atomic_init_u32(&s->inflight, 0);
			pg_atomic_init_u32(&s->held, 0);
			pg_atomic_init_u64(&s->sent, 0);
			pg_atomic_init_u64(&s->failed, 0);
			pg_atomic_init_u64(&s->conns_opened, 0);
			pg_atomic_init_u64(&s->conns_reused, 0);
			pg_atomic_init_u64(&s->latency_us_sum, 0);
			pg_atomic_init_u64(&s->requests, 0);
			pg_atomic_init_u32(&s->hold_target, 0);
			pg_atomic_init_u32(&s->awaiting_durable, 0);
			pg_atomic_init_u64(&s->awaiting_since, 0);
			for (j = 0; j < WASEND_LATENCY_BUCKETS; j++)
			{
				pg_atomic_init_u64(&s->latency_hist[j], 0);
				pg_atomic_init_u64(&s->added_hist[j], 0);
			}
			pg_atomic_init_u64(&s->db_retries, 0);
		}
	}
}

/*
 * Give a free database slot to dboid, as a database not looked at yet.
 * The caller holds wasend_state->lock.
 */
void
wasend_db_slot_take(WasendDbSlot *db, Oid dboid)
{
	db->dboid = dboid;
	db->state = WASEND_DB_NEW;
	db->pid = 0;
	db->latch = NULL;
	db->probed_generation = 0;
	db->hold_until = 0;
	db->last_start = 0;
	db->recheck = false;
	db->copy = false;
	db->shortage = WASEND_SHORT_NONE;
}

/*
 * Wake the senders of this database (and its supervisor): bump the control
 * generation so senders re-read campaign and number states, then set their
 * latches.  Called at the commit of a transaction that changed something
 * they act on; see sql_api.c.  (Senders of other databases see the bump
 * at their next turn and refresh once: harmless.)
 */
void
wasend_wake_senders(void)
{
	int			i;
	Latch	   *latches[WASEND_MAX_SENDERS + WASEND_MAX_DATABASES];
	int			n = 0;

	if (wasend_state == NULL)
		return;

	pg_atomic_fetch_add_u64(&wasend_state->generation, 1);

	LWLockAcquire(wasend_state->lock, LW_SHARED);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
		if (wasend_state->senders[i].pid != 0 && wasend_state->senders[i].latch &&
			wasend_state->senders[i].dboid == MyDatabaseId)
			latches[n++] = wasend_state->senders[i].latch;
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
		if (wasend_state->databases[i].dboid == MyDatabaseId &&
			wasend_state->databases[i].latch != NULL)
			latches[n++] = wasend_state->databases[i].latch;
	LWLockRelease(wasend_state->lock);

	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * A CREATE EXTENSION wasend committed in this database (called from the
 * commit callback, see sql_api.c): take a slot for it, so that the
 * launcher looks at it first, whatever waits to be looked at; only when
 * every slot is taken, let the launcher look again at every database where
 * the extension was missing.
 */
void
wasend_extension_created(void)
{
	bool		done = false;
	int			free_idx = -1;
	int			i;

	if (wasend_state == NULL)
		return;
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		WasendDbSlot *db = &wasend_state->databases[i];

		if (db->dboid == MyDatabaseId)
		{
			/* a look that may have come before this commit: look again */
			if (db->state == WASEND_DB_ABSENT)
				db->state = WASEND_DB_NEW;
			else if (db->state == WASEND_DB_PROBING)
				db->recheck = true;
			done = true;
			break;
		}
		if (free_idx < 0 && db->dboid == InvalidOid)
			free_idx = i;
	}
	if (!done && free_idx >= 0)
	{
		wasend_db_slot_take(&wasend_state->databases[free_idx], MyDatabaseId);
		done = true;
	}
	LWLockRelease(wasend_state->lock);

	/* no slot free: the launcher looks again at every database */
	if (!done)
		pg_atomic_fetch_add_u64(&wasend_state->extension_generation, 1);
	wasend_wake_launcher();
}

/*
 * Set the launcher's latch, if it runs: it looks at the databases again.
 */
void
wasend_wake_launcher(void)
{
	Latch	   *latch;

	if (wasend_state == NULL)
		return;
	LWLockAcquire(wasend_state->lock, LW_SHARED);
	latch = wasend_state->launcher_latch;
	LWLockRelease(wasend_state->lock);
	if (latch != NULL)
		SetLatch(latch);
}
