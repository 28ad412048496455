/*-------------------------------------------------------------------------
 *
 * wasend.h
 *		Declarations shared by the files of the wasend extension.
 *
 * wasend sends WhatsApp Cloud API campaigns from background workers: a
 * launcher starts senders; each sender claims rows of wasend.send_queue,
 * sends them through one curl multi handle at each phone number's rate
 * (the rate gate lives in shared memory so all senders share it), and
 * records the results with set-based statements.
 *
 * src/wasend.c		module load, settings (GUCs), shared memory
 * src/launcher.c	the launcher bgworker: finds the databases that have the
 *					extension and starts a supervisor in each
 * src/supervisor.c	a database's supervisor: starts and supervises its senders
 * src/sender.c		the sender bgworker's event loop
 * src/rate_gate.c	per-number send pacing shared by all senders
 * src/http_client.c	libcurl multi-socket client, pooled connections
 * src/queue.c		the SQL the senders run: claim, record, release
 * src/sql_api.c	SQL-callable C functions (stats, wake at commit)
 * src/signature.c	HMAC-SHA256: webhook signatures, appsecret_proof
 * src/secrets.c		the app secret and verify token, read from files
 * src/webhook.c	the webhook bgworker (libmicrohttpd, group commit)
 * src/metrics.c	the metrics bgworker: Prometheus text on wasend.metrics_port
 * src/http_server.c	the endpoints' shared connection deadlines (libmicrohttpd)
 * src/latency.c	the senders' latency histograms (wasend_worker_stats)
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_H
#define WASEND_H

#include "postgres.h"

#include <time.h>

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/elog.h"
#include "utils/palloc.h"

/* Upper bound of wasend.workers (per database). */
#define WASEND_MAX_WORKERS		32

/* Buckets of a sender's latency histograms (latency.c). */
#define WASEND_LATENCY_BUCKETS	37

/* Sender slots in shared memory, for all databases together. */
#define WASEND_MAX_SENDERS		64

/* Databases the launcher keeps track of (with or without the extension). */
#define WASEND_MAX_DATABASES	256

/* How many distinct phone numbers the rate gate can pace at once. */
#define WASEND_GATE_SLOTS		256

/* Highest max_send_rate_per_sec Meta grants, and the gate's ring size. */
#define WASEND_MAX_RATE			1000

/* the largest wasend.max_inflight */
#define WASEND_MAX_INFLIGHT		100000

/* Settings (see wasend.c and README.md). */
extern char *wasend_database;
extern char *wasend_databases;
extern int	wasend_workers;
extern double wasend_rate_headroom;
extern char *wasend_api_base_url;
extern int	wasend_batch_size;
extern int	wasend_max_inflight;
extern int	wasend_request_timeout_ms;
extern int	wasend_http_version;
extern char *wasend_ca_file;
extern int	wasend_max_attempts;
extern int	wasend_limits_refresh_interval;
extern int	wasend_on_uncertain;
extern char *wasend_app_secret_file;
extern char *wasend_stop_keywords;
extern int	wasend_webhook_port;
extern char *wasend_webhook_address;
extern char *wasend_webhook_verify_token_file;
extern char *wasend_token_directory;

#define WASEND_UNCERTAIN_RETRY	0
#define WASEND_UNCERTAIN_FAIL	1

#define WASEND_HTTP_1_1		0
#define WASEND_HTTP_2		1

/* What each sender publishes about itself; read by wasend_worker_stats(). */
typedef struct WasendSenderSlot
{
	Oid			dboid;			/* database of the sender; InvalidOid = free */
	int64		token;			/* claim token the launcher gave this slot's
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
	pg_atomic_uint32 hold_target;	/* rows it means to hold (sender_budget) */
	pg_atomic_uint64 latency_hist[WASEND_LATENCY_BUCKETS];	/* latency.c */
	pg_atomic_uint64 added_hist[WASEND_LATENCY_BUCKETS];
} WasendSenderSlot;

/*
 * The least of a measurement over the last whole window: what a number's
 * latency is at best (number_queue.c), and its path's RTT variation
 * (rate_gate.c).  last is -1 before the first window ends.  Plain fields,
 * so that it can live in shared memory under its owner's lock.
 */
typedef struct WasendWindowMin
{
	int64		last;			/* least of the last whole window */
	int64		current;		/* least of the current one; -1: none yet */
	int64		since;			/* when the current one began (monotonic us) */
} WasendWindowMin;

/*
 * Start a window minimum at now, with nothing measured.
 */
static inline void
wasend_window_min_init(WasendWindowMin *w, int64 now)
{
	w->last = -1;
	w->current = -1;
	w->since = now;
}

/*
 * Fold value, measured at now, into the current window; a window of
 * window_us that is over becomes the last one.
 */
static inline void
wasend_window_min_note(WasendWindowMin *w, int64 value, int64 now, int64 window_us)
{
	if (w->current < 0 || value < w->current)
		w->current = value;
	if (now - w->since >= window_us)
	{
		w->last = w->current;
		w->current = -1;
		w->since = now;
	}
}

/* One phone number's pacing state; see rate_gate.c.  Times: monotonic us. */
typedef struct WasendGateSlot
{
	int64		next_slot;		/* grid time of the next send */
	double		throttle;		/* pace factor after 130429s; 1 = none */
	int64		priority_until; /* a sender holds wasend_send rows of the
								 * number: other sends wait until then */
	int64		throttle_at;	/* when throttle was last set */
	int64		slowed_at;		/* the last 130429 (rate_gate_slow_down) */
	WasendWindowMin jitter;		/* RTT variation of the path to the
								 * number's API, least over a window (see
								 * rate_gate.c) */
	int			pending;		/* sends granted and not yet known written
								 * (or known unsent), all processes */
	uint64		writes;			/* writes recorded so far */
	int64		wrote[WASEND_MAX_RATE];	/* the last writes' times, at
										 * [writes % WASEND_MAX_RATE],
										 * never decreasing */
} WasendGateSlot;

/* What the launcher knows of one database; see launcher.c. */
#define WASEND_DB_NEW		0	/* not looked at yet */
#define WASEND_DB_PROBING	1	/* a supervisor starts and looks */
#define WASEND_DB_RUNNING	2	/* the extension is there: senders run */
#define WASEND_DB_ABSENT	3	/* no extension (as of probed_generation);
								 * the launcher gives the slot back */

typedef struct WasendDbSlot
{
	Oid			dboid;			/* InvalidOid = free slot */
	int			state;			/* WASEND_DB_* */
	pid_t		pid;			/* the database's supervisor, 0 = none */
	Latch	   *latch;			/* its latch */
	uint64		probed_generation;	/* extension_generation of the last look */
	int64		hold_until;		/* no supervisor before (monotonic us): the
								 * database is being dropped, renamed or
								 * copied */
	int64		last_start;		/* when a supervisor was last started */
	bool		recheck;		/* a CREATE EXTENSION committed while it was
								 * being looked at: look again */
} WasendDbSlot;

/* the LWLock tranche of the rate gate's lock (gate_lock) */
#define WASEND_GATE_TRANCHE		"wasend rate gate"

typedef struct WasendShared
{
	slock_t		mutex;			/* protects launcher fields, sender pids,
								 * database slots */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;

	/* bumped at the commit of every CREATE EXTENSION wasend (launcher.c) */
	pg_atomic_uint64 extension_generation;

	WasendDbSlot databases[WASEND_MAX_DATABASES];

	/* bumped at the commit of every control change (start, pause, ...) */
	pg_atomic_uint64 generation;

	WasendSenderSlot senders[WASEND_MAX_SENDERS];

	/*
	 * Protects the gate_* arrays and gate[].  An LWLock, not a spinlock: the
	 * holder scans the 256-entry index and grants up to a batch of sends in
	 * a loop, far more than the few instructions a spinlock may cover.
	 */
	LWLock	   *gate_lock;
	/* dense index of gate[], scanned under gate_lock (see rate_gate.c) */
	bool		gate_in_use[WASEND_GATE_SLOTS];	/* false: free */
	int64		gate_number[WASEND_GATE_SLOTS];	/* rate_gate_key of the entry */
	int64		gate_last_used[WASEND_GATE_SLOTS];	/* last grant or wire time */
	WasendGateSlot gate[WASEND_GATE_SLOTS];
} WasendShared;

extern WasendShared *wasend_state;

/*
 * Microseconds of CLOCK_MONOTONIC: what the workers pace and schedule by.
 * Unlike GetCurrentTimestamp() it never steps when the wall clock is set,
 * and it is the same clock in every process of the machine.
 */
static inline int64
wasend_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* wasend.c */
extern void wasend_wake_senders(void);
extern void wasend_begin_transaction(const char *activity);
extern void wasend_commit_transaction(void);
extern ErrorData *wasend_abort_transaction(MemoryContext cxt);

/* worker_session.c */
extern void wasend_worker_connect(const char *dbname, Oid dboid,
								  const char *lock_timeout, bool sender);

/* launcher.c */
extern PGDLLEXPORT void wasend_launcher_main(Datum main_arg);
extern void wasend_install_utility_hook(void);
extern void wasend_extension_created(void);
extern void wasend_wake_launcher(void);

/* supervisor.c */
extern PGDLLEXPORT void wasend_supervisor_main(Datum main_arg);

/* webhook.c */
extern PGDLLEXPORT void wasend_webhook_main(Datum main_arg);
extern void wasend_webhook_define_settings(void);

/* sender.c */
extern PGDLLEXPORT void wasend_sender_main(Datum main_arg);

/* supervisor.c: senders check their token against their slot */
extern int64 wasend_new_token(void);

/* rate_gate.c (times are wasend_mono_us()) */
extern int64 wasend_rate_gate_key(const char *phone_number_id);
extern int	wasend_rate_gate_take(int64 key, int rate_per_sec, int want,
						   int64 now, int64 *next_slot,
						   bool priority);
extern void wasend_rate_gate_on_wire(int64 key, int64 when, bool granted);
extern void wasend_rate_gate_unsent(int64 key);
extern void wasend_rate_gate_slow_down(int64 key, int64 now);
extern void wasend_rate_gate_note_rttvar(int64 key, int64 rttvar_us, int64 now);
extern double wasend_rate_gate_pace(int64 key, int rate, int64 now);

/* secrets.c */
typedef enum WasendSecret
{
	WASEND_SECRET_APP = 0,		/* wasend.app_secret_file */
	WASEND_SECRET_VERIFY_TOKEN = 1	/* wasend.webhook_verify_token_file */
} WasendSecret;

extern const char *wasend_secret(WasendSecret which, const char **error);

/* why wasend_number_token() gave no token */
typedef enum WasendTokenStatus
{
	WASEND_TOKEN_OK = 0,
	WASEND_TOKEN_NO_DIRECTORY,	/* wasend.token_directory is empty */
	WASEND_TOKEN_BAD_NAME,		/* the database's or number's name cannot
								 * name a file */
	WASEND_TOKEN_BAD_FILE		/* the file is missing or refused */
} WasendTokenStatus;

extern const char *wasend_number_token(const char *phone_number_id,
									   WasendTokenStatus *status,
									   const char **error);

/* sender.c */
extern const char *wasend_redact_token(const char *resp, const char *token);

/* signature.c */
extern void wasend_hmac_sha256_hex(const char *key, const char *data, size_t len,
								   char *hex_out);
extern bool wasend_signature_matches(const char *body, size_t len,
									 const char *header);
extern bool wasend_verify_token_matches(const char *given, size_t len);

/*
 * metrics.c: counters in shared memory, served in Prometheus text format by
 * the "wasend metrics" worker when wasend.metrics_port is set.  The
 * metrics_note_* functions are called by senders and the webhook worker:
 * they never throw, never allocate, and cost one spinlock round; a number
 * is identified by its Meta phone_number_id, so the same number used from
 * two databases is one series.
 */
#define WASEND_METRICS_STATUSES	8	/* ready sending held sent delivered
									 * read failed cancelled */
typedef struct MetricsCampaign
{
	int64		campaign_id;
	char		name[64];		/* truncated campaign name */
	char		status[16];		/* campaign status: running, paused, ... */
	int64		rows[WASEND_METRICS_STATUSES];	/* rows per row status */
} MetricsCampaign;

extern int	wasend_metrics_port;
extern void wasend_metrics_define_settings(void);
extern Size wasend_metrics_shmem_size(void);
extern void wasend_metrics_shmem_init(void);
extern void wasend_metrics_register_worker(void);
extern PGDLLEXPORT void wasend_metrics_main(Datum main_arg);
extern void wasend_metrics_note_answer(const char *phone_number_id, long http_status,
								int64 latency_us);
extern void wasend_metrics_note_error(const char *phone_number_id, const char *code,
							   int64 count);
extern void wasend_metrics_note_inflight(const char *phone_number_id, int delta);
extern void wasend_metrics_note_pace(const char *phone_number_id, double per_sec);
extern void wasend_metrics_note_webhook(int64 requests, int64 events);
extern void wasend_metrics_publish_campaigns(Oid dboid, const char *dbname,
									  const MetricsCampaign *campaigns, int n);

/* sql_api.c */
extern void wasend_xact_callback_init(void);

/* latency.c */
extern void wasend_latency_reset(pg_atomic_uint64 *hist);
extern void wasend_latency_note(pg_atomic_uint64 *hist, int64 us);
extern bool wasend_latency_percentile(pg_atomic_uint64 *hist, double q, double *ms);

#endif							/* WASEND_H */
