/*-------------------------------------------------------------------------
 *
 * supervisor.h
 *		A database's supervisor background worker; supervisor.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SUPERVISOR_H
#define WASEND_SUPERVISOR_H

#include "fmgr.h"

extern PGDLLEXPORT void wasend_supervisor_main(Datum main_arg);

#endif							/* WASEND_SUPERVISOR_H */
