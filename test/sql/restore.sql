-- restore: what pg_dump writes of wasend, and what pg_restore's COPY does
-- with it.  Rows carried over keep their state: sent rows go back into
-- their campaign although it is completed, a queued row stays although
-- its recipient was suppressed after it was queued, and rows the dump
-- caught in flight are settled as a stopped sender's rows are.  A dumped
-- edit of a built-in error policy row replaces that row.  What users
-- insert is checked exactly as before.  (021_dump_restore runs a real
-- pg_dump and pg_restore.)
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
-- pg_dump dumps these tables (with a filter) and sequences of the extension
SELECT x.dumped::regclass AS dumped, x.condition
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(dumped, condition)
 WHERE e.extname = 'wasend'
 ORDER BY x.dumped::regclass::text;
-- what pg_restore does: COPY every table, numbers and campaigns first
COPY wasend.whatsapp_numbers (id, phone_number_id, access_token, max_send_rate_per_sec, status, pause_reason, paused_until, created_at, updated_at) FROM stdin;
7	1065400003	EAAG-restored-token	80	active	\N	\N	2026-01-01 00:00:00+00	2026-01-01 00:00:00+00
\.
COPY wasend.campaigns (id, name, number_id, message, status, start_at, pause_reason, error_threshold, error_window, created_at, updated_at, started_at, paused_at, completed_at, cancelled_at) FROM stdin;
11	done	7	{"type": "text", "text": {"body": "x"}}	completed	2026-01-01 01:00:00+00	\N	0.05	200	2026-01-01 00:00:00+00	2026-01-01 02:00:00+00	2026-01-01 01:00:00+00	\N	2026-01-01 02:00:00+00	\N
12	stopped	7	{"type": "text", "text": {"body": "x"}}	cancelled	2026-01-01 01:00:00+00	\N	0.05	200	2026-01-01 00:00:00+00	2026-01-01 02:00:00+00	2026-01-01 01:00:00+00	\N	\N	2026-01-01 02:00:00+00
13	halfway	7	{"type": "text", "text": {"body": "x"}}	paused	2026-01-01 01:00:00+00	paused by postgres	0.05	200	2026-01-01 00:00:00+00	2026-01-01 02:00:00+00	2026-01-01 01:00:00+00	2026-01-01 02:00:00+00	\N	\N
\.
COPY wasend.suppressions (recipient, reason, created_at) FROM stdin;
15551310003	replied STOP	2026-01-01 01:30:00+00
\.
COPY wasend.send_queue (id, campaign_id, recipient, payload, status, attempts, next_attempt_at, wa_message_id, last_error_code, last_error_class, last_error, uncertain, claimed_by, created_at, claimed_at, sent_at, delivered_at, read_at, failed_at) FROM stdin;
101	11	15551310001	\N	sent	1	-infinity	wamid.r101	\N	\N	\N	f	\N	2026-01-01 00:30:00+00	2026-01-01 01:00:00+00	2026-01-01 01:00:01+00	\N	\N	\N
102	11	15551310002	\N	read	1	-infinity	wamid.r102	\N	\N	\N	f	\N	2026-01-01 00:30:00+00	2026-01-01 01:00:00+00	2026-01-01 01:00:01+00	2026-01-01 01:00:02+00	2026-01-01 01:00:03+00	\N
103	11	15551310003	\N	failed	1	-infinity	wamid.r103	131026	api	undeliverable	f	\N	2026-01-01 00:30:00+00	2026-01-01 01:00:00+00	\N	\N	\N	2026-01-01 01:00:01+00
104	12	15551310004	\N	cancelled	0	-infinity	\N	\N	\N	\N	f	\N	2026-01-01 00:30:00+00	\N	\N	\N	\N	\N
105	12	15551310005	\N	sending	1	-infinity	\N	\N	\N	\N	f	4242	2026-01-01 00:30:00+00	2026-01-01 01:59:59+00	\N	\N	\N	\N
106	13	15551310003	{"type": "text", "text": {"body": "y"}}	ready	0	-infinity	\N	\N	\N	\N	f	\N	2026-01-01 00:30:00+00	\N	\N	\N	\N	\N
107	13	15551310007	\N	sending	1	-infinity	\N	\N	\N	\N	f	9007199254740993	2026-01-01 00:30:00+00	2026-01-01 01:59:59+00	\N	\N	\N	\N
108	13	15551310008	\N	ready	0	-infinity	\N	\N	\N	\N	f	\N	2026-01-01 00:30:00+00	\N	\N	\N	\N	\N
\.
-- and sets the sequences (their data is dumped too)
SELECT pg_catalog.setval('wasend.whatsapp_numbers_id_seq', 7, true);
SELECT pg_catalog.setval('wasend.campaigns_id_seq', 13, true);
SELECT pg_catalog.setval('wasend.send_queue_id_seq', 108, true);
SELECT id, campaign_id, recipient, status, attempts, uncertain, claimed_by, last_error_class, last_error,
       failed_at IS NOT NULL AS failed
  FROM wasend.send_queue ORDER BY id;
SELECT campaign_id, status, total, ready, sent, read, failed, cancelled, uncertain
  FROM wasend.campaign_progress ORDER BY campaign_id;
-- users' rows are checked as before: nothing joins a finished campaign,
-- suppressed recipients are skipped
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (11, '15551310009');
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (12, '15551310009');
SELECT wasend.wasend_enqueue(11, ARRAY['15551310009']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (13, '+15551310003'), (13, '15551310009');
SELECT wasend.wasend_enqueue(13, ARRAY['15551310003', '15551310010']);
SELECT id > 108 AS new_id, campaign_id, recipient, status FROM wasend.send_queue WHERE id NOT BETWEEN 101 AND 108 ORDER BY recipient;
-- error policy: pg_dump keeps the rows users added or edited, not the
-- built-in ones CREATE EXTENSION makes again
CREATE ROLE regress_r_admin LOGIN;
SELECT wasend.wasend_grant_access('regress_r_admin', 'admin');
SET ROLE regress_r_admin;
UPDATE wasend.error_policy SET backoff = '3 seconds' WHERE code = '131000';
INSERT INTO wasend.error_policy (code, action, description) VALUES ('131099', 'fail', 'added by an admin');
-- an admin cannot say where a row came from
INSERT INTO wasend.error_policy (code, action, origin) VALUES ('131098', 'fail', 'builtin');
UPDATE wasend.error_policy SET origin = 'builtin' WHERE code = '131000';
-- nor add a code twice
INSERT INTO wasend.error_policy (code, action) VALUES ('131000', 'fail');
RESET ROLE;
SELECT code, action, backoff, origin FROM wasend.error_policy WHERE origin <> 'builtin' ORDER BY code;
SELECT origin, count(*) FROM wasend.error_policy GROUP BY 1 ORDER BY 1;
-- pg_restore's copy of an edited row replaces the built-in row of its code
-- (which CREATE EXTENSION made); an added row is added
COPY wasend.error_policy (code, action, backoff, backoff_factor, pause_for, slow_down, description, origin) FROM stdin;
131016	fail	00:00:05	3	\N	f	edited before the dump	edited
131097	pause_campaign	00:00:02	2	\N	f	added before the dump	added
\.
SELECT code, action, backoff, backoff_factor, description, origin FROM wasend.error_policy
 WHERE code IN ('131016', '131097') ORDER BY code;
SELECT origin, count(*) FROM wasend.error_policy GROUP BY 1 ORDER BY 1;
DROP ROLE regress_r_admin;
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
