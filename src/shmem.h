/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		The registry in shared memory: the launcher, the databases' slots
 *		and the senders' slots; and the wake-ups that go through it.
 *		shmem.c owns it.
 *
 * The rate gate (rate_gate.c) and the metrics (metrics.c) keep their own
 * shared structs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SHMEM_H
#define WASEND_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "latency.h"

/* Sender slots in shared memory, for all databases together. */
#define WASEND_MAX_SENDERS		64

/* Databases the launcher keeps track of (with or without the extension). */
#define WASEND_MAX_DATABASES	256

/*
 * What each sender publishes about itself; read by wasend_worker_stats().
 * dboid, token, pid and latch are written under wasend_state->lock (the
 * supervisor fills the slot before starting the sender, which adds its pid
 * and latch); the counters are atomics that only the slot's sender writes.
 */
typedef struct WasendSenderSlot
{
	Oid			dboid;			/* database of the sender; InvalidOid = free */
	int64		token;			/* claim token the supervisor gave this slot's
								 * sender (claimed_by of its rows); 0 = no
								 * sender started in this slot */
	pid_t		pid;			/* 0 until the sender registered */
	Latch	   *latch;			/* sender's process latch */
	pg_atomic_uint64 db_retries;	/* steps skipped (a lock) or retried */
	pg_atomic_uint32 inflight;	/* HTTP requests outstanding now */
	pg_atomic_uint32 held;		/* rows claimed (pending + in flight) */
	pg_atomic_uint64 sent;		/* rows recorded as sent */
	pg_atomic_uint64 failed;	/* rows recorded as failed */
	pg_atomic_uint64 conns_opened;	/* transfers that opened a connection */
	pg_atomic_uint64 conns_reused;	/* transfers that reused one */
	pg_atomic_uint64 latency_us_sum;	/* sum of request latencies */
	pg_atomic_uint64 requests;	/* completed requests */
	pg_atomic_uint32 hold_target;	/* rows it means to hold (wasend_numbers_budget) */
	pg_atomic_uint32 awaiting_durable;	/* rows held back until their claim
										 * is durable (durability.c) */
	pg_atomic_uint64 awaiting_since;	/* TimestampTz they began to; 0 */
	pg_atomic_uint64 latency_hist[WASEND_LATENCY_BUCKETS];	/* latency.c */
	pg_atomic_uint64 added_hist[WASEND_LATENCY_BUCKETS];
} WasendSenderSlot;

/* What the launcher knows of one database; see launcher.c. */
typedef enum WasendDbState
{
	WASEND_DB_NEW = 0,			/* not looked at yet */
	WASEND_DB_PROBING,			/* a supervisor starts and looks */
	WASEND_DB_RUNNING,			/* the extension is there: senders run */
	WASEND_DB_ABSENT			/* no extension (as of probed_generation);
								 * the launcher gives the slot back */
} WasendDbState;

/*
 * Why a database's senders could not be started (see shortage below).
 */
typedef enum WasendShortage
{
	WASEND_SHORT_NONE = 0,
	WASEND_SHORT_WORKER,		/* no background worker slot for its
								 * supervisor or a sender
								 * (max_worker_processes) */
	WASEND_SHORT_SENDER_SLOT	/* all WASEND_MAX_SENDERS sender slots taken */
} WasendShortage;

/*
 * One database's slot.  Every field is written under wasend_state->lock:
 * by the launcher (taking and freeing slots, states), by the database's
 * supervisor (pid, latch, state after its look) and by a backend that
 * commits CREATE EXTENSION or a command that needs the database alone.
 */
typedef struct WasendDbSlot
{
	Oid			dboid;			/* InvalidOid = free slot */
	WasendDbState state;
	pid_t		pid;			/* the database's supervisor, 0 = none */
	Latch	   *latch;			/* its latch */
	uint64		probed_generation;	/* extension_generation of the last look */
	int64		hold_until;		/* no supervisor before (monotonic us): the
								 * database is being dropped, renamed or
								 * copied */
	int64		last_start;		/* when a supervisor was last started */
	bool		recheck;		/* a CREATE EXTENSION committed while it was
								 * being looked at: look again */
	bool		copy;			/* RUNNING, but a copy of the database the
								 * extension was created in, that may not
								 * send (database_identity): left out of the
								 * census; written by its supervisor */
	WasendShortage shortage;	/* the last start of its supervisor or of a
								 * sender failed for lack of a slot, and not
								 * every sender runs since; read by
								 * wasend._senders_blocked() */
} WasendDbSlot;

/* room for the names of the databases that have the extension, for a log line */
#define WASEND_CENSUS_NAMES		512

/*
 * Which databases have the extension, as the launcher's last pass found
 * them: the webhook endpoint with wasend.database empty stores into the one
 * database there is.  Written by the launcher under wasend_state->lock.
 */
typedef struct WasendCensus
{
	bool		settled;		/* every listed database was looked at, or
								 * could not be (no worker slot for its
								 * supervisor), or two have the extension:
								 * no more to know */
	uint64		generation;		/* extension_generation of that pass */
	int			count;			/* databases found with the extension, copies
								 * that may not send left out */
	Oid			dboid;			/* the one, when count is 1 */
	char		names[WASEND_CENSUS_NAMES]; /* "a, b", for the log */
	bool		listed;			/* the launcher has read pg_database */
	bool		named_exists;	/* a database named wasend.database (when
								 * set) exists and allows connections */
} WasendCensus;

typedef struct WasendShared
{
	/*
	 * Protects the launcher's fields and every slot below: shared to read
	 * them, exclusive to write.  An LWLock, not a spinlock: its holders scan
	 * the 256 database slots and 64 sender slots, far more than the few
	 * instructions a spinlock may cover.
	 */
	LWLock	   *lock;
	pid_t		launcher_pid;	/* written by the launcher */
	Latch	   *launcher_latch;

	/* bumped at the commit of every CREATE EXTENSION wasend */
	pg_atomic_uint64 extension_generation;

	WasendDbSlot databases[WASEND_MAX_DATABASES];

	/* the databases that have the extension (launcher.c) */
	WasendCensus census;

	/*
	 * The webhook worker and the database it is connected to (InvalidOid:
	 * none), so that a DROP, RENAME or copy of that database can ask it to
	 * let go (launcher.c release_database).  Written by the webhook worker.
	 */
	pid_t		webhook_pid;
	Oid			webhook_dboid;

	/* bumped at the commit of every control change (start, pause, ...) */
	pg_atomic_uint64 generation;

	WasendSenderSlot senders[WASEND_MAX_SENDERS];
} WasendShared;

/* NULL until attached; NULL for good when wasend was not preloaded */
extern WasendShared *wasend_state;

extern Size wasend_shmem_size(void);
extern void wasend_shmem_request_locks(void);
extern void wasend_shmem_init(void);
extern void wasend_db_slot_take(WasendDbSlot *db, Oid dboid);
extern void wasend_wake_senders(void);
extern void wasend_wake_launcher(void);
extern void wasend_extension_created(void);

#endif							/* WASEND_SHMEM_H */
