/*-------------------------------------------------------------------------
 *
 * number_queue.h
 *		Per phone number: the FIFO of claimed rows and their sends;
 *		number_queue.c owns it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_NUMBER_QUEUE_H
#define WASEND_NUMBER_QUEUE_H

#include "access/xlogdefs.h"

#include "clock.h"
#include "queue.h"

/* A claimed row waiting for its turn at the rate gate. */
typedef struct PendingRow
{
	int64		id;
	int64		campaign_id;
	int			priority;		/* wasend_send row: 0-100; campaign row: -1 */
	int			refusals;		/* 130429s it got in this sender (see
								 * number_requeue) */
	XLogRecPtr	claim_lsn;		/* its claim's commit: no request before
								 * that is durable (durability.c); 0 */
	char	   *body;
} PendingRow;

/* What this sender knows about one phone number. */
typedef struct NumberState
{
	int64		number_id;		/* hash key */
	int64		gate_key;		/* rate_gate_key(phone_number_id) */
	int64		pace_noted_at;	/* last metrics_note_pace, monotonic us */
	char	   *phone_number_id;
	char	   *access_token;
	char	   *url;
	int			rate;
	int64		latency_us;		/* moving average of its requests' latency */
	WasendWindowMin latency_floor;	/* least latency over a window */
	int			inflight;		/* its requests in flight in this sender */
	bool		was_mine;		/* mine as of the previous refresh */
	bool		active;			/* has a running campaign, number active */
	bool		mine;			/* this sender claims its rows (sender_share) */
	PendingRow *rows;			/* ring buffer of claimed, unsent rows */
	int			head;
	int			count;
	int			cap;
} NumberState;

/* May a held row of this campaign still be sent?  (numbers_take_stopped) */
typedef bool (*WasendCampaignSends) (int64 campaign_id);

extern void wasend_numbers_init(MemoryContext cxt);
extern NumberState *wasend_number_get(int64 number_id);
extern NumberState *wasend_number_find(int64 number_id);
extern void wasend_numbers_begin_refresh(int share_ordinal, int share_count);
extern void wasend_number_refresh(NumberState *ns, int rate,
								  const char *phone_number_id,
								  const char *access_token);
extern int	wasend_number_target(NumberState *ns);
extern int	wasend_number_priority_rows(NumberState *ns);
extern void wasend_number_note_latency(NumberState *ns, int64 latency_us, int64 now);
extern void wasend_numbers_note_turn(int64 idle_us, int64 now);
extern int	wasend_numbers_budget(void);
extern int	wasend_number_inflight_need(NumberState *ns);
extern void wasend_number_answered(NumberState *ns);
extern void wasend_number_push(NumberState *ns, const ClaimedRow *row,
							   XLogRecPtr claim_lsn);
extern void wasend_number_requeue(NumberState *ns, int64 id, int64 campaign_id,
								  int priority, int refusals, const char *body,
								  XLogRecPtr claim_lsn);
extern int	wasend_numbers_take_stopped(int64 *ids, int64 *campaign_ids,
										WasendCampaignSends sends, bool drop_all);
extern int64 wasend_numbers_start_sends(int64 now, bool stopping,
										XLogRecPtr durable, bool count_awaiting,
										int *awaiting);

#endif							/* WASEND_NUMBER_QUEUE_H */
