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

/* A running campaign whose number may send, as the sender needs it. */
typedef struct RunningCampaign
{
	int64		campaign_id;
	int64		number_id;
	char	   *phone_number_id;
	char	   *access_token;
	int			rate;			/* max_send_rate_per_sec */
} RunningCampaign;

/* A row claimed for sending: its id and the request body jsonb built. */
typedef struct ClaimedRow
{
	int64		id;
	int64		campaign_id;
	char	   *body;
} ClaimedRow;

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
	Datum	   *at;				/* timestamptz of the answer */
	TimestampTz oldest;			/* when the first pending result arrived */
	MemoryContext cxt;			/* holds the texts; reset after writing */
} ResultBatch;

extern bool queue_extension_present(void);
extern void queue_prepare(void);
extern TimestampTz queue_activate_scheduled(void);
extern int	queue_running_campaigns(RunningCampaign **out, MemoryContext cxt);
extern int	queue_claim(int n, const int64 *campaign_ids, const int32 *limits,
						int32 claimer_pid, ClaimedRow **out, MemoryContext cxt);
extern void queue_record(ResultBatch *batch, uint64 *sent, uint64 *failed);
extern void queue_release(int n, const int64 *row_ids);
extern int	queue_complete(int n, const int64 *campaign_ids);

extern void result_batch_init(ResultBatch *batch, int cap, MemoryContext parent);
extern void result_batch_reset(ResultBatch *batch);
extern void result_batch_add(ResultBatch *batch, int64 row_id, long http_status,
							 const char *body, const char *error,
							 TimestampTz at);

#endif							/* WASEND_QUEUE_H */
