/*
 * phone.h: wasend's interface to Google's libphonenumber (src/phone.cpp).
 *
 * Plain C on both sides: the C++ shim catches every exception and returns
 * a status; its C callers turn a status into an error.  Nothing here
 * depends on the PostgreSQL version.
 */
#ifndef WASEND_PHONE_H
#define WASEND_PHONE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What wasend_phone_parse made of a number. */
typedef enum WasendPhoneStatus
{
	WASEND_PHONE_OK = 0,			/* out holds the number in E.164, "+" first */
	WASEND_PHONE_NOT_A_NUMBER,		/* no phone number in the text */
	WASEND_PHONE_NO_COUNTRY,		/* no country calling code, none to default to */
	WASEND_PHONE_TOO_SHORT,			/* shorter than any number of its country */
	WASEND_PHONE_TOO_LONG,			/* longer than any number of its country */
	WASEND_PHONE_BAD_LENGTH,		/* a length no number of its country has */
	WASEND_PHONE_LOCAL_ONLY,		/* a local number without its area code */
	WASEND_PHONE_FAILED				/* the library failed (out of memory) */
} WasendPhoneStatus;

extern WasendPhoneStatus wasend_phone_parse(const char *number, const char *region,
											char *out, size_t outlen);
extern int	wasend_phone_region_of(int calling_code, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif

#endif							/* WASEND_PHONE_H */
