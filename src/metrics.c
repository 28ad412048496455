/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		Placeholder: the metrics worker is being written (issue 11).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "wasend.h"

int			wasend_metrics_port = 0;

void
wasend_metrics_define_settings(void)
{
}

Size
wasend_metrics_shmem_size(void)
{
	return 0;
}

void
wasend_metrics_shmem_init(void)
{
}

void
wasend_metrics_register_worker(void)
{
}

void
wasend_metrics_main(Datum main_arg)
{
}

void
metrics_note_answer(const char *phone_number_id, long http_status, int64 latency_us)
{
}

void
metrics_note_error(const char *phone_number_id, const char *code, int64 count)
{
}

void
metrics_note_inflight(const char *phone_number_id, int delta)
{
}

void
metrics_note_pace(const char *phone_number_id, double per_sec)
{
}

void
metrics_note_webhook(int64 requests, int64 events)
{
}

void
metrics_publish_campaigns(Oid dboid, const char *dbname,
						  const MetricsCampaign *campaigns, int n)
{
}
