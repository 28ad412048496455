-- ---------------------------------------------------------------------
-- What pg_dump dumps
-- Registered in the order an updated database has them in
-- pg_extension.extconfig, so that a fresh install's catalog equals an
-- updated one's (test/t/020_upgrade.pl compares); wasend.database_access
-- is registered with its table, in the access control section.
-- ---------------------------------------------------------------------

-- What pg_dump dumps of the extension's data.  pg_restore loads the tables
-- in the order of their foreign keys (numbers, campaigns, send_queue).
-- The identity sequences are dumped too, so that ids continue after a
-- restore instead of starting again at 1.  Of the error policy, only the
-- rows users added or edited: CREATE EXTENSION makes the built-in rows,
-- and _error_policy_track turns a restored edit into an update of its
-- code.  (A built-in code a user deleted comes back after a restore.)
SELECT pg_catalog.pg_extension_config_dump('wasend.inbound_messages', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.suppressions', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.whatsapp_numbers', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.send_queue', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.error_policy', 'WHERE origin <> ''builtin''');
SELECT pg_catalog.pg_extension_config_dump('wasend.pending_statuses', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.whatsapp_numbers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaigns_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.send_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.inbound_messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.recipient_window', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.templates', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.held_messages', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.prices', '');
-- rows the extension ships are builtin; pg_dump keeps the ones users add
-- (a changed builtin row comes back as shipped: add a longer prefix instead)
SELECT pg_catalog.pg_extension_config_dump('wasend.country_zones', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('wasend.identities', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.campaign_summaries', '');
SELECT pg_catalog.pg_extension_config_dump('wasend.duplicate_sends', '');
