/*-------------------------------------------------------------------------
 *
 * settings.c
 *		Every setting (GUC) of wasend, defined in one place.
 *
 * The settings are defined at module load, preloaded or not, so that
 * SHOW and ALTER SYSTEM know them in every backend.  Only the GUC
 * machinery writes the variables (at start and at a SIGHUP reload); every
 * other file only reads them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "settings.h"

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
int			wasend_invalid_recipients = WASEND_INVALID_ERROR;
char	   *wasend_app_secret_file = NULL;
char	   *wasend_stop_keywords = NULL;
int			wasend_webhook_port = 0;
char	   *wasend_webhook_address = NULL;
char	   *wasend_webhook_verify_token_file = NULL;
char	   *wasend_token_directory = NULL;
int			wasend_webhook_max_buffer_kb = 32 * 1024;
int			wasend_webhook_request_timeout_ms = 10000;
int			wasend_webhook_max_connections = 1000;
int			wasend_webhook_max_connections_per_address = 0;
int			wasend_metrics_port = 0;
int			wasend_metrics_request_timeout_ms = 5000;
bool		wasend_drop_suppressions = false;
int			wasend_retention_min = 90 * 24 * 60;
int			wasend_durability = WASEND_DURABLE_SYNCHRONOUS;
int			wasend_webhook_durable_timeout_ms = 1000;
int			wasend_uncertain_retry_delay_s = 60;

static const struct config_enum_entry on_uncertain_options[] = {
	{"retry", WASEND_UNCERTAIN_RETRY, false},
	{"fail", WASEND_UNCERTAIN_FAIL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry durability_options[] = {
	{"synchronous", WASEND_DURABLE_SYNCHRONOUS, false},
	{"standby", WASEND_DURABLE_STANDBY, false},
	{"local", WASEND_DURABLE_LOCAL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry invalid_recipients_options[] = {
	{"error", WASEND_INVALID_ERROR, false},
	{"skip", WASEND_INVALID_SKIP, false},
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
 * The context of a setting that takes a restart.  PostgreSQL refuses to
 * create a PGC_POSTMASTER setting once the server runs: it ends the
 * session with FATAL ("cannot create PGC_POSTMASTER variables after
 * startup").  A library loaded by CREATE EXTENSION or a function call
 * instead of shared_preload_libraries starts no worker, so these settings
 * only need their postgresql.conf values there, which PGC_SIGHUP gives;
 * the SQL functions then say the senders are not running.
 */
static GucContext
restart_context(void)
{
	return process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP;
}

/*
 * Which databases send, with how many senders, how fast, how much at once.
 */
static void
define_worker_settings(void)
{
	DefineCustomStringVariable("wasend.database",
							   "Database the webhook endpoint stores notifications in; empty: the one database that has the extension.",
							   "Senders run in every database that has the extension; only the webhook endpoint (wasend.webhook_port) uses this one. Empty, with no database or several that have the extension (among wasend.databases), signed webhooks are answered 503 and the log names them. Other databases take webhooks through wasend.wasend_ingest_webhook().",
							   &wasend_database,
							   "",
							   restart_context(),
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
							"Each sender is a background worker and counts against max_worker_processes, as do the launcher, one supervisor per such database, the webhook and metrics endpoints, and PostgreSQL's own workers.",
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
							   "https://graph.facebook.com/v24.0",
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

	DefineCustomIntVariable("wasend.retention",
							"How long the rows of a finished campaign stay in wasend.send_queue; -1 or 0 keeps them.",
							"The supervisor deletes them in short batches after they are counted in wasend.campaign_summaries, so that campaign_progress and campaign_report show the same figures; inbound messages older than this go too.",
							&wasend_retention_min,
							90 * 24 * 60, -1, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
}

/*
 * How the senders talk to the API, retry, settle and stop.
 */
static void
define_delivery_settings(void)
{
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
							 "What to do with a message whose outcome is unknown (its sender stopped while it was in flight, or its request got no usable answer) once no status settled it: retry or fail.",
							 "The Cloud API has no idempotency key: a retried message may reach the recipient twice.",
							 &wasend_on_uncertain,
							 WASEND_UNCERTAIN_RETRY,
							 on_uncertain_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	/* read by the SQL functions that queue recipients (sql/src/04_queue_lanes.sql) */
	DefineCustomEnumVariable("wasend.invalid_recipients",
							 "What queueing an invalid recipient does: error (the statement fails) or skip (the row is not queued, a NOTICE counts them).",
							 "Invalid: not a phone number in international format with a known country calling code, nor a BSUID of a known country; see wasend_check_recipient().",
							 &wasend_invalid_recipients,
							 WASEND_INVALID_ERROR,
							 invalid_recipients_options,
							 PGC_USERSET,
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

	/* read by the supervisor's recovery and the senders' record (src/queue.sql) */
	DefineCustomIntVariable("wasend.uncertain_retry_delay",
							"How long a message whose outcome is unknown (its sender stopped while it was in flight, or its request got no usable answer) waits for Meta's status before it is retried (or failed, with wasend.on_uncertain = fail).",
							"A status webhook that names the message (biz_opaque_callback_data) settles it as sent meanwhile, so that it is not sent twice. 0 queues it again at once.",
							&wasend_uncertain_retry_delay_s,
							60, 0, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}

/*
 * The webhook endpoint and the secrets it and the senders read.
 */
static void
define_webhook_settings(void)
{
	DefineCustomIntVariable("wasend.webhook_port",
							"TCP port of the wasend webhook endpoint; 0 turns it off.",
							"The worker \"wasend webhook\" serves Meta's status and message webhooks there.",
							&wasend_webhook_port,
							0, 0, 65535,
							restart_context(),
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("wasend.webhook_address",
							   "IPv4 address the webhook endpoint binds to.",
							   "Put a TLS-terminating proxy in front: Meta only calls https URLs.",
							   &wasend_webhook_address,
							   "127.0.0.1",
							   restart_context(),
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

	/* the webhook endpoint */
	DefineCustomIntVariable("wasend.webhook_max_buffer",
							"Memory for webhook bodies being received, all connections together.",
							"A POST whose body would not fit is answered 503 with Retry-After. Bodies over 64 kB may use 7/8 of it.",
							&wasend_webhook_max_buffer_kb,
							32 * 1024, 4 * 1024, 4 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.webhook_request_timeout",
							"Longest a webhook request may take, from its connection's accept to its answer.",
							"Enforced however slowly the client sends; on a kept-alive connection, counted from the end of the previous request.",
							&wasend_webhook_request_timeout_ms,
							10000, 1000, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.webhook_max_connections",
							"Most connections the webhook endpoint holds open at once.",
							"Further connections wait in the listen queue.",
							&wasend_webhook_max_connections,
							1000, 1, 100000,
							restart_context(),
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.webhook_max_connections_per_address",
							"Most connections the webhook endpoint holds open from one client address; 0 means no limit.",
							"Behind a proxy every request comes from the proxy's address: leave it 0 there.",
							&wasend_webhook_max_connections_per_address,
							0, 0, 100000,
							restart_context(),
							0,
							NULL, NULL, NULL);
}

/*
 * The metrics endpoint.
 */
static void
define_metrics_settings(void)
{
	/* the metrics endpoint */
	DefineCustomIntVariable("wasend.metrics_port",
							"TCP port of the wasend metrics endpoint on 127.0.0.1; 0 turns it off.",
							"The worker \"wasend metrics\" serves GET /metrics in the Prometheus text format, on 127.0.0.1 only (the address is fixed: put a proxy in front to scrape it from elsewhere).",
							&wasend_metrics_port,
							0, 0, 65535,
							restart_context(),
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.metrics_request_timeout",
							"Longest a metrics request may take, from its connection's accept to its answer.",
							"Enforced however slowly the client sends; on a kept-alive connection, counted from the end of the previous request.",
							&wasend_metrics_request_timeout_ms,
							5000, 1000, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Where a claim (before its requests start) and a webhook's commit
 * (before its 200) must be durable: see durability.c.
 */
static void
define_durability_settings(void)
{
	DefineCustomEnumVariable("wasend.durability",
							 "Where a message's claim must be flushed before its request starts, and a webhook's commit before Meta gets its 200: synchronous, standby or local.",
							 "synchronous: on the synchronous standbys when synchronous_standby_names is set, else here; standby: on at least one streaming physical standby (nothing is sent while none streams); local: here only, which a failover can lose.",
							 &wasend_durability,
							 WASEND_DURABLE_SYNCHRONOUS,
							 durability_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("wasend.webhook_durable_timeout",
							"Longest a webhook's answer waits for its commit to be durable (wasend.durability) before it gets 503, for Meta to send it again.",
							"Meta expects fewer than 1% of answers to take over a second; a healthy standby confirms within milliseconds.",
							&wasend_webhook_durable_timeout_ms,
							1000, 100, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * The confirmation that DROP EXTENSION wasend may delete the
 * suppressions (sql_api.c, wasend_guard_drop).
 */
static void
define_drop_settings(void)
{
	DefineCustomBoolVariable("wasend.drop_suppressions",
							 "Lets DROP EXTENSION wasend delete the recipients of wasend.suppressions.",
							 "Off, DROP EXTENSION wasend is refused while wasend.suppressions holds a row. Export them first, then set it for the transaction only: SET LOCAL wasend.drop_suppressions = on.",
							 &wasend_drop_suppressions,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

/*
 * Define every wasend.* setting and reserve the prefix, so that a typo in
 * a wasend.* name is reported.  Called from _PG_init.
 */
void
wasend_define_settings(void)
{
	define_worker_settings();
	define_delivery_settings();
	define_webhook_settings();
	define_metrics_settings();
	define_drop_settings();
	define_durability_settings();

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("wasend");
#else
	EmitWarningsOnPlaceholders("wasend");
#endif
}
