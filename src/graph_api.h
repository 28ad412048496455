/*-------------------------------------------------------------------------
 *
 * graph_api.h
 *		Meta's Graph API: URLs, token redaction, reading answers;
 *		graph_api.c owns them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_GRAPH_API_H
#define WASEND_GRAPH_API_H

#include "common/jsonapi.h"

extern char *wasend_graph_number_url(const char *phone_number_id, const char *token);
extern char *wasend_graph_limits_url(const char *phone_number_id, const char *token);
extern const char *wasend_redact_token(const char *resp, const char *token);
extern bool wasend_json_parse_guarded(const char *text, size_t len,
									  const JsonSemAction *sem, bool need_escapes);
extern bool wasend_answer_error_code(const char *text, size_t len, int *code);
extern bool wasend_graph_throughput_refused(long http_status, const char *answer);

#endif							/* WASEND_GRAPH_API_H */
