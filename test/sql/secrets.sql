-- secrets: tokens are readable only by wasend_admin (and superusers); the
-- operator and viewer roles do their jobs through the API without them.
-- secrets_1.out: the same, with PostgreSQL 16's wording of the refusal
-- to SHOW a setting that needs pg_read_all_settings
\set SHOW_CONTEXT never
CREATE ROLE regress_wasend_op LOGIN;
SELECT wasend.wasend_grant_access('regress_wasend_op', 'operator');
CREATE ROLE regress_wasend_view LOGIN;
SELECT wasend.wasend_grant_access('regress_wasend_view', 'viewer');
CREATE ROLE regress_wasend_admin LOGIN;
SELECT wasend.wasend_grant_access('regress_wasend_admin', 'admin');
CREATE ROLE regress_nobody LOGIN;
-- which columns named like a secret can each role read, in any table or view?
SELECT r.rolname, c.table_name, c.column_name,
       has_column_privilege(r.rolname, format('wasend.%I', c.table_name), c.column_name, 'SELECT') AS can_read
  FROM information_schema.columns c
 CROSS JOIN (VALUES ('regress_wasend_op'), ('regress_wasend_view'), ('regress_wasend_admin'), ('regress_nobody')) r(rolname)
 WHERE c.table_schema = 'wasend' AND c.column_name ~ 'token|secret'
 ORDER BY 1, 2, 3;
-- no view of the extension mentions the token
SELECT count(*) AS views_with_token FROM pg_views
 WHERE schemaname = 'wasend' AND definition ~ 'access_token';
-- functions the non-admin roles can run: none returns numbers' rows
SELECT r.rolname, p.oid::regprocedure
  FROM pg_proc p
 CROSS JOIN (VALUES ('regress_wasend_op'), ('regress_wasend_view')) r(rolname)
 WHERE (p.proname LIKE 'wasend%' OR p.pronamespace = 'wasend'::regnamespace)
   AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
 ORDER BY 1, p.oid::regprocedure::text;
-- the operator runs a campaign end to end without ever seeing a token
SET ROLE regress_wasend_op;
SELECT access_token FROM wasend.whatsapp_numbers;
SELECT * FROM wasend.whatsapp_numbers;
SELECT id, phone_number_id, status FROM wasend.whatsapp_numbers ORDER BY id;
SELECT wasend.wasend_create_campaign('by operator', 1, '{"type":"text","text":{"body":"hi"}}') AS cop \gset
SELECT wasend.wasend_enqueue(:cop, ARRAY['15551270001']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cop, '15551270002');
SELECT wasend.wasend_start_campaign(:cop);
SELECT wasend.wasend_pause_campaign(:cop);
SELECT campaign_id, status, total FROM wasend.campaign_progress WHERE campaign_id = :cop;
SELECT wasend.wasend_add_number('9001', 'tok');
SELECT wasend.wasend_update_number(1, 'stolen');
UPDATE wasend.whatsapp_numbers SET access_token = 'x';
DELETE FROM wasend.send_queue;
SELECT wasend._wake_at_commit();
RESET ROLE;
-- the viewer watches and cannot change anything
SET ROLE regress_wasend_view;
SELECT campaign_id, status, total FROM wasend.campaign_progress WHERE campaign_id = :cop;
SELECT count(*) >= 0 AS can_see_stats FROM wasend.wasend_worker_stats();
SELECT access_token FROM wasend.whatsapp_numbers;
SELECT wasend.wasend_pause_campaign(:cop);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cop, '15551270003');
RESET ROLE;
-- a role outside wasend sees nothing
SET ROLE regress_nobody;
SELECT count(*) FROM wasend.campaigns;
SELECT wasend.wasend_start_campaign(:cop);
RESET ROLE;
-- the admin reads and changes tokens
SET ROLE regress_wasend_admin;
SELECT id, access_token FROM wasend.whatsapp_numbers ORDER BY id;
SELECT wasend.wasend_update_number(1, 'rotated-token');
RESET ROLE;
-- the app secret and the verify token are never settings: the settings
-- that held them in 0.1.0 are gone
SET ROLE regress_wasend_admin;
SHOW wasend.app_secret;
SHOW wasend.webhook_verify_token;
SELECT count(*) FROM pg_settings WHERE name IN ('wasend.app_secret', 'wasend.webhook_verify_token');
RESET ROLE;
-- they are files only the server's user can read; the settings name the
-- files, and only superusers may set them
\getenv builddir PG_ABS_BUILDDIR
\set secret_file :builddir '/wasend_secrets_app_secret'
\set token_file :builddir '/wasend_secrets_verify_token'
\setenv WASEND_SECRET_FILE :secret_file
\setenv WASEND_TOKEN_FILE :token_file
\! umask 077 && printf 'regress-app-secret-value\n' > "$WASEND_SECRET_FILE" && printf 'regress-verify-token-value\n' > "$WASEND_TOKEN_FILE"
ALTER SYSTEM SET wasend.app_secret_file = :'secret_file';
ALTER SYSTEM SET wasend.webhook_verify_token_file = :'token_file';
SELECT pg_reload_conf();
-- wait (at most 10 s) until this session has reloaded the settings
\set ECHO none
\o /dev/null
SELECT format('SELECT pg_sleep(0.01) WHERE current_setting(%L) IS DISTINCT FROM %L',
              'wasend.webhook_verify_token_file', :'token_file')
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
SELECT current_setting('wasend.app_secret_file') = :'secret_file' AS app_secret_file_set,
       current_setting('wasend.webhook_verify_token_file') = :'token_file' AS verify_token_file_set;
SET ROLE regress_wasend_admin;
SET wasend.app_secret_file = '/tmp/mine';
SHOW wasend.app_secret_file;
SELECT name FROM pg_settings WHERE name ~ '^wasend\.(app_secret|webhook_verify_token)';
RESET ROLE;
-- members of pg_monitor and of pg_read_all_settings can read at most the
-- paths: no setting holds a secret, and the files are not theirs to read
CREATE ROLE regress_monitor LOGIN IN ROLE pg_monitor;
CREATE ROLE regress_settings_reader LOGIN IN ROLE pg_read_all_settings;
SET ROLE regress_monitor;
SELECT name, setting IN (:'secret_file', :'token_file') AS shows_the_path
  FROM pg_settings WHERE name ~ '^wasend\.(app_secret|webhook_verify_token)' ORDER BY name;
SELECT count(*) AS settings_holding_a_secret FROM pg_settings
 WHERE concat_ws(' ', setting, reset_val, boot_val) ~ 'regress-(app-secret|verify-token)-value';
SELECT pg_read_file(:'secret_file');
RESET ROLE;
SET ROLE regress_settings_reader;
SELECT name, setting IN (:'secret_file', :'token_file') AS shows_the_path
  FROM pg_settings WHERE name ~ '^wasend\.(app_secret|webhook_verify_token)' ORDER BY name;
SELECT count(*) AS settings_holding_a_secret FROM pg_settings
 WHERE concat_ws(' ', setting, reset_val, boot_val) ~ 'regress-(app-secret|verify-token)-value';
SELECT pg_read_file(:'token_file');
RESET ROLE;
-- not even a superuser finds the secrets in the settings
SELECT count(*) AS settings_holding_a_secret FROM pg_settings
 WHERE concat_ws(' ', setting, reset_val, boot_val) ~ 'regress-(app-secret|verify-token)-value';
ALTER SYSTEM RESET wasend.app_secret_file;
ALTER SYSTEM RESET wasend.webhook_verify_token_file;
SELECT pg_reload_conf();
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.01) WHERE current_setting(''wasend.webhook_verify_token_file'') <> '''''
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
\! rm -f "$WASEND_SECRET_FILE" "$WASEND_TOKEN_FILE"
-- access tokens may be files in wasend.token_directory, which only
-- superusers set: a token then never goes through a statement's text
SET ROLE regress_wasend_admin;
SET wasend.token_directory = '/etc';
ALTER SYSTEM SET wasend.token_directory = '/etc';
SHOW wasend.token_directory;
-- without a token and without the directory, a number is refused
SELECT wasend.wasend_add_number('9101');
RESET ROLE;
-- the directory is relative to the data directory here, so that the
-- messages below do not depend on where the test runs
SELECT current_setting('data_directory') || '/wasend_tokens' AS token_dir \gset
\setenv WASEND_TOKEN_DIR :token_dir
\! umask 077 && mkdir -p "$WASEND_TOKEN_DIR/regression"
ALTER SYSTEM SET wasend.token_directory = 'wasend_tokens';
SELECT pg_reload_conf();
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.01) WHERE current_setting(''wasend.token_directory'') <> ''wasend_tokens'''
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
SET ROLE regress_wasend_admin;
-- no file: refused by path, nothing registered
SELECT wasend.wasend_add_number('9101', max_send_rate_per_sec => 50);
-- a file others can read: refused by path, never by content
\! umask 022 && printf 'regress-file-token-9101\n' > "$WASEND_TOKEN_DIR/regression/9101"
SELECT wasend.wasend_add_number('9101', max_send_rate_per_sec => 50);
-- a symbolic link (to a file of the server's) is not followed
\! ln -s ../../postgresql.conf "$WASEND_TOKEN_DIR/regression/9102"
SELECT wasend.wasend_add_number('9102');
-- an empty file holds no token
\! umask 077 && : > "$WASEND_TOKEN_DIR/regression/9103"
SELECT wasend.wasend_add_number('9103');
-- a phone number id names no other file: it is digits only
SELECT wasend.wasend_add_number('../../postgresql.conf');
SELECT wasend.wasend_add_number('9101/../9102');
-- the file made private: the number is registered, its row has no token
\! chmod 0600 "$WASEND_TOKEN_DIR/regression/9101"
SELECT wasend.wasend_add_number('9101', max_send_rate_per_sec => 50) AS file_number \gset
SELECT phone_number_id, access_token IS NULL AS token_is_its_file
  FROM wasend.whatsapp_numbers WHERE id = :file_number;
-- resuming a number whose file is refused is an ERROR; fixed, it resumes
SELECT wasend.wasend_pause_number(:file_number);
\! chmod 0644 "$WASEND_TOKEN_DIR/regression/9101"
SELECT wasend.wasend_resume_number(:file_number);
SELECT status FROM wasend.whatsapp_numbers WHERE id = :file_number;
\! chmod 0600 "$WASEND_TOKEN_DIR/regression/9101"
SELECT wasend.wasend_resume_number(:file_number);
SELECT status FROM wasend.whatsapp_numbers WHERE id = :file_number;
-- a number with a token in its row moves to its file by a plain UPDATE
SELECT wasend.wasend_add_number('9104', 'regress-column-token') AS column_number \gset
UPDATE wasend.whatsapp_numbers SET access_token = NULL WHERE id = :column_number;
SELECT count(*) AS numbers_on_files FROM wasend.whatsapp_numbers WHERE access_token IS NULL;
-- the internal functions that read a file are not the admin's to call
SELECT wasend._check_token_file('9101');
SELECT wasend._http_post('9101', NULL, 80, '{}');
RESET ROLE;
-- a pg_monitor member sees the directory's name, never a token
SET ROLE regress_monitor;
SELECT setting FROM pg_settings WHERE name = 'wasend.token_directory';
SELECT count(*) AS settings_holding_a_token FROM pg_settings
 WHERE concat_ws(' ', setting, reset_val, boot_val) ~ 'regress-file-token';
SELECT pg_read_file('wasend_tokens/regression/9101');
RESET ROLE;
ALTER SYSTEM RESET wasend.token_directory;
SELECT pg_reload_conf();
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.01) WHERE current_setting(''wasend.token_directory'') <> '''''
  FROM generate_series(1, 1000) \gexec
\o
\set ECHO all
\! rm -rf "$WASEND_TOKEN_DIR"
DELETE FROM wasend.whatsapp_numbers WHERE access_token IS NULL;
-- errors about a number never echo its token
SELECT wasend.wasend_update_number(1, 'bad token with spaces');
INSERT INTO wasend.whatsapp_numbers (phone_number_id, access_token, max_send_rate_per_sec)
VALUES (NULL, 'tok-in-a-bad-row', 80);
DROP ROLE regress_wasend_op, regress_wasend_view, regress_wasend_admin, regress_nobody,
          regress_monitor, regress_settings_reader;
