/*-------------------------------------------------------------------------
 *
 * secrets.c
 *		The Meta app secret, the webhook verify token and the numbers'
 *		access tokens, read from files.
 *
 * The constraint: nothing here raises an error or logs a file's content
 * (callers run outside transactions and report the text they get back);
 * secrets are files owned by the server's user, never settings.  The full
 * description: docs/internals/secrets.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "commands/dbcommands.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "secrets.h"
#include "settings.h"

/* a Meta app secret is 32 hex digits; a verify token is the user's choice */
#define MAX_SECRET_BYTES	4096

typedef struct CachedSecret
{
	char		path[MAXPGPATH];	/* setting value the cache is for */
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	mode_t		mode;
	uid_t		uid;
	struct timespec mtime;
	struct timespec ctime;		/* changes on chmod/chown/write; unforgeable */
	char	   *value;			/* malloc'd, NUL-terminated; NULL = none */
	char		error[256];		/* why value is NULL, if it is */
} CachedSecret;

static CachedSecret cache[2];

/* a phone number id is 1-32 digits (see wasend.whatsapp_numbers) */
#define MAX_PNID_LEN	32

/* the cached token file of one number */
typedef struct CachedToken
{
	char		pnid[MAX_PNID_LEN + 1];	/* hash key */
	CachedSecret secret;
} CachedToken;

static HTAB *token_cache = NULL;

/*
 * The setting's name and value for a secret.
 */
static void
secret_setting(WasendSecret which, const char **name, const char **path)
{
	if (which == WASEND_SECRET_APP)
	{
		*name = "wasend.app_secret_file";
		*path = wasend_app_secret_file;
	}
	else
	{
		*name = "wasend.webhook_verify_token_file";
		*path = wasend_webhook_verify_token_file;
	}
}

/*
 * Forget a cached value, wiping it from memory first.
 */
static void
cache_clear(CachedSecret *c)
{
	if (c->value != NULL)
	{
		explicit_bzero(c->value, strlen(c->value));
		free(c->value);
	}
	c->value = NULL;
	c->error[0] = '\0';
}

/*
 * Read and check the file behind a secret setting into the cache.
 */
static void
cache_load(CachedSecret *c, const char *name, const char *path,
		   const struct stat *st, int fd)
{
	char		buf[MAX_SECRET_BYTES + 1];
	ssize_t		n;
	size_t		len;

	cache_clear(c);
	strlcpy(c->path, path, sizeof(c->path));
	c->dev = st->st_dev;
	c->ino = st->st_ino;
	c->size = st->st_size;
	c->mode = st->st_mode;
	c->uid = st->st_uid;
	c->mtime = st->st_mtim;
	c->ctime = st->st_ctim;

	if (!S_ISREG(st->st_mode))
	{
		snprintf(c->error, sizeof(c->error),
				 "%s \"%s\" is not a regular file", name, path);
		return;
	}
	if (st->st_uid != geteuid())
	{
		snprintf(c->error, sizeof(c->error),
				 "%s \"%s\" is not owned by the database server's user", name, path);
		return;
	}
	if (st->st_mode & (S_IRWXO | S_IWGRP))
	{
		snprintf(c->error, sizeof(c->error),
				 "%s \"%s\" gives others access or its group write access (chmod 0600 or 0640)",
				 name, path);
		return;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0)
	{
		snprintf(c->error, sizeof(c->error), "could not read %s \"%s\": %s",
				 name, path, strerror(errno));
		return;
	}
	if (n > MAX_SECRET_BYTES)
	{
		snprintf(c->error, sizeof(c->error), "%s \"%s\" is larger than %d bytes",
				 name, path, MAX_SECRET_BYTES);
		explicit_bzero(buf, sizeof(buf));
		return;
	}
	/* one line: trailing newline and blanks are not part of the secret */
	len = (size_t) n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
					   buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	buf[len] = '\0';
	if (len == 0 || memchr(buf, '\0', len) != NULL || memchr(buf, '\n', len) != NULL)
	{
		snprintf(c->error, sizeof(c->error),
				 "%s \"%s\" must hold the secret on one line", name, path);
		explicit_bzero(buf, sizeof(buf));
		return;
	}
	c->value = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	if (c->value == NULL)
		snprintf(c->error, sizeof(c->error), "out of memory reading %s", name);
}

/*
 * The content of the file at path, through cache c: read again only when
 * the file's identity or the path changed.  NULL with *error set (the
 * reason, naming the file by name and path, never its content) when the
 * file cannot be used.
 */
static const char *
secret_read(CachedSecret *c, const char *name, const char *path,
			const char **error)
{
	struct stat st;
	int			fd;

	*error = NULL;

	/* O_NONBLOCK: a FIFO put there must not hang the worker (refused below) */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) != 0)
	{
		int			save_errno = errno;

		if (fd >= 0)
			close(fd);
		cache_clear(c);
		c->path[0] = '\0';
		snprintf(c->error, sizeof(c->error), "could not open %s \"%s\": %s",
				 name, path, strerror(save_errno));
		*error = c->error;
		return NULL;
	}

	/* same file as last time: keep what we read (or why we refused it) */
	if (strcmp(c->path, path) != 0 || c->dev != st.st_dev ||
		c->ino != st.st_ino || c->size != st.st_size ||
		c->mode != st.st_mode || c->uid != st.st_uid ||
		c->mtime.tv_sec != st.st_mtim.tv_sec ||
		c->mtime.tv_nsec != st.st_mtim.tv_nsec ||
		c->ctime.tv_sec != st.st_ctim.tv_sec ||
		c->ctime.tv_nsec != st.st_ctim.tv_nsec)
		cache_load(c, name, path, &st, fd);
	close(fd);

	if (c->value == NULL)
		*error = c->error;
	return c->value;
}

/*
 * The secret's value, or NULL.  When NULL is returned and *error is set,
 * the setting names a file that cannot be used, and *error says why
 * (without the secret); when *error is NULL the setting is empty.  The
 * returned string stays valid until the next call for the same secret.
 */
const char *
wasend_secret(WasendSecret which, const char **error)
{
	CachedSecret *c = &cache[which];
	const char *name;
	const char *path;

	*error = NULL;
	secret_setting(which, &name, &path);
	if (path == NULL || path[0] == '\0')
	{
		cache_clear(c);
		c->path[0] = '\0';
		return NULL;
	}
	return secret_read(c, name, path, error);
}

/*
 * The current database's name, and whether it can name a directory of
 * wasend.token_directory: not empty, not "." or "..", no "/".  Looked up
 * once (a database is renamed only while nobody is connected to it); the
 * first call must be in a transaction.
 */
static bool
token_database(const char **name)
{
	static char dbname[NAMEDATALEN] = "";
	static bool looked_up = false;

	if (!looked_up)
	{
		char	   *db = get_database_name(MyDatabaseId);

		if (db != NULL)
			strlcpy(dbname, db, sizeof(dbname));
		looked_up = true;
	}
	*name = dbname;
	return !(dbname[0] == '\0' || strcmp(dbname, ".") == 0 ||
			 strcmp(dbname, "..") == 0 || strchr(dbname, '/') != NULL);
}

/*
 * The access token of a number whose access_token is NULL: the one line
 * of <wasend.token_directory>/<database>/<phone_number_id>, read again
 * whenever the file changes.  NULL when there is none, with *status
 * saying why and *error the reason in words (by path, never content).
 * The returned string stays valid until the next call for the same
 * number.
 */
const char *
wasend_number_token(const char *phone_number_id, WasendTokenStatus *status,
					const char **error)
{
	static char problem[256];
	const char *db;
	const char *p;
	char		path[MAXPGPATH];
	CachedToken *t;
	const char *value;
	bool		found;

	*status = WASEND_TOKEN_OK;
	*error = NULL;
	if (wasend_token_directory == NULL || wasend_token_directory[0] == '\0')
	{
		*status = WASEND_TOKEN_NO_DIRECTORY;
		*error = "the number has no access token and wasend.token_directory is not set";
		return NULL;
	}

	/* only digits name a file: nothing like "../x" */
	for (p = phone_number_id; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			break;
	if (*p != '\0' || p == phone_number_id || p - phone_number_id > MAX_PNID_LEN)
	{
		*status = WASEND_TOKEN_BAD_NAME;
		*error = "a phone number id that is not 1 to 32 digits names no access token file";
		return NULL;
	}
	if (!token_database(&db))
	{
		*status = WASEND_TOKEN_BAD_NAME;
		snprintf(problem, sizeof(problem),
				 "database name \"%s\" cannot name a directory of wasend.token_directory",
				 db);
		*error = problem;
		return NULL;
	}
	if (snprintf(path, sizeof(path), "%s/%s/%s", wasend_token_directory, db,
				 phone_number_id) >= (int) sizeof(path))
	{
		*status = WASEND_TOKEN_BAD_NAME;
		*error = "the path of the access token file is too long";
		return NULL;
	}

	if (token_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = MAX_PNID_LEN + 1;
		ctl.entrysize = sizeof(CachedToken);
		ctl.hcxt = TopMemoryContext;
		token_cache = hash_create("wasend token files", 16, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	t = hash_search(token_cache, phone_number_id, HASH_ENTER, &found);
	if (!found)
		memset(&t->secret, 0, sizeof(t->secret));
	value = secret_read(&t->secret, "access token file", path, error);
	if (value == NULL)
	{
		*status = WASEND_TOKEN_BAD_FILE;
		return NULL;
	}

	/* as in a row (^\S+$): a token goes into a header line as it is */
	for (p = value; *p != '\0'; p++)
		if ((unsigned char) *p <= ' ' || (unsigned char) *p == 0x7f)
		{
			*status = WASEND_TOKEN_BAD_FILE;
			snprintf(problem, sizeof(problem),
					 "access token file \"%s\" holds spaces or control characters", path);
			*error = problem;
			return NULL;
		}
	return value;
}
