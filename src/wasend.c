/*-------------------------------------------------------------------------
 *
 * wasend.c
 *		Module load: settings, shared memory and the launcher registration.
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

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "wasend.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *wasend_database = NULL;
char	   *wasend_databases = NULL;
int			wasend_workers = 2;
double		wasend_rate_headroom = 0.985;
char	   *wasend_api_base_url = NULL;
int			wasend_batch_size = 200;
int			wasend_max_inflight = 4000;
int			wasend_request_timeout_ms = 10000;
int			wasend_http_version = WASEND_HTTP_2;
char	   *wasend_ca_file = NULL;
int			wasend_max_attempts = 5;
int			wasend_limits_refresh_interval = 900;
int			wasend_on_uncertain = WASEND_UNCERTAIN_RETRY;
char	   *wasend_app_secret_file = NULL;
char	   *wasend_stop_keywords = NULL;
int			wasend_webhook_port = 0;
char	   *wasend_webhook_address = NULL;
char	   *wasend_webhook_verify_token_file = NULL;
char	   *wasend_token_directory = NULL;

WasendShared *wasend_state = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

static const struct config_enum_entry on_uncertain_options[] = {
	{"retry", WASEND_UNCERTAIN_RETRY, false},
	{"fail", WASEND_UNCERTAIN_FAIL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry http_version_options[] = {
	{"1.1", WASEND_HTTP_1_1, false},
	{"2", WASEND_HTTP_2, false},
	{NULL, 0, false}
};

/*
 * Reject an API base URL that is not http(s), so that a typo is reported
 * when the setting is made rather than by every request of a campaign.
 */
static bool
check_api_base_url(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL ||
		(strncmp(*newval, "https://", 8) != 0 &&
		 strncmp(*newval, "http://", 7) != 0))
	{
		GUC_check_errdetail("The URL must start with \"https://\" (or \"http://\" for a local mock).");
		return false;
	}
	return true;
}

/*
 * Size of the shared state: one fixed struct, no variable part, and the
 * metrics' struct (metrics.c).
 */
static Size
wasend_shmem_size(void)
{
	return MAXALIGN(sizeof(WasendShared)) + wasend_metrics_shmem_size();
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
	RequestAddinShmemSpace(wasend_shmem_size());
	RequestNamedLWLockTranche(WASEND_GATE_TRANCHE, 1);
}
#endif

/*
 * Create or attach to the shared state at postmaster start (and in every
 * backend on EXEC_BACKEND platforms).
 */
static void
wasend_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wasend_state = ShmemInitStruct("wasend", MAXALIGN(sizeof(WasendShared)), &found);
	if (!found)
	{
		int			i;
		int			j;

		memset(wasend_state, 0, sizeof(WasendShared));
		SpinLockInit(&wasend_state->mutex);
		wasend_state->gate_lock = &(GetNamedLWLockTranche(WASEND_GATE_TRANCHE))->lock;
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
			for (j = 0; j < WASEND_LATENCY_BUCKETS; j++)
			{
				pg_atomic_init_u64(&s->latency_hist[j], 0);
				pg_atomic_init_u64(&s->added_hist[j], 0);
			}
			pg_atomic_init_u64(&s->db_retries, 0);
		}
	}
	/* the metrics' own struct ("wasend metrics"), see metrics.c */
	wasend_metrics_shmem_init();
	LWLockRelease(AddinShmemInitLock);
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

	SpinLockAcquire(&wasend_state->mutex);
	for (i = 0; i < WASEND_MAX_SENDERS; i++)
		if (wasend_state->senders[i].pid != 0 && wasend_state->senders[i].latch &&
			wasend_state->senders[i].dboid == MyDatabaseId)
			latches[n++] = wasend_state->senders[i].latch;
	for (i = 0; i < WASEND_MAX_DATABASES; i++)
		if (wasend_state->databases[i].dboid == MyDatabaseId &&
			wasend_state->databases[i].latch != NULL)
			latches[n++] = wasend_state->databases[i].latch;
	SpinLockRelease(&wasend_state->mutex);

	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Start one of a worker's own transactions, with SPI connected and a
 * snapshot, and say what it does in pg_stat_activity.
 */
void
wasend_begin_transaction(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * Commit what wasend_begin_transaction started.
 */
void
wasend_commit_transaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * In the PG_CATCH block around a worker's own transaction: take the error
 * out of the error state, roll the transaction back, and return the error
 * (allocated in cxt) for the caller to report as it sees fit.  The worker
 * then goes on: no error of a worker's transaction ends the worker.
 */
ErrorData *
wasend_abort_transaction(MemoryContext cxt)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	RESUME_INTERRUPTS();
	if (edata->message == NULL)
		edata->message = pstrdup("unknown error");
	return edata;
}

/*
 * Register a static background worker of this library that starts once
 * recovery has finished (never on a standby, by itself after a promotion)
 * and is restarted 5 s after it exits abnormally.
 */
static void
register_static_worker(const char *name, const char *function)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "wasend");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	RegisterBackgroundWorker(&worker);
}

/*
 * Module load: define the settings; when preloaded, also reserve shared
 * memory and register the launcher.
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("wasend.database",
							   "Database the webhook endpoint stores notifications in.",
							   "Senders run in every database that has the extension; only the webhook endpoint (wasend.webhook_port) uses this one. Other databases take webhooks through wasend.wasend_ingest_webhook().",
							   &wasend_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.databases",
							   "Databases whose senders run: * for every database that has the extension, or a comma-separated list of names.",
							   "A database not listed keeps its queue; nothing in it is sent until it is listed again.",
							   &wasend_databases,
							   "*",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.workers",
							"Number of wasend sender background workers in each database that has the extension.",
							"Each sender is a background worker and counts against max_worker_processes, as do the launcher and one supervisor per such database.",
							&wasend_workers,
							2, 0, WASEND_MAX_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomRealVariable("wasend.rate_headroom",
							 "Fraction of each number's max_send_rate_per_sec the senders aim at.",
							 "The rest of every one-second window absorbs network and server clock jitter.",
							 &wasend_rate_headroom,
							 0.985, 0.5, 1.0,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.api_base_url",
							   "Base URL of the WhatsApp Cloud API, including the version.",
							   "Only a superuser can change it (postgresql.conf or ALTER SYSTEM).",
							   &wasend_api_base_url,
							   "https://graph.facebook.com/v21.0",
							   PGC_SIGHUP,
							   0,
							   check_api_base_url, NULL, NULL);

	DefineCustomIntVariable("wasend.batch_size",
							"Most rows a sender claims for one phone number in one statement.",
							"A sender never claims more than one second of a number's rate.",
							&wasend_batch_size,
							200, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.max_inflight",
							"Most rows a sender holds at once (claimed or in flight).",
							"Below it each sender holds what its numbers' rates and measured latencies need (Little's law); this caps memory and the rows whose outcome is unknown after a crash.",
							&wasend_max_inflight,
							4000, 1, WASEND_MAX_INFLIGHT,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.request_timeout_ms",
							"Timeout of one Graph API request, connection included.",
							NULL,
							&wasend_request_timeout_ms,
							10000, 100, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("wasend.http_version",
							 "HTTP version the senders use: 1.1 (pooled keep-alive connections) or 2 (multiplexed).",
							 "HTTP/2 is used over https only; plain http URLs always get HTTP/1.1.",
							 &wasend_http_version,
							 WASEND_HTTP_2,
							 http_version_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.ca_file",
							   "File of CA certificates used to verify the API server, instead of the system's.",
							   "TLS verification is always on; this only changes which CAs are trusted.",
							   &wasend_ca_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.max_attempts",
							"Most attempts for a message whose errors are retried.",
							"After the last attempt the row is failed with its last error code.",
							&wasend_max_attempts,
							5, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.limits_refresh_interval",
							"Seconds between two reads of a number's messaging limit, quality and health from the Graph API; 0 turns reading them off.",
							"They are also read when the senders start and soon after a webhook says they changed.  While reading is on, a number sends only once its limit was read (or the read failed).",
							&wasend_limits_refresh_interval,
							900, 0, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("wasend.on_uncertain",
							 "What to do with a message whose sender stopped while it was in flight: retry or fail.",
							 "The Cloud API has no idempotency key: a retried message may reach the recipient twice.",
							 &wasend_on_uncertain,
							 WASEND_UNCERTAIN_RETRY,
							 on_uncertain_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.app_secret_file",
							   "File holding the Meta app secret: adds appsecret_proof to every request; verifies webhook signatures.",
							   "The file must be owned by the server's user and give others no access. Only superusers can set this.",
							   &wasend_app_secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.stop_keywords",
							   "Comma-separated replies that add the sender to wasend.suppressions.",
							   "Compared case-insensitively with the whole message text, trimmed.",
							   &wasend_stop_keywords,
							   "STOP,UNSUBSCRIBE,STOP ALL",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.webhook_port",
							"TCP port of the wasend webhook endpoint; 0 turns it off.",
							"The worker \"wasend webhook\" serves Meta's status and message webhooks there.",
							&wasend_webhook_port,
							0, 0, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.webhook_address",
							   "IPv4 address the webhook endpoint binds to.",
							   "Put a TLS-terminating proxy in front: Meta only calls https URLs.",
							   &wasend_webhook_address,
							   "127.0.0.1",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.webhook_verify_token_file",
							   "File holding the verify token of Meta's webhook subscription handshake (hub.verify_token).",
							   "The file must be owned by the server's user and give others no access. Only superusers can set this.",
							   &wasend_webhook_verify_token_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.token_directory",
							   "Directory of the access token files: <directory>/<database>/<phone_number_id>, used by numbers whose access_token is NULL.",
							   "Each file must be owned by the server's user and give others no access. Only superusers can set this.",
							   &wasend_token_directory,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/* the webhook endpoint's own limits live with it, in webhook.c */
	wasend_webhook_define_settings();
	/* and the metrics endpoint's, in metrics.c */
	wasend_metrics_define_settings();

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("wasend");
#else
	EmitWarningsOnPlaceholders("wasend");
#endif

	wasend_xact_callback_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wasend_shmem_request;
#else
	RequestAddinShmemSpace(wasend_shmem_size());
	RequestNamedLWLockTranche(WASEND_GATE_TRANCHE, 1);
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wasend_shmem_startup;

	register_static_worker("wasend launcher", "wasend_launcher_main");
	wasend_install_utility_hook();
	if (wasend_webhook_port > 0)
		register_static_worker("wasend webhook", "wasend_webhook_main");
	wasend_metrics_register_worker();
}
