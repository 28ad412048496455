/*-------------------------------------------------------------------------
 *
 * webhook.h
 *		The webhook background worker; webhook.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_WEBHOOK_H
#define WASEND_WEBHOOK_H

#include "fmgr.h"

extern PGDLLEXPORT void wasend_webhook_main(Datum main_arg);

#endif							/* WASEND_WEBHOOK_H */
