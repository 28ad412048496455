/*-------------------------------------------------------------------------
 *
 * launcher.h
 *		The launcher background worker; launcher.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_LAUNCHER_H
#define WASEND_LAUNCHER_H

#include "fmgr.h"

extern PGDLLEXPORT void wasend_launcher_main(Datum main_arg);
extern void wasend_install_utility_hook(void);

#endif							/* WASEND_LAUNCHER_H */
