/*-------------------------------------------------------------------------
 *
 * sql_api.h
 *		SQL-callable C functions and the commit callback; sql_api.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SQL_API_H
#define WASEND_SQL_API_H

extern void wasend_xact_callback_init(void);

#endif							/* WASEND_SQL_API_H */
