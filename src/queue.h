/*-------------------------------------------------------------------------
 *
 * queue.h
 *		The statements a sender runs against wasend's tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_QUEUE_H
#define WASEND_QUEUE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/palloc.h"

#include "metrics.h"

/* A running campaign whose number may send, as the sender needs it. */
typedef struct RunningCampaign
{
	int64		campaign_id;
	int64		number_id;
	char	   *phone_number_id;
	char	   *access_token;
	int			rate;			/* max_send_rate_per_sec */
	double		error_threshold;	/* circuit breaker */
	int			error_window;
	int			priority;		/* 0-100: among a number's campaigns */
	bool		transactional;	/* the number's wasend_send lane */
} RunningCampaign;

/* What one set-based write of results did, per (campaign, number). */
typedef struct RecordGroup
{
	int64		campaign_id;
	int64		number_id;
	int64		sent;
	int64		failed;
	int64		slow_down;		/* answers whose policy says slow down */
	int64		paused;			/* numbers + campaigns the batch paused */
	int			nerrors;		/* error answers by key: how many keys */
	char	  **error_keys;		/* Graph API error codes or transport
								 * classes */
	int64	   *error_counts;	/* answers with each key */
} RecordGroup;

/* A row claimed for sending: its id and the request body jsonb built. */
typedef struct ClaimedRow
{
	int64		id;
	int64		campaign_id;
	char	   *body;
	int			priority;		/* a wasend_send row's priority; -1: a
								 * campaign row */
	int64		advance;		/* the claim cursor may move up to this id;
								 * 0: it stays (see claim in queue.sql) */
} ClaimedRow;

/* A number whose messaging limit, quality and health are due to be read. */
typedef struct LimitsCheck
{
	int64		number_id;
	char	   *phone_number_id;
	char	   *access_token;
} LimitsCheck;

/* Outcomes waiting to be written by one set-based UPDATE. */
typedef struct ResultBatch
{
	int			n;
	int			cap;
	Datum	   *ids;
	Datum	   *http_status;
	Datum	   *body;			/* response text, when it is valid JSON */
	bool	   *body_null;
	Datum	   *error;			/* transport error text */
	bool	   *error_null;
	Datum	   *error_class;	/* transport failure class, see sender.c */
	bool	   *error_class_null;
	Datum	   *at;				/* timestamptz of the answer */
	int64	   *campaign_ids;	/* campaign of each row (for the sender) */
	int64		oldest;			/* monotonic us when the first result arrived */
	MemoryContext cxt;			/* holds the texts; reset after writing */
} ResultBatch;

extern bool wasend_queue_extension_present(void);
extern void wasend_queue_prepare(void);
extern TimestampTz wasend_queue_activate_scheduled(void);
extern int	wasend_queue_running_campaigns(int nexcl, const int64 *excl, int nonly,
									const int64 *only, RunningCampaign **out,
									MemoryContext cxt);
extern int	wasend_queue_running_ids(int nexcl, const int64 *excl, int64 **out,
							  MemoryContext cxt);
extern void wasend_queue_fault_note(int64 campaign_id, const char *error, double secs);
extern void wasend_queue_fault_clear(int n, const int64 *campaign_ids);
extern int	wasend_queue_limits_due(int resume_secs, LimitsCheck **out, MemoryContext cxt);
extern void wasend_queue_limits_apply(int64 number_id, long http_status, const char *body);
extern void wasend_queue_limits_failed(int64 number_id, const char *message);
extern void wasend_queue_limits_all_due(void);
extern int	wasend_queue_claim(int n, const int64 *campaign_ids, const int32 *limits,
						const int32 *scans, const int64 *after_ids, int64 token,
						ClaimedRow **out, MemoryContext cxt);
extern int	wasend_queue_record(ResultBatch *batch, const int *idx, int n,
						 int max_attempts, int64 token, RecordGroup **out);
extern bool wasend_queue_record_poison(int64 row_id, int64 token, TimestampTz at,
								const char *error);
extern void wasend_queue_apply_pending_statuses(void);
extern void wasend_queue_apply_pending_recorded(ResultBatch *batch, const int *idx, int n);
extern void wasend_queue_unsettle_recorded(ResultBatch *batch, const int *idx, int n);
extern bool wasend_queue_is_data_error(int sqlerrcode);
extern ErrorData *wasend_queue_in_subxact(void (*fn) (void *), void *arg);
extern bool wasend_queue_trip_breaker(int64 campaign_id, int failures, int window);
extern int64 wasend_queue_recover(int ntokens, const int64 *tokens,
						   bool fail_uncertain, int max_attempts, int delay_s);
extern void wasend_queue_release(int n, const int64 *row_ids, int64 token);
extern int	wasend_queue_complete(int n, const int64 *campaign_ids, int64 *locked,
						   int *nlocked);

extern int	wasend_queue_campaign_metrics(MetricsCampaign **out, int max);
extern int	wasend_queue_number_metrics(MetricsNumberStatus **out, int max);
extern int64 wasend_queue_prune_batch(int minutes, int batch, int64 after, int64 *last_id);
extern int64 wasend_queue_expire_caches(int minutes, int batch);

/* what queue_database_state says of a database */
typedef enum QueueDatabaseState
{
	DBSTATE_ABSENT = 0,			/* no extension */
	DBSTATE_IDLE = 1,			/* the extension, but nothing may send */
	DBSTATE_SEND = 2			/* senders have work */
} QueueDatabaseState;

/* the reason DBSTATE_IDLE gives for a copy (the census leaves it out) */
#define WASEND_WHY_COPY "it is a copy of the database the extension was created in"
extern QueueDatabaseState wasend_queue_database_state(Oid dboid, char **why);
extern bool wasend_text_is_json(const char *text, size_t len);

extern void wasend_result_batch_init(ResultBatch *batch, int cap, MemoryContext parent);
extern void wasend_result_batch_reset(ResultBatch *batch);
extern void wasend_result_batch_keep(ResultBatch *batch, const bool *keep);
extern void wasend_result_batch_grow(ResultBatch *batch, int cap);
extern void wasend_result_batch_add(ResultBatch *batch, int64 row_id, int64 campaign_id,
							 long http_status, const char *body,
							 const char *error, const char *error_class,
							 TimestampTz at, int64 mono_now);

#endif							/* WASEND_QUEUE_H */
