/*-------------------------------------------------------------------------
 *
 * settings.h
 *		The wasend.* settings (GUCs); settings.c defines them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SETTINGS_H
#define WASEND_SETTINGS_H

/* Upper bound of wasend.workers (per database). */
#define WASEND_MAX_WORKERS		32

/* the largest wasend.max_inflight */
#define WASEND_MAX_INFLIGHT		100000

/* values of wasend.on_uncertain */
typedef enum WasendOnUncertain
{
	WASEND_UNCERTAIN_RETRY = 0,
	WASEND_UNCERTAIN_FAIL = 1
} WasendOnUncertain;

/* values of wasend.invalid_recipients */
typedef enum WasendInvalidRecipients
{
	WASEND_INVALID_ERROR = 0,
	WASEND_INVALID_SKIP = 1
} WasendInvalidRecipients;

/* values of wasend.durability (durability.c) */
typedef enum WasendDurability
{
	WASEND_DURABLE_SYNCHRONOUS = 0, /* flushed on the synchronous standbys
									 * when synchronous_standby_names is set */
	WASEND_DURABLE_STANDBY = 1,		/* flushed on some streaming standby */
	WASEND_DURABLE_LOCAL = 2		/* flushed here */
} WasendDurability;

/* values of wasend.http_version */
typedef enum WasendHttpVersion
{
	WASEND_HTTP_1_1 = 0,
	WASEND_HTTP_2 = 1
} WasendHttpVersion;

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
extern int	wasend_invalid_recipients;
extern char *wasend_app_secret_file;
extern char *wasend_stop_keywords;
extern int	wasend_webhook_port;
extern char *wasend_webhook_address;
extern char *wasend_webhook_verify_token_file;
extern char *wasend_token_directory;
extern int	wasend_webhook_max_buffer_kb;
extern int	wasend_webhook_request_timeout_ms;
extern int	wasend_webhook_max_connections;
extern int	wasend_webhook_max_connections_per_address;
extern int	wasend_metrics_port;
extern int	wasend_metrics_request_timeout_ms;
extern bool wasend_drop_suppressions;
extern int	wasend_retention_min;
extern int	wasend_durability;
extern int	wasend_webhook_durable_timeout_ms;
extern int	wasend_uncertain_retry_delay_s;

extern void wasend_define_settings(void);

#endif							/* WASEND_SETTINGS_H */
