/*-------------------------------------------------------------------------
 *
 * metrics.h
 *		Counters in shared memory and the metrics worker; metrics.c owns
 *		them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_METRICS_H
#define WASEND_METRICS_H

#include "fmgr.h"

/*
 * Counters in shared memory, served in Prometheus text format by
 * the "wasend metrics" worker when wasend.metrics_port is set.  The
 * metrics_note_* functions are called by senders and the webhook worker:
 * they never throw, never allocate, and cost one LWLock round; a number
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

/* A number's status in one database, as its supervisor publishes it. */
typedef struct MetricsNumberStatus
{
	char		pnid[64];		/* Meta's phone_number_id */
	bool		paused;			/* status paused (else active) */
} MetricsNumberStatus;

extern Size wasend_metrics_shmem_size(void);
extern void wasend_metrics_shmem_init(void);
extern void wasend_metrics_request_locks(void);
extern PGDLLEXPORT void wasend_metrics_main(Datum main_arg);
extern void wasend_metrics_note_answer(const char *phone_number_id, long http_status,
								int64 latency_us);
extern void wasend_metrics_note_error(const char *phone_number_id, const char *code,
							   int64 count);
extern void wasend_metrics_note_inflight(const char *phone_number_id, int delta);
extern void wasend_metrics_note_pace(const char *phone_number_id, double per_sec);
extern void wasend_metrics_note_webhook(int64 requests, int64 events,
										int64 not_durable);
extern void wasend_metrics_publish_campaigns(Oid dboid, const char *dbname,
									  const MetricsCampaign *campaigns, int n);
extern void wasend_metrics_publish_numbers(Oid dboid, const char *dbname,
									const MetricsNumberStatus *numbers, int n);

#endif							/* WASEND_METRICS_H */
