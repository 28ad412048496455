/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: finds the databases that have the extension and keeps
 *		a supervisor running in each; and the ProcessUtility hook that
 *		releases a database before DROP, RENAME or a copy of it.
 *
 * The constraint: the WASEND_MAX_DATABASES shared slots are held only by
 * databases that have the extension and those being looked at (at most
 * MAX_STARTING at once), so empty databases cannot fill them; each slot
 * moves through WasendDbState (shmem.h), one function per transition.
 * The full description: docs/internals/launcher.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/varlena.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "clock.h"
#include "launcher.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"
#include "worker_session.h"

/* look at pg_database at least this often, in ms */
#define RESCAN_MS			10000

/* a supervisor that exited is started again after this, in us */
#define RESTART_DELAY_US	(1000 * 1000)

/* supervisors starting at once, at most */
#define MAX_STARTING		4

/* a DROP/RENAME/copy holds its database at most this long, in us */
#define HOLD_US				((int64) 60 * 1000 * 1000)

/* and waits at most this long for the supervisor and senders to go, in us */
#define RELEASE_WAIT_US		((int64) 20 * 1000 * 1000)

/* the database a ProcessUtility hook is releasing, if any (see the hook) */
static Oid	releasing_oid = InvalidOid;

/* A database as listed in pg_database. */
typedef struct ListedDb
{
	Oid			oid;
	char		name[NAMEDATALEN];
} ListedDb;

/* the supervisors this launcher started and has not seen exit */
static BackgroundWorkerHandle *handles[WASEND_MAX_DATABASES];

/*
 * A database the launcher looked at and found without the extension: it
 * holds no shared slot, and is not looked at again unless the generation
 * moves (see wasend_extension_created).
 */
typedef struct AbsentDb
{
	Oid			oid;			/* hash key */
	uint64		generation;		/* extension_generation of the look */
	uint64		listed_pass;	/* the last pass that listed it */
} AbsentDb;

static HTAB *absent_dbs = NULL;
static uint64 pass_no = 0;

static ProcessUtility_hook_type prev_utility_hook = NULL;

/* warnings said once per value, or once a minute */
static WasendWarnState databases_warned;	/* wasend.databases unusable */
static WasendWarnState workers_warned;	/* max_worker_processes reached */
static WasendWarnState slots_warned;	/* every database slot taken */
#define WARN_INTERVAL_US	(60 * USECS_PER_SEC)

/*
 * Is the database named in wasend.databases ('*': every database)?
 */
static bool
database_wanted(const char *name)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		wanted = false;

	if (wasend_databases == NULL || strcmp(wasend_databases, "*") == 0)
		return true;
	copy = pstrdup(wasend_databases);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		if (wasend_warn_changed(&databases_warned, wasend_databases))
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("wasend.databases is not a list of database names: \"%s\"", wasend_databases),
					 errhint("Give * or names separated by commas, e.g. app,reports; no senders run until it is fixed.")));
		return false;
	}
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			wanted = true;
	list_free(names);
	pfree(copy);
	return wanted;
}

/*
 * The databases a supervisor may run in: connections allowed, not a
 * template, not half dropped, named in wasend.databases, all of them
 * (palloc'd into *outp).  Read from the shared catalog in a transaction
 * of our own, as autovacuum's launcher does (we are connected to no
 * database).
 */
/* list_databases saw the database wasend.database names (for the webhook) */
static bool named_database_exists = false;

static int
list_databases(ListedDb **outp)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			n = 0;
	int			max = 64;
	ListedDb   *out = palloc(sizeof(ListedDb) * max);

	named_database_exists = false;
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (wasend_database != NULL && wasend_database[0] != '\0' &&
			db->datallowconn && db->datconnlimit != -2 &&
			strcmp(NameStr(db->datname), wasend_database) == 0)
			named_database_exists = true;
		if (!db->datallowconn || db->datistemplate || db->datconnlimit == -2 ||
			!database_wanted(NameStr(db->datname)))
			continue;
		if (n == max)
		{
			max *= 2;
			out = repalloc(out, sizeof(ListedDb) * max);
		}
		out[n].oid = db->oid;
		strlcpy(out[n].name, NameStr(db->datname), NAMEDATALEN);
		n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	*outp = out;
	return n;
}

/*
 * Start the supervisor of database slot idx.  Returns false when no worker
 * could be registered (max_worker_processes): the next pass tries again.
 */
static bool
start_supervisor(int idx, const char *dbname)
{
	WasendWorkerSpec spec;
	char		name[BGW_MAXLEN];

	snprintf(name, sizeof(name), "wasend supervisor (%s)", dbname);
	memset(&spec, 0, sizeof(spec));
	spec.name = name;
	spec.type = "wasend supervisor";
	spec.function = "wasend_supervisor_main";
	spec.database = true;
	spec.arg = Int32GetDatum(idx);
	spec.extra = &wasend_state->databases[idx].dboid;
	spec.extra_len = sizeof(Oid);
	if (wasend_register_worker(&spec, &handles[idx]))
		return true;
	if (wasend_warn_due(&workers_warned, WARN_INTERVAL_US))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("wasend could not start a supervisor for database \"%s\"", dbname),
				 errhint("Raise max_worker_processes: wasend needs one worker for its launcher, one supervisor and wasend.workers senders per database that has the extension, and one each for the webhook and metrics endpoints when they are on, besides PostgreSQL's own (logical replication launcher, parallel workers).")));
	return false;
}

/*
 * Order ListedDb by oid (for bsearch).
 */
static int
listed_cmp(const void *a, const void *b)
{
	Oid			x = ((const ListedDb *) a)->oid;
	Oid			y = ((const ListedDb *) b)->oid;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Is database oid among the ndbs listed (sorted by oid)?
 */
static bool
is_listed(const ListedDb *dbs, int ndbs, Oid oid)
{
	ListedDb	key;

	key.oid = oid;
	return bsearch(&key, dbs, ndbs, sizeof(ListedDb), listed_cmp) != NULL;
}

/*
 * Remember that database oid was found without the extension, as of
 * extension generation gen.  Launcher-local memory: such a database holds
 * no shared slot.
 */
static void
remember_absent(Oid oid, uint64 gen)
{
	AbsentDb   *a;

	if (absent_dbs == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(AbsentDb);
		absent_dbs = hash_create("wasend databases without the extension", 256,
								 &ctl, HASH_ELEM | HASH_BLOBS);
	}
	a = (AbsentDb *) hash_search(absent_dbs, &oid, HASH_ENTER, NULL);
	a->generation = gen;
	a->listed_pass = pass_no;
}

/*
 * Was database oid found without the extension, and has no CREATE
 * EXTENSION asked for a new look at every such database since (gen)?
 */
static bool
known_absent(Oid oid, uint64 gen)
{
	AbsentDb   *a;

	if (absent_dbs == NULL)
		return false;
	a = (AbsentDb *) hash_search(absent_dbs, &oid, HASH_FIND, NULL);
	if (a == NULL)
		return false;
	a->listed_pass = pass_no;
	return a->generation == gen;
}

/*
 * Forget the databases no longer listed (dropped, or left out of
 * wasend.databases) and those that have a slot now.
 */
static void
prune_absent(void)
{
	HASH_SEQ_STATUS seq;
	AbsentDb   *a;

	if (absent_dbs == NULL)
		return;
	hash_seq_init(&seq, absent_dbs);
	while ((a = (AbsentDb *) hash_seq_search(&seq)) != NULL)
		if (a->listed_pass != pass_no)
			(void) hash_search(absent_dbs, &a->oid, HASH_REMOVE, NULL);
}

/*
 * Give back the slots of the databases found without the extension, and
 * remember them in launcher-local memory instead; one that a CREATE
 * EXTENSION asked to be looked at again while it was being looked at
 * (recheck) keeps its slot and is looked at again.
 */
static void
release_absent_slots(int64 now)
{
	Oid			oids[WASEND_MAX_DATABASES];
	uint64		gens[WASEND_MAX_DATABASES];
	int			n = 0;
	int			i;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		WasendDbSlot *db = &wasend_state->databases[i];

		if (db->dboid == InvalidOid || db->state != WASEND_DB_ABSENT ||
			db->pid != 0 || handles[i] != NULL || now < db->hold_until)
			continue;
		if (db->recheck)
		{
			db->recheck = false;
			db->state = WASEND_DB_NEW;
			continue;
		}
		oids[n] = db->dboid;
		gens[n] = db->probed_generation;
		n++;
		db->dboid = InvalidOid;
	}
	LWLockRelease(wasend_state->lock);
	for (i = 0; i < n; i++)
		remember_absent(oids[i], gens[i]);
}

/*
 * Say, at most once a minute, that a database cannot be looked at because
 * every slot is taken.
 */
static void
warn_slots_full(const char *dbname)
{
	if (!wasend_warn_due(&slots_warned, WARN_INTERVAL_US))
		return;
	ereport(WARNING,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("wasend keeps track of at most %d databases that have the extension or are being looked at; \"%s\" is not looked at",
					WASEND_MAX_DATABASES, dbname),
			 errhint("List the databases that send in wasend.databases.")));
}

/* What one pass of scan_databases works with. */
typedef struct ScanPass
{
	ListedDb   *dbs;			/* pg_database, sorted by oid */
	int			ndbs;
	uint64		gen;			/* extension_generation at the pass */
	int64		now;
	int			starting;		/* supervisors starting (probing) now */
	long		wait_ms;		/* how soon the next pass is due */
	bool		listed[WASEND_MAX_DATABASES];	/* slots matched this pass */
} ScanPass;

/*
 * Transition PROBING -> NEW: the supervisor of slot idx exited before it
 * could look, or could not be started; the database is looked at again.
 */
static void
probe_failed(int idx)
{
	WasendDbSlot *db = &wasend_state->databases[idx];

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (db->pid == 0 && db->state == WASEND_DB_PROBING)
		db->state = WASEND_DB_NEW;
	LWLockRelease(wasend_state->lock);
}

/*
 * Forget the supervisors that exited (or never got going).  Returns how
 * many of those still running are probing.
 */
static int
reap_supervisors(void)
{
	int			starting = 0;
	int			i;

	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		pid_t		pid;

		if (handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(handles[i]);
			handles[i] = NULL;
			probe_failed(i);
		}
		else
			starting += (wasend_state->databases[i].state == WASEND_DB_PROBING);
	}
	return starting;
}

/*
 * The slot of database oid, or -1; *free_idx gets the first free slot (-1:
 * none).  Caller holds wasend_state->lock.
 */
static int
find_slot(Oid oid, int *free_idx)
{
	int			i;

	*free_idx = -1;
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		if (wasend_state->databases[i].dboid == oid)
			return i;
		if (*free_idx < 0 && wasend_state->databases[i].dboid == InvalidOid)
			*free_idx = i;
	}
	return -1;
}

/*
 * Is the supervisor of slot idx due to start now?  Not while one runs or
 * is being started, while the database is held, or while MAX_STARTING
 * start; then by state: NEW starts, ABSENT starts again once a CREATE
 * EXTENSION asked for it, and a RUNNING or PROBING one that is gone
 * restarts after RESTART_DELAY_US.  Notes in sp->wait_ms when a start
 * that is not due yet will be.  Caller holds wasend_state->lock.
 */
static bool
slot_due(ScanPass *sp, int idx)
{
	WasendDbSlot *db = &wasend_state->databases[idx];
	int64		restart_at = db->last_start + RESTART_DELAY_US;

	if (db->pid != 0 || handles[idx] != NULL)
		return false;
	if (sp->now < db->hold_until)
	{
		sp->wait_ms = Min(sp->wait_ms, (long) ((db->hold_until - sp->now) / 1000) + 1);
		return false;
	}
	if (sp->starting >= MAX_STARTING)
		return false;
	switch (db->state)
	{
		case WASEND_DB_NEW:
			return true;
		case WASEND_DB_ABSENT:
			return db->probed_generation != sp->gen || db->recheck;
		case WASEND_DB_RUNNING:
		case WASEND_DB_PROBING:
			break;
	}
	/* running or probing, and gone: restart */
	if (sp->now >= restart_at)
		return true;
	sp->wait_ms = Min(sp->wait_ms, (long) ((restart_at - sp->now) / 1000) + 1);
	return false;
}

/*
 * Transition to PROBING (a RUNNING one stays RUNNING): its supervisor
 * starts now, as of this extension generation.  Caller holds
 * wasend_state->lock.
 */
static void
slot_starts(ScanPass *sp, int idx)
{
	WasendDbSlot *db = &wasend_state->databases[idx];

	db->probed_generation = sp->gen;
	db->last_start = sp->now;
	db->recheck = false;
	if (db->state != WASEND_DB_RUNNING)
		db->state = WASEND_DB_PROBING;
}

/*
 * Match one listed database with its slot and start its supervisor if it
 * is due.  with_slot: the first round, databases that have a slot; else
 * the second, a database not looked at yet (or looked at before a CREATE
 * EXTENSION that found no free slot), which takes a free slot only when
 * its look starts now.
 */
static void
visit_database(ScanPass *sp, const ListedDb *d, bool with_slot)
{
	int			idx;
	int			free_idx;
	bool		start = false;
	bool		full = false;

	if (!with_slot &&
		(known_absent(d->oid, sp->gen) || sp->starting >= MAX_STARTING))
		return;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	idx = find_slot(d->oid, &free_idx);
	if (with_slot ? idx < 0 : idx >= 0)
	{
		LWLockRelease(wasend_state->lock);
		return;
	}
	if (!with_slot)
	{
		if (free_idx < 0)
			full = true;
		else
		{
			idx = free_idx;
			wasend_db_slot_take(&wasend_state->databases[free_idx], d->oid);
		}
	}
	if (idx >= 0)
	{
		sp->listed[idx] = true;
		start = slot_due(sp, idx);
		if (start)
			slot_starts(sp, idx);
	}
	LWLockRelease(wasend_state->lock);

	if (full)
		warn_slots_full(d->name);
	else if (start)
	{
		if (start_supervisor(idx, d->name))
			sp->starting++;
		else
		{
			/* the database's backends say why nothing is sent */
			LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
			wasend_state->databases[idx].shortage = WASEND_SHORT_WORKER;
			LWLockRelease(wasend_state->lock);
			probe_failed(idx);
		}
	}
}

/*
 * Databases that are gone, or no longer in wasend.databases: their
 * supervisors are asked to stop (they stop their senders first), and
 * their slots are free once nobody uses them.  A database listed but not
 * matched in this pass (its CREATE EXTENSION took a slot meanwhile) keeps
 * its slot.
 */
static void
stop_unlisted(ScanPass *sp)
{
	pid_t		stop[WASEND_MAX_DATABASES];
	int			nstop = 0;
	int			i;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
	{
		WasendDbSlot *db = &wasend_state->databases[i];

		if (db->dboid == InvalidOid || sp->listed[i] ||
			is_listed(sp->dbs, sp->ndbs, db->dboid))
			continue;
		if (db->pid != 0)
			stop[nstop++] = db->pid;
		else if (handles[i] == NULL && sp->now >= db->hold_until)
			db->dboid = InvalidOid;
	}
	LWLockRelease(wasend_state->lock);
	for (i = 0; i < nstop; i++)
		kill(stop[i], SIGTERM);
}

/*
 * Publish which listed databases have the extension (wasend_state->census),
 * for the webhook endpoint that stores into the one database that has it.
 * Settled once every listed database is known to have the extension or
 * not as of this pass's generation, or as soon as two have it.  A copy
 * that may not send (its supervisor says so) is not counted: it is not
 * where notifications belong.  A database whose supervisor could not be
 * started (no worker slot) cannot be known until one is free, which may be
 * never: the census settles on the others rather than wait for it.
 */
static void
publish_census(ScanPass *sp)
{
	WasendCensus census;
	size_t		used = 0;
	int			j;

	memset(&census, 0, sizeof(census));
	census.listed = true;
	census.named_exists = named_database_exists;
	census.settled = true;
	census.generation = sp->gen;
	LWLockAcquire(wasend_state->lock, LW_SHARED);
	for (j = 0; j < sp->ndbs; j++)
	{
		const ListedDb *d = &sp->dbs[j];
		int			free_idx;
		int			idx;
		WasendDbSlot *db;

		/* a slot first: a CREATE EXTENSION takes one for a known-absent one */
		idx = find_slot(d->oid, &free_idx);
		if (idx < 0)
		{
			if (!known_absent(d->oid, sp->gen))
				census.settled = false; /* not looked at yet */
			continue;
		}
		db = &wasend_state->databases[idx];
		if (db->state == WASEND_DB_RUNNING && db->copy)
			continue;			/* a copy that may not send: not counted */
		if (db->state == WASEND_DB_NEW && db->pid == 0 &&
			db->shortage == WASEND_SHORT_WORKER)
			continue;			/* cannot be looked at: no worker slot */
		if (db->state == WASEND_DB_RUNNING)
		{
			census.count++;
			census.dboid = d->oid;
			if (used + strlen(d->name) + 6 < sizeof(census.names))
				used += snprintf(census.names + used, sizeof(census.names) - used,
								 "%s%s", used > 0 ? ", " : "", d->name);
			else if (used + 6 < sizeof(census.names))
				used += snprintf(census.names + used, sizeof(census.names) - used,
								 ", ...");
		}
		else if (db->state != WASEND_DB_ABSENT ||
				 db->probed_generation != sp->gen || db->recheck)
			census.settled = false; /* being looked at */
	}
	LWLockRelease(wasend_state->lock);
	if (census.count >= 2)
		census.settled = true;
	if (census.count != 1)
		census.dboid = InvalidOid;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	wasend_state->census = census;
	LWLockRelease(wasend_state->lock);
}

/*
 * One pass: match the database slots with pg_database and start the
 * supervisors that are due.  Databases that have a slot come first (those
 * with the extension, and one whose CREATE EXTENSION just took a slot);
 * then databases not looked at yet, each taking a free slot only when its
 * look can start.  Returns how soon (ms) a supervisor that is not due yet
 * will be, at most RESCAN_MS.
 */
static long
scan_databases(void)
{
	ScanPass	sp;
	int			j;

	memset(&sp, 0, sizeof(sp));
	sp.wait_ms = RESCAN_MS;
	sp.ndbs = list_databases(&sp.dbs);
	sp.gen = pg_atomic_read_u64(&wasend_state->extension_generation);
	sp.now = wasend_mono_us();

	pass_no++;
	qsort(sp.dbs, sp.ndbs, sizeof(ListedDb), listed_cmp);

	sp.starting = reap_supervisors();
	release_absent_slots(sp.now);

	for (j = 0; j < sp.ndbs; j++)
		visit_database(&sp, &sp.dbs[j], true);
	for (j = 0; j < sp.ndbs; j++)
		visit_database(&sp, &sp.dbs[j], false);
	publish_census(&sp);
	prune_absent();

	stop_unlisted(&sp);
	pfree(sp.dbs);
	return sp.wait_ms;
}

/*
 * Clear the launcher's entry in shared memory at exit.
 */
static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	if (wasend_state->launcher_pid == MyProcPid)
	{
		wasend_state->launcher_pid = 0;
		wasend_state->launcher_latch = NULL;
	}
	LWLockRelease(wasend_state->lock);
}

/*
 * Entry point of the launcher.
 */
void
wasend_launcher_main(Datum main_arg)
{
	wasend_worker_signals();

	wasend_worker_connect(NULL, InvalidOid, NULL, false);
	pgstat_report_appname("wasend launcher");

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	wasend_state->launcher_pid = MyProcPid;
	wasend_state->launcher_latch = MyLatch;
	LWLockRelease(wasend_state->lock);
	before_shmem_exit(launcher_detach, 0);

	ereport(LOG,
			(errmsg("wasend launcher started: senders run in every database that has the extension (%d each)",
					wasend_workers)));

	while (!ShutdownRequestPending)
	{
		int			rc;
		long		wait_ms;

		wasend_worker_interrupts();

		wait_ms = scan_databases();
		pgstat_report_activity(STATE_IDLE, NULL);

		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   wait_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
	}

	/* code 1: the postmaster starts a launcher again unless it is stopping */
	proc_exit(1);
}


/*
 * Before a command that needs a database to itself: hold it (no
 * supervisor starts, the webhook worker does not connect), stop its
 * supervisor and senders and the webhook worker connected to it, and wait
 * until they are gone (at most RELEASE_WAIT_US; the command then says who is still
 * connected).  Returns the database held, or InvalidOid.
 */
static Oid
release_database(const char *dbname)
{
	Oid			dboid;
	int64		deadline = wasend_mono_us() + RELEASE_WAIT_US;
	int			idx = -1;
	int			i;

	if (dbname == NULL || wasend_state == NULL)
		return InvalidOid;
	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId)
		return InvalidOid;
	/*
	 * Only for whoever may run the command: the owner of the database (or
	 * a superuser).  Anybody else's command fails on its own permission
	 * check, and must not stop the senders on its way.
	 */
#if PG_VERSION_NUM >= 160000
	/* PostgreSQL 16 replaced pg_database_ownercheck by object_ownercheck */
	if (!object_ownercheck(DatabaseRelationId, dboid, GetUserId()))
		return InvalidOid;
#else
	if (!pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
#endif
	releasing_oid = dboid;	/* lifted by the hook even if we are cancelled */

	for (;;)
	{
		pid_t		supervisor = 0;
		pid_t		webhook = 0;
		int			left = 0;

		LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
		if (idx < 0)
			for (i = 0; i < WASEND_MAX_DATABASES; i++)
				if (wasend_state->databases[i].dboid == dboid)
					idx = i;
		if (idx >= 0 && wasend_state->databases[idx].dboid == dboid)
		{
			wasend_state->databases[idx].hold_until = wasend_mono_us() + HOLD_US;
			supervisor = wasend_state->databases[idx].pid;
		}
		for (i = 0; i < WASEND_MAX_SENDERS; i++)
			if (wasend_state->senders[i].dboid == dboid && wasend_state->senders[i].pid != 0)
				left++;
		/* the webhook worker leaves too; the postmaster starts it again */
		if (idx >= 0 && wasend_state->webhook_dboid == dboid)
			webhook = wasend_state->webhook_pid;
		LWLockRelease(wasend_state->lock);

		if (idx < 0)
			return InvalidOid;	/* the launcher never looked at it */
		if (supervisor == 0 && left == 0 && webhook == 0)
			break;
		if (supervisor != 0)
			kill(supervisor, SIGTERM);
		if (webhook != 0)
			kill(webhook, SIGTERM);
		if (wasend_mono_us() >= deadline)
			break;
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	return dboid;
}

/*
 * After the command: lift the hold and let the launcher look again.
 */
static void
unhold_database(Oid dboid)
{
	int			i;

	LWLockAcquire(wasend_state->lock, LW_EXCLUSIVE);
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
		if (wasend_state->databases[i].dboid == dboid)
			wasend_state->databases[i].hold_until = 0;
	LWLockRelease(wasend_state->lock);
	wasend_wake_launcher();
}

/*
 * After the command, done or failed: lift the hold of the database it
 * released, or wake the launcher for a database it created.
 */
static void
after_utility(bool created)
{
	if (OidIsValid(releasing_oid))
		unhold_database(releasing_oid);
	else if (created)
		wasend_wake_launcher();	/* a new database to look at */
	releasing_oid = InvalidOid;
}

/*
 * ProcessUtility hook: release a database before DROP DATABASE, ALTER
 * DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE (see header).
 */
static void
wasend_process_utility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	volatile bool created = false;

	releasing_oid = InvalidOid;
	PG_TRY();
	{
		/*
		 * DROP DATABASE and CREATE DATABASE cannot run in a transaction
		 * block: then they fail by themselves, and nothing is released.
		 */
		if (IsA(parsetree, DropdbStmt) && !IsTransactionBlock())
			(void) release_database(((DropdbStmt *) parsetree)->dbname);
		else if (IsA(parsetree, RenameStmt) &&
				 ((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
			(void) release_database(((RenameStmt *) parsetree)->subname);
		else if (IsA(parsetree, CreatedbStmt) && !IsTransactionBlock())
		{
			ListCell   *lc;

			created = true;
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *opt = (DefElem *) lfirst(lc);

				if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
					(void) release_database(defGetString(opt));
			}
		}

		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context,
							  params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		after_utility(created);
		PG_RE_THROW();
	}
	PG_END_TRY();
	after_utility(created);
}

/*
 * Install the ProcessUtility hook (from _PG_init, when preloaded).
 */
void
wasend_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = wasend_process_utility;
}
