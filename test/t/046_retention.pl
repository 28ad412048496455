# 046_retention.pl — history retention with real workers (README,
# "History and retention").
#
# One number; campaign 1 finished two days ago with 25,000 rows of every
# outcome (inserted as sent); campaign 2 sent by the senders just now;
# campaign 3 running, with rows sent 40 days ago and one row waiting for a
# retry.  With wasend.retention off nothing goes.  Set to one day (a
# reload), the supervisor prunes campaign 1's 25,000 finished rows and
# nothing else (its row still to send stays), in three transactions of
# at most 10,000 rows, says so in one LOG line,
# and campaign_report and campaign_progress show campaign 1 exactly as
# before; the suppressions stay; an expired recipient_window entry and an
# inbound message older than the retention go, the recent ones stay.  A
# late status webhook for a pruned wamid is answered, changes nothing and
# waits in pending_statuses only until it expires.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '4601' => { token => 'tok-ret', rate => 100 } },
});
my $node = WasendTest::new_node('retention', $mock, 'wasend.retention' => -1);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('4601', 'tok-ret', 100);
	SELECT wasend.wasend_create_campaign('old', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('new', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('running', 1, '{"type":"text","text":{"body":"x"}}');
	INSERT INTO wasend.prices (country_prefix, category, price) VALUES ('1', 'marketing', 0.025), ('44', 'marketing', 0.0705);
	INSERT INTO wasend.send_queue (campaign_id, recipient, status, uncertain, wa_message_id, last_error_code,
	                               last_error_class, last_error, sent_at, delivered_at, read_at, failed_at,
	                               pricing_billable, pricing_category)
	SELECT 1, CASE WHEN g % 3 = 0 THEN '44' ELSE '1' END || (7000000000 + g)::text, s.status, g % 97 = 0,
	       'wamid.old.' || g,
	       CASE WHEN s.status = 'failed' AND g % 11 <> 0 THEN 131026 + g % 4 / 2 * 23 END,
	       CASE WHEN s.status = 'failed' THEN CASE WHEN g % 11 = 0 THEN 'network' ELSE 'api' END END,
	       CASE WHEN s.status = 'failed' THEN 'title ' || g % 5 END,
	       CASE WHEN s.status IN ('sent', 'delivered', 'read') THEN now() - interval '3 days' END,
	       CASE WHEN s.status IN ('delivered', 'read') THEN now() - interval '3 days' END,
	       CASE WHEN s.status = 'read' THEN now() - interval '3 days' END,
	       CASE WHEN s.status = 'failed' THEN now() - interval '3 days' END,
	       CASE WHEN s.status IN ('delivered', 'read') THEN g % 13 <> 0 END,
	       CASE WHEN s.status IN ('delivered', 'read') THEN CASE WHEN g % 7 = 0 THEN 'utility' ELSE 'marketing' END END
	  FROM generate_series(1, 25000) g
	 CROSS JOIN LATERAL (SELECT (ARRAY['read', 'delivered', 'sent', 'failed', 'cancelled', 'held'])[1 + g % 6] AS status) s;
	-- a row of the finished campaign still to send (as wasend_retry_failed
	-- leaves it before the campaign runs again): it stays
	INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (1, '15554600999');
	UPDATE wasend.campaigns SET status = 'completed', started_at = now() - interval '3 days',
	       completed_at = now() - interval '2 days' WHERE id = 1;
	INSERT INTO wasend.send_queue (campaign_id, recipient, status, sent_at, wa_message_id)
	SELECT 3, '1555460100' || g, 'sent', now() - interval '40 days', 'wamid.run.' || g FROM generate_series(1, 5) g;
	INSERT INTO wasend.send_queue (campaign_id, recipient, next_attempt_at)
	VALUES (3, '15554601999', now() + interval '1 year');
	UPDATE wasend.campaigns SET status = 'running', started_at = now() - interval '40 days' WHERE id = 3;
	INSERT INTO wasend.suppressions (recipient, reason) VALUES ('17000000006', 'said STOP');
	SELECT wasend.wasend_enqueue(2, ARRAY['15554602001', '15554602002']);
	SELECT wasend.wasend_start_campaign(2);
});

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'the senders sent campaign 2 and it completed');

my $progress_cols = q{campaign_id, name, status, pause_reason, phone_number_id, total, ready, sending, sent,
	delivered, read, failed, cancelled, uncertain, percent_done, errors_by_code, held, waiting,
	waiting_window, kind, priority};
$node->safe_psql('postgres', qq{
	CREATE TABLE report_before AS SELECT * FROM wasend.campaign_report;
	CREATE TABLE progress_before AS SELECT $progress_cols FROM wasend.campaign_progress;
	INSERT INTO wasend.recipient_window VALUES ('p', 'gone', now() - interval '26 hours'),
	                                           ('p', 'kept', now() - interval '23 hours');
	INSERT INTO wasend.inbound_messages (wa_message_id, from_number, received_at, raw)
	VALUES ('in.old', '15550001', now() - interval '2 days', '{}'),
	       ('in.new', '15550002', now() - interval '2 hours', '{}');
});
is($node->safe_psql('postgres', q{SELECT total, failed, billable, estimated_cost FROM report_before WHERE campaign_id = 1}),
	'25001|4167|7692|314.7680', 'campaign 1 before: 25,001 rows, their failures, billable rows and cost');

# --- off: nothing goes (the supervisor started with wasend.retention = -1)
my $offset = -s $node->logfile;
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue}), '25009',
	'with wasend.retention = -1 every row stays');

# --- one day: the supervisor prunes at once
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.retention = '1d'; SELECT pg_reload_conf();});
ok($node->wait_for_log(
		qr/wasend supervisor of "postgres" pruned 20834 rows of campaigns finished more than 1440 minutes ago \(wasend\.retention\), in 3 transactions/,
		$offset),
	'the supervisor pruned the 20,834 finished rows of campaign 1 in batches of 10,000, and said so in the log');
is($node->safe_psql('postgres', q{
	SELECT string_agg(format('%s:%s:%s', campaign_id, status, n), ' ' ORDER BY campaign_id, status)
	  FROM (SELECT campaign_id, status, count(*) n FROM wasend.send_queue GROUP BY 1, 2) x}),
	'1:held:4166 1:ready:1 2:sent:2 3:ready:1 3:sent:5',
	'left: the rows of campaign 1 Meta still holds and still to send, campaign 2 (finished now), running campaign 3');
is($node->safe_psql('postgres', q{SELECT sum(rows) FROM wasend.campaign_summaries WHERE campaign_id = 1}),
	'20834', 'the 20,834 rows are counted in campaign_summaries');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ((SELECT * FROM report_before EXCEPT ALL SELECT * FROM wasend.campaign_report)
	                      UNION ALL
	                      (SELECT * FROM wasend.campaign_report EXCEPT ALL SELECT * FROM report_before)) d}),
	'0', 'campaign_report is identical, every column of every campaign');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM ((SELECT * FROM progress_before EXCEPT ALL SELECT $progress_cols FROM wasend.campaign_progress)
	                      UNION ALL
	                      (SELECT $progress_cols FROM wasend.campaign_progress EXCEPT ALL SELECT * FROM progress_before)) d}),
	'0', 'campaign_progress is identical (but the rate and ETA, which are of now)');
is($node->safe_psql('postgres', q{SELECT recipient || ':' || reason FROM wasend.suppressions}),
	'17000000006:said STOP', 'the suppressions stay');
is($node->safe_psql('postgres', q{SELECT string_agg(recipient, ',') FROM wasend.recipient_window}),
	'kept', 'a recipient_window entry older than 25 hours went, a recent one stayed');
is($node->safe_psql('postgres', q{SELECT string_agg(wa_message_id, ',') FROM wasend.inbound_messages}),
	'in.new', 'an inbound message older than the retention went, a recent one stayed');

# --- a late status for a pruned wamid
my $answer = $node->safe_psql('postgres',
	q{SELECT wasend._ingest_verified('} . WasendTest::webhook_body(
		WasendTest::wh_status(id => 'wamid.old.6', status => 'read', recipient_id => '17000000006')) . q{')});
like($answer, qr/"statuses_pending": 1/, 'a late status for a pruned wamid is taken (kept aside, as for an unknown wamid)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ((SELECT * FROM report_before EXCEPT ALL SELECT * FROM wasend.campaign_report)
	                      UNION ALL
	                      (SELECT * FROM wasend.campaign_report EXCEPT ALL SELECT * FROM report_before)) d}),
	'0', 'it changes no figure');
$node->safe_psql('postgres', q{
	UPDATE wasend.pending_statuses SET received_at = now() - interval '8 days' WHERE wa_message_id = 'wamid.old.6'});
ok( $node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM wasend.pending_statuses}),
	'and it is gone once it is 7 days old');

$node->stop;
done_testing();
