/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		Counters of the senders and the webhook endpoint in shared memory,
 *		served in the Prometheus text format by the "wasend metrics" worker
 *		(GET /metrics on 127.0.0.1:wasend.metrics_port, http_server.c).
 *
 * The constraint: the senders note every answer here, thousands of times
 * a second, so a note is one short round of one LWLock and never throws
 * or allocates; a scrape copies the counters entry by entry and formats
 * them outside any lock.  Without wasend.metrics_port there is no such
 * memory and every note returns at once.  The full description:
 * docs/internals/metrics.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"

#include "http_server.h"
#include "clock.h"
#include "metrics.h"
#include "rate_gate.h"
#include "settings.h"
#include "worker.h"

/* numbers the table holds at once */
#define METRICS_NUMBERS		WASEND_GATE_SLOTS

/* bytes kept of a phone_number_id or a database name, with the NUL */
#define METRICS_KEY_LEN		64

/* distinct error codes counted per number; more go to "other" */
#define METRICS_CODES		16

/* bytes of an error code string, with the NUL; longer ones are "other" */
#define METRICS_CODE_LEN	32

/* campaigns and databases published at once, all databases together */
#define METRICS_CAMPAIGNS	512
#define METRICS_DATABASES	16

/* a database's campaigns not republished for this long are not shown */
#define CAMPAIGNS_STALE_US	(60 * USECS_PER_SEC)

/* the LWLock tranche of numbers_lock and campaigns_lock */
#define METRICS_TRANCHE		"wasend metrics"

/* HTTP status classes: none (transport error), 1xx ... 5xx */
#define METRICS_CLASSES		6

/* most scrapes connected at once; more wait in the listen queue */
#define MAX_CONNECTIONS		32

/* upper bounds of the latency buckets, in us; the last bucket is +Inf */
static const int64 bucket_bound_us[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000
};

#define METRICS_BUCKETS		(lengthof(bucket_bound_us) + 1)

/* the same bounds as the le label of each bucket */
static const char *const bucket_le[METRICS_BUCKETS] = {
	"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
	"1", "2.5", "5", "10", "+Inf"
};

static const char *const class_label[METRICS_CLASSES] = {
	"none", "1xx", "2xx", "3xx", "4xx", "5xx"
};

/* rows[] of a MetricsCampaign, in this order (see metrics.h) */
static const char *const row_status[WASEND_METRICS_STATUSES] = {
	"ready", "sending", "held", "sent", "delivered", "read", "failed", "cancelled"
};

/* One error code of a number and how often it was answered. */
typedef struct MetricsCode
{
	char		code[METRICS_CODE_LEN];
	int64		count;
} MetricsCode;

/* Everything counted for one phone number. */
typedef struct MetricsNumber
{
	char		pnid[METRICS_KEY_LEN];	/* Meta's phone_number_id */
	int64		last_used;		/* wasend_mono_us() of the last note */
	int64		sends;			/* answers, transport errors included */
	int64		by_class[METRICS_CLASSES];	/* answers by HTTP status class */
	int64		throttled;		/* 130429 errors */
	int64		inflight;		/* requests in flight (sum of deltas) */
	double		pace;			/* last pace of the rate gate, msgs/s */
	int64		latency_us_sum; /* sum of the answers' latencies */
	int64		buckets[METRICS_BUCKETS];	/* answers per bucket, each
											 * counted in its own bucket
											 * only */
	int64		other_errors;	/* errors of codes beyond codes[] */
	int			ncodes;
	MetricsCode codes[METRICS_CODES];
} MetricsNumber;

/* A database that published campaigns. */
typedef struct MetricsDatabase
{
	Oid			dboid;			/* InvalidOid: entry free */
	char		name[METRICS_KEY_LEN];
	int64		published_at;	/* wasend_mono_us() of its last publication */
} MetricsDatabase;

typedef struct WasendMetricsShared
{
	/*
	 * numbers_lock protects nnumbers, number_hash and numbers; the senders
	 * (wasend_metrics_note_*) write them in exclusive mode, the metrics
	 * worker copies them in shared mode, one entry per round.  An LWLock,
	 * not a spinlock: a note scans up to METRICS_NUMBERS hashes and, when
	 * the table is full, every entry for the one idle longest; a copy
	 * moves a whole MetricsNumber.
	 */
	LWLock	   *numbers_lock;
	int			nnumbers;		/* entries in use: [0, nnumbers) */
	uint32		number_hash[METRICS_NUMBERS];	/* hash of each entry's key */
	MetricsNumber numbers[METRICS_NUMBERS];

	/* atomics: the webhook worker adds, the metrics worker reads */
	pg_atomic_uint64 webhook_requests;
	pg_atomic_uint64 webhook_events;
	pg_atomic_uint64 webhook_not_durable;

	/*
	 * campaigns_lock protects databases, campaign_db and campaigns; each
	 * database's supervisor writes them in exclusive mode
	 * (wasend_metrics_publish_campaigns), the metrics worker copies them in
	 * shared mode.  Its own lock, so that a publication never holds up a
	 * sender; an LWLock: a publication scans and rewrites all
	 * METRICS_CAMPAIGNS entries.
	 */
	LWLock	   *campaigns_lock;
	MetricsDatabase databases[METRICS_DATABASES];
	int16		campaign_db[METRICS_CAMPAIGNS]; /* index in databases, -1:
												 * free */
	MetricsCampaign campaigns[METRICS_CAMPAIGNS];

	/*
	 * Each database's numbers and their status, under campaigns_lock as
	 * the campaigns (wasend_metrics_publish_numbers).
	 */
	int16		status_db[METRICS_NUMBERS]; /* index in databases, -1: free */
	MetricsNumberStatus statuses[METRICS_NUMBERS];
} WasendMetricsShared;

/* A phone_number_id as the table keys it: at most 63 bytes, and its hash. */
typedef struct MetricsKey
{
	const char *pnid;
	int			len;
	uint32		hash;
} MetricsKey;

/* What one scrape shows: copied from shared memory, then formatted. */
typedef struct MetricsSnapshot
{
	int			nnumbers;
	MetricsNumber numbers[METRICS_NUMBERS];
	int			ncampaigns;
	MetricsCampaign campaigns[METRICS_CAMPAIGNS];
	char		campaign_db[METRICS_CAMPAIGNS][METRICS_KEY_LEN];
	int			nstatuses;
	MetricsNumberStatus statuses[METRICS_NUMBERS];
	char		status_db[METRICS_NUMBERS][METRICS_KEY_LEN];
	uint64		webhook_requests;
	uint64		webhook_events;
	uint64		webhook_not_durable;
} MetricsSnapshot;

/* One scrape (or other request), from its headers to its answer. */
typedef struct MetricsRequest
{
	struct MHD_Connection *conn;
	int			status;			/* answer, once decided (0 = not yet) */
	char	   *body;			/* malloc'd text of a 200, until MHD owns it */
	size_t		len;
	struct MetricsRequest *next;	/* in the pending list while suspended */
} MetricsRequest;


static WasendMetricsShared *WasendMetrics = NULL;

static int	database_entry(WasendMetricsShared *m, Oid dboid, const char *dbname);

/* worker state */
static MetricsRequest *pending_head = NULL;
static MetricsRequest *pending_tail = NULL;
static MetricsSnapshot *snapshot = NULL;
static MemoryContext scrape_cxt = NULL;

/*
 * Shared memory the metrics need: none while they are off.
 */
Size
wasend_metrics_shmem_size(void)
{
	if (wasend_metrics_port <= 0)
		return 0;
	return MAXALIGN(sizeof(WasendMetricsShared));
}

/*
 * Ask for the metrics' two LWLocks (from the shmem request hook): none
 * while the metrics are off.
 */
void
wasend_metrics_request_locks(void)
{
	if (wasend_metrics_port > 0)
		RequestNamedLWLockTranche(METRICS_TRANCHE, 2);
}

/*
 * Create or attach to the metrics' shared memory.  Called by the shmem
 * startup hook of wasend.c, which holds AddinShmemInitLock.
 */
void
wasend_metrics_shmem_init(void)
{
	bool		found;

	if (wasend_metrics_port <= 0)
		return;
	WasendMetrics = ShmemInitStruct("wasend metrics",
									MAXALIGN(sizeof(WasendMetricsShared)), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche(METRICS_TRANCHE);
		int			i;

		memset(WasendMetrics, 0, sizeof(WasendMetricsShared));
		WasendMetrics->numbers_lock = &locks[0].lock;
		WasendMetrics->campaigns_lock = &locks[1].lock;
		pg_atomic_init_u64(&WasendMetrics->webhook_requests, 0);
		pg_atomic_init_u64(&WasendMetrics->webhook_events, 0);
		pg_atomic_init_u64(&WasendMetrics->webhook_not_durable, 0);
		for (i = 0; i < METRICS_CAMPAIGNS; i++)
			WasendMetrics->campaign_db[i] = -1;
		for (i = 0; i < METRICS_NUMBERS; i++)
			WasendMetrics->status_db[i] = -1;
	}
}

/*
 * Make the table key of a phone_number_id.  Returns false when there is
 * nothing to count: no metrics memory, or a NULL or empty id.
 */
static bool
make_key(const char *pnid, MetricsKey *key)
{
	if (WasendMetrics == NULL || pnid == NULL || pnid[0] == '\0')
		return false;
	key->pnid = pnid;
	key->len = (int) strnlen(pnid, METRICS_KEY_LEN - 1);
	key->hash = hash_bytes((const unsigned char *) pnid, key->len);
	return true;
}

/*
 * Find the entry of a number and note its use at `now`; with create, give
 * it one if it has none: a free entry, else the one idle longest, with
 * nothing in flight if possible.  Returns NULL only without create.
 * Caller holds numbers_lock in exclusive mode.
 */
static MetricsNumber *
number_lookup(const MetricsKey *key, bool create, int64 now)
{
	WasendMetricsShared *m = WasendMetrics;
	MetricsNumber *n;
	int			slot;
	int			i;

	for (i = 0; i < m->nnumbers; i++)
	{
		if (m->number_hash[i] != key->hash)
			continue;
		n = &m->numbers[i];
		if (memcmp(n->pnid, key->pnid, key->len) == 0 && n->pnid[key->len] == '\0')
		{
			n->last_used = Max(n->last_used, now);
			return n;
		}
	}
	if (!create)
		return NULL;

	if (m->nnumbers < METRICS_NUMBERS)
		slot = m->nnumbers++;
	else
	{
		/* full: the entry idle longest, preferring one with nothing in flight */
		slot = 0;
		for (i = 1; i < METRICS_NUMBERS; i++)
		{
			MetricsNumber *a = &m->numbers[i];
			MetricsNumber *b = &m->numbers[slot];
			bool		a_idle = a->inflight == 0;
			bool		b_idle = b->inflight == 0;

			if (a_idle != b_idle ? a_idle : a->last_used < b->last_used)
				slot = i;
		}
	}
	n = &m->numbers[slot];
	memset(n, 0, sizeof(MetricsNumber));
	memcpy(n->pnid, key->pnid, key->len);
	n->pnid[key->len] = '\0';
	n->last_used = now;
	m->number_hash[slot] = key->hash;
	return n;
}

/*
 * Index of the latency bucket an answer of latency_us falls in.
 */
static int
bucket_of(int64 latency_us)
{
	int			i;

	for (i = 0; i < lengthof(bucket_bound_us); i++)
		if (latency_us <= bucket_bound_us[i])
			return i;
	return METRICS_BUCKETS - 1;
}

/*
 * A sender got the answer of a send (http_status 0: a transport error, no
 * HTTP answer) after latency_us: the request is no longer in flight.  One
 * LWLock round per answer, counting the answer and ending the request
 * together.  Never throws, never allocates.
 */
void
wasend_metrics_note_answer(const char *phone_number_id, long http_status,
					int64 latency_us)
{
	MetricsKey	key;
	MetricsNumber *n;
	int64		now;
	int			bucket;
	int			cls;

	if (!make_key(phone_number_id, &key))
		return;
	now = wasend_mono_us();
	latency_us = Max(latency_us, 0);
	bucket = bucket_of(latency_us);
	cls = (http_status >= 100 && http_status < 600) ? (int) (http_status / 100) : 0;

	LWLockAcquire(WasendMetrics->numbers_lock, LW_EXCLUSIVE);
	n = number_lookup(&key, true, now);
	n->sends++;
	n->by_class[cls]++;
	n->buckets[bucket]++;
	n->latency_us_sum += latency_us;
	n->inflight = Max(n->inflight - 1, 0);
	LWLockRelease(WasendMetrics->numbers_lock);
}

/*
 * count answers of a number had this error code (Meta's code as text, or a
 * transport class such as "timeout").  A number keeps METRICS_CODES codes;
 * further codes, codes too long to keep, and a code named "other" itself
 * (which would make a second series of that label), count as "other".
 * 130429 also counts as throttled.  Never throws, never allocates.
 */
void
wasend_metrics_note_error(const char *phone_number_id, const char *code, int64 count)
{
	MetricsKey	key;
	MetricsNumber *n;
	int64		now;
	bool		keepable;
	bool		throttled;
	int			i;

	if (count <= 0 || !make_key(phone_number_id, &key))
		return;
	now = wasend_mono_us();
	if (code == NULL)
		code = "";
	keepable = code[0] != '\0' && strnlen(code, METRICS_CODE_LEN) < METRICS_CODE_LEN &&
		strcmp(code, "other") != 0;
	throttled = strcmp(code, "130429") == 0;

	LWLockAcquire(WasendMetrics->numbers_lock, LW_EXCLUSIVE);
	n = number_lookup(&key, true, now);
	if (throttled)
		n->throttled += count;
	for (i = 0; keepable && i < n->ncodes; i++)
		if (strcmp(n->codes[i].code, code) == 0)
			break;
	if (!keepable)
		n->other_errors += count;
	else if (i < n->ncodes)
		n->codes[i].count += count;
	else if (n->ncodes < METRICS_CODES)
	{
		strcpy(n->codes[n->ncodes].code, code);
		n->codes[n->ncodes].count = count;
		n->ncodes++;
	}
	else
		n->other_errors += count;
	LWLockRelease(WasendMetrics->numbers_lock);
}

/*
 * Requests of a number in flight changed by delta (+n when n start;
 * metrics_note_answer ends each one).  The gauge never goes below 0: a number whose entry was
 * taken by another while it had requests in flight starts again from 0.
 * Never throws, never allocates.
 */
void
wasend_metrics_note_inflight(const char *phone_number_id, int delta)
{
	MetricsKey	key;
	MetricsNumber *n;
	int64		now;

	if (delta == 0 || !make_key(phone_number_id, &key))
		return;
	now = wasend_mono_us();

	LWLockAcquire(WasendMetrics->numbers_lock, LW_EXCLUSIVE);
	n = number_lookup(&key, delta > 0, now);
	if (n != NULL)
		n->inflight = Max(n->inflight + delta, 0);
	LWLockRelease(WasendMetrics->numbers_lock);
}

/*
 * The rate gate's pace of a number is now per_sec messages per second (a
 * value that is not a finite number >= 0 is shown as 0).  Never throws,
 * never allocates.
 */
void
wasend_metrics_note_pace(const char *phone_number_id, double per_sec)
{
	MetricsKey	key;
	MetricsNumber *n;
	int64		now;

	if (!make_key(phone_number_id, &key))
		return;
	now = wasend_mono_us();
	if (isnan(per_sec) || isinf(per_sec) || per_sec < 0)
		per_sec = 0;

	LWLockAcquire(WasendMetrics->numbers_lock, LW_EXCLUSIVE);
	n = number_lookup(&key, true, now);
	n->pace = per_sec;
	LWLockRelease(WasendMetrics->numbers_lock);
}

/*
 * The webhook endpoint received this many requests and events, and
 * answered this many stored ones 503 because their commit did not become
 * durable in time (webhook.c).  Never throws, never allocates.
 */
void
wasend_metrics_note_webhook(int64 requests, int64 events, int64 not_durable)
{
	if (WasendMetrics == NULL)
		return;
	if (not_durable > 0)
		pg_atomic_fetch_add_u64(&WasendMetrics->webhook_not_durable, (uint64) not_durable);
	if (requests > 0)
		pg_atomic_fetch_add_u64(&WasendMetrics->webhook_requests, (uint64) requests);
	if (events > 0)
		pg_atomic_fetch_add_u64(&WasendMetrics->webhook_events, (uint64) events);
}

/*
 * Publish the campaigns of a database: they replace all that database
 * published before (n = 0 withdraws them).  Campaigns beyond the room left
 * by the other databases are left out.  Never throws, never allocates.
 */
void
wasend_metrics_publish_campaigns(Oid dboid, const char *dbname,
						  const MetricsCampaign *campaigns, int n)
{
	WasendMetricsShared *m = WasendMetrics;
	int			db;
	int			i;
	int			j;

	if (m == NULL || !OidIsValid(dboid))
		return;
	if (campaigns == NULL || n < 0)
		n = 0;

	LWLockAcquire(m->campaigns_lock, LW_EXCLUSIVE);
	db = database_entry(m, dboid, dbname);
	for (i = 0; i < METRICS_CAMPAIGNS; i++)
		if (m->campaign_db[i] == db)
			m->campaign_db[i] = -1;
	for (i = 0, j = 0; i < METRICS_CAMPAIGNS && j < n; i++)
	{
		MetricsCampaign *c;

		if (m->campaign_db[i] >= 0)
			continue;
		c = &m->campaigns[i];
		*c = campaigns[j++];
		c->name[sizeof(c->name) - 1] = '\0';
		c->status[sizeof(c->status) - 1] = '\0';
		m->campaign_db[i] = (int16) db;
	}
	LWLockRelease(m->campaigns_lock);
}

/*
 * Publish the numbers of a database and their status: they replace all
 * that database published before.  Numbers beyond the room left by the
 * other databases are left out.  Never throws, never allocates.
 */
void
wasend_metrics_publish_numbers(Oid dboid, const char *dbname,
						const MetricsNumberStatus *numbers, int n)
{
	WasendMetricsShared *m = WasendMetrics;
	int			db;
	int			i;
	int			j;

	if (m == NULL || !OidIsValid(dboid))
		return;
	if (numbers == NULL || n < 0)
		n = 0;

	LWLockAcquire(m->campaigns_lock, LW_EXCLUSIVE);
	db = database_entry(m, dboid, dbname);
	for (i = 0; i < METRICS_NUMBERS; i++)
		if (m->status_db[i] == db)
			m->status_db[i] = -1;
	for (i = 0, j = 0; i < METRICS_NUMBERS && j < n; i++)
	{
		if (m->status_db[i] >= 0)
			continue;
		m->statuses[i] = numbers[j++];
		m->statuses[i].pnid[sizeof(m->statuses[i].pnid) - 1] = '\0';
		m->status_db[i] = (int16) db;
	}
	LWLockRelease(m->campaigns_lock);
}

/*
 * The entry of a database that publishes, marked as publishing now: its
 * own, else a free one, else the one that published longest ago (whose
 * campaigns and numbers then count as this one's until it publishes
 * again).  The caller holds campaigns_lock in exclusive mode.
 */
static int
database_entry(WasendMetricsShared *m, Oid dboid, const char *dbname)
{
	char		name[METRICS_KEY_LEN];
	int			db = -1;
	int			oldest = 0;
	int			i;

	strlcpy(name, dbname ? dbname : "", sizeof(name));
	for (i = 0; i < METRICS_DATABASES; i++)
	{
		if (m->databases[i].dboid == dboid)
		{
			db = i;
			break;
		}
		if (db < 0 && !OidIsValid(m->databases[i].dboid))
			db = i;				/* first free entry, if dboid has none */
		if (m->databases[i].published_at < m->databases[oldest].published_at)
			oldest = i;
	}
	if (db < 0)
		db = oldest;			/* all taken: the one that published longest ago */
	if (m->databases[db].dboid != dboid)
	{
		/* a new tenant: what the entry's former database published goes */
		for (i = 0; i < METRICS_CAMPAIGNS; i++)
			if (m->campaign_db[i] == db)
				m->campaign_db[i] = -1;
		for (i = 0; i < METRICS_NUMBERS; i++)
			if (m->status_db[i] == db)
				m->status_db[i] = -1;
	}
	m->databases[db].dboid = dboid;
	memcpy(m->databases[db].name, name, sizeof(name));
	m->databases[db].published_at = wasend_mono_us();
	return db;
}

/*
 * Copy what a scrape shows from shared memory: each number's entry under
 * one short round of numbers_lock in shared mode (the senders wait at most
 * for one entry's copy), then the campaigns of the databases that
 * published recently.
 */
static void
take_snapshot(MetricsSnapshot *snap)
{
	WasendMetricsShared *m = WasendMetrics;
	int64		now = wasend_mono_us();
	bool		fresh[METRICS_DATABASES];
	int			n;
	int			i;

	LWLockAcquire(m->numbers_lock, LW_SHARED);
	n = m->nnumbers;
	LWLockRelease(m->numbers_lock);
	for (i = 0; i < n; i++)
	{
		LWLockAcquire(m->numbers_lock, LW_SHARED);
		memcpy(&snap->numbers[i], &m->numbers[i], sizeof(MetricsNumber));
		LWLockRelease(m->numbers_lock);
	}
	snap->nnumbers = n;

	snap->ncampaigns = 0;
	LWLockAcquire(m->campaigns_lock, LW_SHARED);
	for (i = 0; i < METRICS_DATABASES; i++)
		fresh[i] = OidIsValid(m->databases[i].dboid) &&
			m->databases[i].published_at > now - CAMPAIGNS_STALE_US;
	for (i = 0; i < METRICS_CAMPAIGNS; i++)
	{
		int			db = m->campaign_db[i];

		if (db < 0 || !fresh[db])
			continue;
		snap->campaigns[snap->ncampaigns] = m->campaigns[i];
		memcpy(snap->campaign_db[snap->ncampaigns], m->databases[db].name,
			   METRICS_KEY_LEN);
		snap->ncampaigns++;
	}
	snap->nstatuses = 0;
	for (i = 0; i < METRICS_NUMBERS; i++)
	{
		int			db = m->status_db[i];

		if (db < 0 || !fresh[db])
			continue;
		snap->statuses[snap->nstatuses] = m->statuses[i];
		memcpy(snap->status_db[snap->nstatuses], m->databases[db].name,
			   METRICS_KEY_LEN);
		snap->nstatuses++;
	}
	LWLockRelease(m->campaigns_lock);

	snap->webhook_requests = pg_atomic_read_u64(&m->webhook_requests);
	snap->webhook_events = pg_atomic_read_u64(&m->webhook_events);
	snap->webhook_not_durable = pg_atomic_read_u64(&m->webhook_not_durable);
}

/*
 * qsort comparator: numbers by phone_number_id.
 */
static int
number_cmp(const void *a, const void *b)
{
	return strcmp(((const MetricsNumber *) a)->pnid,
				  ((const MetricsNumber *) b)->pnid);
}

/*
 * Append a label value, escaped as the text format wants (backslash,
 * double quote, newline).  The format is UTF-8: a byte that does not
 * start a valid UTF-8 character (a campaign name cut inside a character,
 * or from a database in another encoding) is shown as U+FFFD.
 */
static void
append_label_value(StringInfo buf, const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p != '\0')
	{
		if (*p == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*p == '"')
			appendStringInfoString(buf, "\\\"");
		else if (*p == '\n')
			appendStringInfoString(buf, "\\n");
		else if (*p < 0x80)
			appendStringInfoChar(buf, (char) *p);
		else
		{
			int			len = pg_utf_mblen(p);

			if ((int) strnlen((const char *) p, len) == len &&
				pg_utf8_islegal(p, len))
			{
				appendBinaryStringInfo(buf, (const char *) p, len);
				p += len;
				continue;
			}
			appendStringInfoString(buf, "\xEF\xBF\xBD");
		}
		p++;
	}
}

/*
 * Append the HELP and TYPE lines of a metric family.
 */
static void
append_family(StringInfo buf, const char *name, const char *type,
			  const char *help)
{
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*
 * Append the start of a sample of a number: name{number="<pnid>"
 * (the caller adds further labels, "} " and the value).
 */
static void
append_number_sample(StringInfo buf, const char *name, const MetricsNumber *n)
{
	appendStringInfo(buf, "%s{number=\"", name);
	append_label_value(buf, n->pnid);
	appendStringInfoChar(buf, '"');
}

/*
 * Append a gauge value and the end of the line: Prometheus spells the
 * special values NaN, +Inf and -Inf.
 */
static void
append_double(StringInfo buf, double v)
{
	if (isnan(v))
		appendStringInfoString(buf, "NaN\n");
	else if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "+Inf\n" : "-Inf\n");
	else
		appendStringInfo(buf, "%.10g\n", v);
}

/*
 * Append the per-number counters of the answers: sends, HTTP status
 * classes, error codes and throttling.
 */
static void
format_send_counters(StringInfo buf, const MetricsSnapshot *snap)
{
	int			i;
	int			j;

	append_family(buf, "wasend_sends_total", "counter",
				  "Send requests answered, per phone number id (transport errors included).");
	for (i = 0; i < snap->nnumbers; i++)
	{
		append_number_sample(buf, "wasend_sends_total", &snap->numbers[i]);
		appendStringInfo(buf, "} " INT64_FORMAT "\n", snap->numbers[i].sends);
	}

	append_family(buf, "wasend_answers_total", "counter",
				  "Send answers by HTTP status class (none: a transport error, no HTTP answer).");
	for (i = 0; i < snap->nnumbers; i++)
		for (j = 0; j < METRICS_CLASSES; j++)
		{
			if (snap->numbers[i].by_class[j] == 0)
				continue;
			append_number_sample(buf, "wasend_answers_total", &snap->numbers[i]);
			appendStringInfo(buf, ",class=\"%s\"} " INT64_FORMAT "\n",
							 class_label[j], snap->numbers[i].by_class[j]);
		}

	append_family(buf, "wasend_errors_total", "counter",
				  "Send errors by Meta error code or transport class (other: codes beyond the 16 kept per number).");
	for (i = 0; i < snap->nnumbers; i++)
	{
		const MetricsNumber *n = &snap->numbers[i];

		for (j = 0; j < n->ncodes; j++)
		{
			append_number_sample(buf, "wasend_errors_total", n);
			appendStringInfoString(buf, ",code=\"");
			append_label_value(buf, n->codes[j].code);
			appendStringInfo(buf, "\"} " INT64_FORMAT "\n", n->codes[j].count);
		}
		if (n->other_errors > 0)
		{
			append_number_sample(buf, "wasend_errors_total", n);
			appendStringInfo(buf, ",code=\"other\"} " INT64_FORMAT "\n", n->other_errors);
		}
	}

	append_family(buf, "wasend_throttled_total", "counter",
				  "Send errors 130429 (throughput limit reached).");
	for (i = 0; i < snap->nnumbers; i++)
	{
		append_number_sample(buf, "wasend_throttled_total", &snap->numbers[i]);
		appendStringInfo(buf, "} " INT64_FORMAT "\n", snap->numbers[i].throttled);
	}
}

/*
 * Append the per-number gauges: requests in flight and pace.
 */
static void
format_number_gauges(StringInfo buf, const MetricsSnapshot *snap)
{
	int			i;

	append_family(buf, "wasend_inflight", "gauge",
				  "Send requests in flight now.");
	for (i = 0; i < snap->nnumbers; i++)
	{
		append_number_sample(buf, "wasend_inflight", &snap->numbers[i]);
		appendStringInfo(buf, "} " INT64_FORMAT "\n", snap->numbers[i].inflight);
	}

	append_family(buf, "wasend_pace_messages_per_second", "gauge",
				  "Pace the rate gate last set for the number, in messages per second.");
	for (i = 0; i < snap->nnumbers; i++)
	{
		append_number_sample(buf, "wasend_pace_messages_per_second", &snap->numbers[i]);
		appendStringInfoString(buf, "} ");
		append_double(buf, snap->numbers[i].pace);
	}
}

/*
 * Append the per-number histogram of the send requests' durations.
 */
static void
format_durations(StringInfo buf, const MetricsSnapshot *snap)
{
	int			i;
	int			j;

	append_family(buf, "wasend_request_duration_seconds", "histogram",
				  "Time from the start of a send request to its answer.");
	for (i = 0; i < snap->nnumbers; i++)
	{
		const MetricsNumber *n = &snap->numbers[i];
		int64		cumulative = 0;

		for (j = 0; j < METRICS_BUCKETS; j++)
		{
			cumulative += n->buckets[j];
			append_number_sample(buf, "wasend_request_duration_seconds_bucket", n);
			appendStringInfo(buf, ",le=\"%s\"} " INT64_FORMAT "\n",
							 bucket_le[j], cumulative);
		}
		append_number_sample(buf, "wasend_request_duration_seconds_sum", n);
		appendStringInfo(buf, "} " INT64_FORMAT ".%06d\n",
						 n->latency_us_sum / USECS_PER_SEC,
						 (int) (n->latency_us_sum % USECS_PER_SEC));
		append_number_sample(buf, "wasend_request_duration_seconds_count", n);
		appendStringInfo(buf, "} " INT64_FORMAT "\n", cumulative);
	}
}

/*
 * Append the campaigns' rows by row status, as their databases published
 * them.
 */
static void
format_campaigns(StringInfo buf, const MetricsSnapshot *snap)
{
	int			i;
	int			j;

	append_family(buf, "wasend_campaign_rows", "gauge",
				  "Queue rows of a campaign by row status, as its database last published them.");
	for (i = 0; i < snap->ncampaigns; i++)
	{
		const MetricsCampaign *c = &snap->campaigns[i];

		for (j = 0; j < WASEND_METRICS_STATUSES; j++)
		{
			appendStringInfoString(buf, "wasend_campaign_rows{database=\"");
			append_label_value(buf, snap->campaign_db[i]);
			appendStringInfo(buf, "\",campaign_id=\"" INT64_FORMAT "\",campaign=\"",
							 c->campaign_id);
			append_label_value(buf, c->name);
			appendStringInfoString(buf, "\",campaign_status=\"");
			append_label_value(buf, c->status);
			appendStringInfo(buf, "\",status=\"%s\"} " INT64_FORMAT "\n",
							 row_status[j], c->rows[j]);
		}
	}
}

/*
 * Append each number's status in each database, as a state set: one
 * sample per status, 1 for the one it is in, 0 for the other.
 */
static void
format_number_status(StringInfo buf, const MetricsSnapshot *snap)
{
	static const char *const states[] = {"active", "paused"};
	int			i;
	int			j;

	append_family(buf, "wasend_number_status", "gauge",
				  "1 for the status a number is in (active or paused), 0 for the other, as its database last published it.");
	for (i = 0; i < snap->nstatuses; i++)
	{
		const MetricsNumberStatus *ns = &snap->statuses[i];

		for (j = 0; j < lengthof(states); j++)
		{
			appendStringInfoString(buf, "wasend_number_status{database=\"");
			append_label_value(buf, snap->status_db[i]);
			appendStringInfoString(buf, "\",number=\"");
			append_label_value(buf, ns->pnid);
			appendStringInfo(buf, "\",status=\"%s\"} %d\n", states[j],
							 (j == 1) == ns->paused ? 1 : 0);
		}
	}
}

/*
 * Append the webhook endpoint's counters.
 */
static void
format_webhook(StringInfo buf, const MetricsSnapshot *snap)
{
	append_family(buf, "wasend_webhook_requests_total", "counter",
				  "Webhook POSTs the webhook endpoint received in full and checked.");
	appendStringInfo(buf, "wasend_webhook_requests_total " UINT64_FORMAT "\n",
					 snap->webhook_requests);
	append_family(buf, "wasend_webhook_events_total", "counter",
				  "Webhook notifications the webhook endpoint applied (one per POST body committed).");
	appendStringInfo(buf, "wasend_webhook_events_total " UINT64_FORMAT "\n",
					 snap->webhook_events);
	append_family(buf, "wasend_webhook_not_durable_total", "counter",
				  "Stored webhook POSTs answered 503 because their commit was not durable in time (wasend.durability): Meta sends them again.");
	appendStringInfo(buf, "wasend_webhook_not_durable_total " UINT64_FORMAT "\n",
					 snap->webhook_not_durable);
}

/*
 * Format a snapshot in the Prometheus text format 0.0.4: every family's
 * HELP and TYPE lines, then its samples, all samples of a family together.
 */
static void
format_metrics(StringInfo buf, MetricsSnapshot *snap)
{
	qsort(snap->numbers, snap->nnumbers, sizeof(MetricsNumber), number_cmp);

	append_family(buf, "wasend_up", "gauge",
				  "1 while the wasend metrics worker serves this endpoint.");
	appendStringInfoString(buf, "wasend_up 1\n");

	format_send_counters(buf, snap);
	format_number_gauges(buf, snap);
	format_durations(buf, snap);
	format_campaigns(buf, snap);
	format_number_status(buf, snap);
	format_webhook(buf, snap);
}

/*
 * Queue the decided answer of a request: the metrics text (handed over to
 * MHD, which frees it), or a short plain text.  Safe inside MHD callbacks.
 */
static MHD_Result_t
send_answer(struct MHD_Connection *conn, MetricsRequest *req)
{
	struct MHD_Response *resp;
	MHD_Result_t rc;

	if (req->status == MHD_HTTP_OK && req->body != NULL)
	{
		resp = MHD_create_response_from_buffer(req->len, req->body,
											   MHD_RESPMEM_MUST_FREE);
		if (resp != NULL)
			req->body = NULL;	/* MHD's now */
	}
	else
	{
		const char *text = req->status == MHD_HTTP_NOT_FOUND ?
		"not found: the metrics are at /metrics\n" : "internal error\n";

		resp = MHD_create_response_from_buffer(strlen(text), (void *) text,
											   MHD_RESPMEM_PERSISTENT);
	}
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type",
							req->status == MHD_HTTP_OK ?
							"text/plain; version=0.0.4; charset=utf-8" :
							"text/plain; charset=utf-8");
	rc = MHD_queue_response(conn, req->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/*
 * MHD access handler.  GET (or HEAD) /metrics is suspended until the loop
 * has formatted the metrics; anything else gets 404.  A GET or HEAD is
 * answered only once MHD has read the whole request (its second call), so
 * that the connection can be kept alive; other methods are answered at
 * once, without reading their body, and the connection is closed.  Only
 * mallocs.
 */
static MHD_Result_t
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version, const char *upload_data,
		   size_t *upload_data_size, void **con_cls)
{
	MetricsRequest *req = *con_cls;

	if (req == NULL)
	{
		req = calloc(1, sizeof(MetricsRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		/* a later request on a kept-alive connection: a new deadline */
		(void) wasend_http_request_begins(conn);
		*con_cls = req;
		if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
			return MHD_YES;
		req->status = MHD_HTTP_NOT_FOUND;
		return send_answer(conn, req);
	}
	if (*upload_data_size > 0)
	{
		/* a body nobody asked for: drop it */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->status != 0)
		return send_answer(conn, req);	/* resumed, or decided before */
	if (strcmp(url, "/metrics") != 0)
	{
		req->status = MHD_HTTP_NOT_FOUND;
		return send_answer(conn, req);
	}
	if (pending_tail)
		pending_tail->next = req;
	else
		pending_head = req;
	pending_tail = req;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

/*
 * MHD completion callback: free the request (and its text, if MHD never
 * took it).
 */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	MetricsRequest *req = *con_cls;

	if (req == NULL)
		return;
	wasend_http_request_ends(conn);
	free(req->body);
	free(req);
	*con_cls = NULL;
}

/*
 * Answer every scrape suspended in the last MHD_run pass with one copy of
 * the counters, formatted once.  What it pallocs lives in scrape_cxt,
 * reset at the end.
 */
static void
answer_pending(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(scrape_cxt);
	StringInfoData buf;
	MetricsRequest *req;

	initStringInfo(&buf);
	take_snapshot(snapshot);
	format_metrics(&buf, snapshot);

	req = pending_head;
	pending_head = pending_tail = NULL;
	while (req != NULL)
	{
		MetricsRequest *next = req->next;

		req->next = NULL;
		req->body = malloc(Max(buf.len, 1));
		if (req->body != NULL)
		{
			memcpy(req->body, buf.data, buf.len);
			req->len = buf.len;
			req->status = MHD_HTTP_OK;
		}
		else
			req->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		MHD_resume_connection(req->conn);
		req = next;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(scrape_cxt);
}

/*
 * Open the listening socket on 127.0.0.1:wasend.metrics_port ourselves,
 * so that a failure says why (the port is in use, ...).
 */
static int
listen_on_loopback(void)
{
	struct sockaddr_in addr;
	int			fd;
	int			on = 1;

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16) wasend_metrics_port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(fd, 64) != 0 ||
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
	{
		int			save_errno = errno;

		if (fd >= 0)
			close(fd);
		errno = save_errno;
		ereport(FATAL,
				(errcode_for_socket_access(),
				 errmsg("wasend metrics could not listen on 127.0.0.1 port %d (wasend.metrics_port): %m",
						wasend_metrics_port),
				 errdetail("The worker exits and the server starts it again after 5 seconds."),
				 errhint("Is the port in use? Change wasend.metrics_port, or set it to 0 to turn the metrics off.")));
	}
	return fd;
}

/*
 * Are scrapes suspended, waiting for answer_pending()?
 */
static bool
scrapes_pending(void)
{
	return pending_head != NULL;
}

/*
 * Entry point of the metrics worker.
 */
void
wasend_metrics_main(Datum main_arg)
{
	WasendHttpEndpoint ep;

	wasend_worker_signals();

	if (WasendMetrics == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wasend metrics has no shared memory"),
				 errhint("Load wasend through shared_preload_libraries.")));

	scrape_cxt = AllocSetContextCreate(TopMemoryContext, "wasend metrics scrape",
									   ALLOCSET_DEFAULT_SIZES);
	snapshot = MemoryContextAllocZero(TopMemoryContext, sizeof(MetricsSnapshot));

	memset(&ep, 0, sizeof(ep));
	ep.name = "wasend metrics";
	ep.where = psprintf("127.0.0.1:%d", wasend_metrics_port);
	ep.listen_fd = listen_on_loopback();
	ep.port = (uint16) wasend_metrics_port;
	ep.timeout_ms = &wasend_metrics_request_timeout_ms;
	ep.max_connections = MAX_CONNECTIONS;
	ep.start_error = psprintf("wasend metrics could not start its HTTP server on 127.0.0.1 port %d (wasend.metrics_port)",
							  wasend_metrics_port);
	ep.start_hint = "Check the server log for earlier errors; set wasend.metrics_port to 0 to turn the metrics off.";
	ep.on_request = &on_request;
	ep.on_completed = &on_completed;
	ep.pending = scrapes_pending;
	ep.answer = answer_pending;
	wasend_http_serve(&ep);
	proc_exit(0);
}
