/*-------------------------------------------------------------------------
 *
 * wasend.c
 *		Module load: _PG_init alone, the top of the module graph.
 *
 * wasend must be in shared_preload_libraries: the senders share their rate
 * gate and statistics through shared memory, and the launcher is a static
 * background worker registered here.  Loaded any other way (for instance by
 * CREATE EXTENSION in a server without the preload), the SQL functions still
 * work but no message is sent; wasend_start_campaign() says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "launcher.h"
#include "metrics.h"
#include "rate_gate.h"
#include "settings.h"
#include "shmem.h"
#include "sql_api.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

/*
 * Reserve the shared memory and the LWLocks of every part that has some:
 * the registry (shmem.c), the rate gate and the metrics.
 */
static void
request_shmem(void)
{
	RequestAddinShmemSpace(add_size(add_size(wasend_shmem_size(),
											 wasend_rate_gate_shmem_size()),
									wasend_metrics_shmem_size()));
	wasend_shmem_request_locks();
	wasend_rate_gate_request_locks();
	wasend_metrics_request_locks();
}

#if PG_VERSION_NUM >= 150000
/*
 * Ask for our shared memory (PostgreSQL 15 and later want it requested
 * from this hook rather than from _PG_init).
 */
static void
wasend_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	request_shmem();
}
#endif

/*
 * Create or attach to the shared structs at postmaster start (and in every
 * backend on EXEC_BACKEND platforms).
 */
static void
wasend_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wasend_shmem_init();
	wasend_rate_gate_shmem_init();
	wasend_metrics_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Register one of the static workers, restarted by the postmaster.
 */
static void
register_static_worker(const char *name, const char *function, bool database)
{
	WasendWorkerSpec spec;

	memset(&spec, 0, sizeof(spec));
	spec.name = name;
	spec.function = function;
	spec.database = database;
	(void) wasend_register_worker(&spec, NULL);
}

/*
 * Module load: define the settings; when preloaded, also reserve shared
 * memory and register the launcher.
 */
void
_PG_init(void)
{
	wasend_define_settings();

	wasend_xact_callback_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wasend_shmem_request;
#else
	request_shmem();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wasend_shmem_startup;

	register_static_worker("wasend launcher", "wasend_launcher_main", true);
	wasend_install_utility_hook();
	if (wasend_webhook_port > 0)
		register_static_worker("wasend webhook", "wasend_webhook_main", true);
	/* the metrics worker needs shared memory only */
	if (wasend_metrics_port > 0)
		register_static_worker("wasend metrics", "wasend_metrics_main", false);
}
