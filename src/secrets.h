/*-------------------------------------------------------------------------
 *
 * secrets.h
 *		The app secret, the verify token and the access token files;
 *		secrets.c owns them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WASEND_SECRETS_H
#define WASEND_SECRETS_H

typedef enum WasendSecret
{
	WASEND_SECRET_APP = 0,		/* wasend.app_secret_file */
	WASEND_SECRET_VERIFY_TOKEN = 1	/* wasend.webhook_verify_token_file */
} WasendSecret;

extern const char *wasend_secret(WasendSecret which, const char **error);

/* why wasend_number_token() gave no token */
typedef enum WasendTokenStatus
{
	WASEND_TOKEN_OK = 0,
	WASEND_TOKEN_NO_DIRECTORY,	/* wasend.token_directory is empty */
	WASEND_TOKEN_BAD_NAME,		/* the database's or number's name cannot
								 * name a file */
	WASEND_TOKEN_BAD_FILE		/* the file is missing or refused */
} WasendTokenStatus;

extern const char *wasend_number_token(const char *phone_number_id,
									   WasendTokenStatus *status,
									   const char **error);

#endif							/* WASEND_SECRETS_H */
