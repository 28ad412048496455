# 021_dump_restore.pl — a pg_dump of a database with wasend restores into a
# fresh cluster, row for row, and sending continues there.
#
# Node A sends a campaign of 300 rows to completion, has a draft campaign
# of 200 rows (one of whose recipients replied STOP after being queued)
# and a third campaign paused half-way, an edited and an added error
# policy row, an inbound message, a suppression and a pending status.
# pg_dump -Fc of A, pg_restore into node B (wasend preloaded, its own
# mock).  Every wasend table and sequence of B equals A's; a new campaign
# and new rows get fresh ids; resumed on B, the paused campaign completes,
# and no recipient was sent to twice across A's and B's mock logs.
#
# Transactional lanes survive it too: number 1's lane (made by wasend_send
# on A, which sent one message, then paused with two more queued) resumes
# on B and sends them and one queued on B; a lane an admin inserted by
# hand on B for number 2 sends what wasend_send queues in it.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my %numbers = (
	'1001' => { token => 'tok-a', rate => 200 },
	'1002' => { token => 'tok-b', rate => 50 },
);
my $mock_a = WasendTest::start_mock({ strict_numbers => JSON::PP::true, numbers => \%numbers });
my $mock_b = WasendTest::start_mock({ strict_numbers => JSON::PP::true, numbers => \%numbers });
my $node_a = WasendTest::new_node('dump_a', $mock_a);

$node_a->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('1001', 'tok-a', 200);
	SELECT wasend.wasend_add_number('1002', 'tok-b', 50);
	SELECT wasend.wasend_create_campaign('done', 1, '{"type":"text","text":{"body":"one"}}');
	SELECT wasend.wasend_create_campaign('draft', 1, '{"type":"text","text":{"body":"two"}}');
	SELECT wasend.wasend_create_campaign('halfway', 2, '{"type":"text","text":{"body":"three"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15551500000 + g)::text ORDER BY g)) FROM generate_series(1, 300) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15551600000 + g)::text ORDER BY g),
	                         array_agg(CASE WHEN g % 50 = 0 THEN '{"type":"text","text":{"body":"own"}}'::jsonb END ORDER BY g))
	  FROM generate_series(1, 200) g;
	SELECT wasend.wasend_enqueue(3, array_agg((15551700000 + g)::text ORDER BY g)) FROM generate_series(1, 300) g;
	SELECT wasend.wasend_start_campaign(1);
});
ok($node_a->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'A: campaign 1 completed');

# number 1's transactional lane (campaign 4): one message sent on A, two
# queued behind a pause of the lane
$node_a->safe_psql('postgres', q{SELECT wasend.wasend_send(1, '15551900001', '{"type":"text","text":{"body":"lane 1"}}')});
ok($node_a->poll_query_until('postgres', q{SELECT status = 'sent' FROM wasend.send_queue WHERE recipient = '15551900001'}),
	'A: a wasend_send message is sent');
$node_a->safe_psql('postgres', q{
	SELECT wasend.wasend_pause_campaign(4);
	SELECT wasend.wasend_send(1, '15551900002', '{"type":"text","text":{"body":"lane 2"}}');
	SELECT wasend.wasend_send(1, '15551900003', '{"type":"text","text":{"body":"lane 3"}}', priority => 7);
});

# campaign 3 at 50 msg/s: pause it once about a third is sent
$node_a->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(3)');
ok($node_a->poll_query_until('postgres', q{SELECT count(*) >= 100 FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'sent'}),
	'A: campaign 3 is sending');
$node_a->safe_psql('postgres', 'SELECT wasend.wasend_pause_campaign(3)');
ok(WasendTest::wait_quiet($node_a), 'A: no row held after the pause');
my $sent_on_a = $node_a->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'sent'});
cmp_ok($sent_on_a, '<', 300, "A: campaign 3 paused part-way ($sent_on_a of 300 sent)");
is($node_a->safe_psql('postgres', q{SELECT status, count(*) FROM wasend.send_queue GROUP BY 1 ORDER BY 1}),
	"ready|" . (502 - $sent_on_a) . "\nsent|" . (301 + $sent_on_a),
	'A: every row is ready or sent');

# the rest of what a database holds: policy edits, a STOP (the recipient is
# queued in the draft campaign), a suppression, a status kept aside
$node_a->safe_psql('postgres', q{
	UPDATE wasend.error_policy SET backoff = '3 seconds', description = 'edited on A' WHERE code = '131000';
	INSERT INTO wasend.error_policy (code, action, description) VALUES ('131099', 'fail', 'added on A');
	INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551999999', 'asked by phone');
	SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1001"},"messages":[{"from":"15551600007","id":"wamid.in1","timestamp":"1700000000","type":"text","text":{"body":"STOP"}}],"statuses":[{"id":"wamid.elsewhere","status":"delivered","timestamp":"1700000001","recipient_id":"15551888888"}]}}]}]}');
});
is($node_a->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM wasend.inbound_messages), (SELECT count(*) FROM wasend.suppressions),
	       (SELECT count(*) FROM wasend.pending_statuses),
	       (SELECT string_agg(code || '=' || origin, ' ' ORDER BY code) FROM wasend.error_policy WHERE origin <> 'builtin')}),
	'1|2|1|131000=edited 131099=added', 'A: an inbound STOP, two suppressions, a pending status, two policy changes');

my $dump = PostgreSQL::Test::Utils::tempdir() . '/a.dump';
$node_a->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', 'postgres' ], 'pg_dump -Fc of A');

my $node_b = WasendTest::new_node('dump_b', $mock_b);
my ($out, $err);
my $restored = IPC::Run::run([ 'pg_restore', '-d', $node_b->connstr('postgres'), $dump ],
	'>', \$out, '2>', \$err);
ok($restored, 'pg_restore into B exits with success');
is($err, '', 'pg_restore reports no error');

# every table row for row, every sequence
for my $t (qw(whatsapp_numbers campaigns send_queue error_policy inbound_messages pending_statuses suppressions))
{
	my $sql = "COPY (SELECT * FROM wasend.$t ORDER BY 1) TO STDOUT";
	# B's supervisor starts with the restored extension and reads every
	# number's account state again (as at every start): when it did is
	# B's own, the rest must be A's
	$sql = q{COPY (SELECT to_jsonb(n) - 'limits_checked_at' - 'limits_due_at' FROM wasend.whatsapp_numbers n ORDER BY id) TO STDOUT}
	  if $t eq 'whatsapp_numbers';
	# whether the senders still check a waiting status is each cluster's
	# own (transaction ids of its own)
	$sql = q{COPY (SELECT to_jsonb(p) - 'checked_xmax' - 'settled' FROM wasend.pending_statuses p
	               ORDER BY wa_message_id, status) TO STDOUT}
	  if $t eq 'pending_statuses';
	my $rows_a = $node_a->safe_psql('postgres', $sql);
	my $rows_b = $node_b->safe_psql('postgres', $sql);
	my $n = () = $rows_a =~ /^/mg;
	ok($rows_a ne '' && $rows_a eq $rows_b, "wasend.$t: B has A's $n rows, equal column for column");
}
for my $s (qw(whatsapp_numbers_id_seq campaigns_id_seq send_queue_id_seq inbound_messages_id_seq))
{
	my $sql = "SELECT last_value, is_called FROM wasend.$s";
	is($node_b->safe_psql('postgres', $sql), $node_a->safe_psql('postgres', $sql), "wasend.$s continues where A left it");
}
my $progress = q{SELECT campaign_id, status, total, ready, sent FROM wasend.campaign_progress ORDER BY 1};
is($node_b->safe_psql('postgres', $progress), $node_a->safe_psql('postgres', $progress),
	'campaign_progress is the same on B');

# new objects get fresh ids
is($node_b->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('after restore', 1, '{"type":"text","text":{"body":"four"}}');
	SELECT wasend.wasend_enqueue(5, ARRAY['15551800001', '15551800002']);
	SELECT min(id) > 803 AND max(id) = 805 FROM wasend.send_queue WHERE campaign_id = 5}),
	"5\n2\nt", 'B: a new campaign and new rows get fresh ids');

# the lanes on B: number 1's restored lane, resumed, sends what A queued
# and a message queued on B; a lane an admin inserts by hand for number 2
# sends what wasend_send puts in it
$node_b->safe_psql('postgres', q{
	SELECT wasend.wasend_resume_campaign(4);
	SELECT wasend.wasend_send(1, '15551900004', '{"type":"text","text":{"body":"lane 4"}}');
	INSERT INTO wasend.campaigns (name, number_id, message, category, kind, status, started_at, pacing, priority)
	VALUES ('lane by hand', 2, '{"type":"text","text":{"body":"unused"}}', 'utility', 'transactional',
	        'running', now(), 'off', 100);
	SELECT wasend.wasend_send(2, '15551900005', '{"type":"text","text":{"body":"lane 5"}}');
});
ok($node_b->poll_query_until('postgres', q{
	SELECT count(*) = 5 FROM wasend.send_queue WHERE recipient LIKE '155519000%' AND status = 'sent'}),
	'B: every wasend_send message is sent, in the restored lane and in a lane inserted by hand')
  or diag($node_b->safe_psql('postgres', q{
	SELECT id, campaign_id, recipient, status FROM wasend.send_queue WHERE recipient LIKE '155519000%' ORDER BY id}));
is($node_b->safe_psql('postgres', q{
	SELECT string_agg(recipient || ':' || status, ' ' ORDER BY recipient) FROM wasend.send_queue
	 WHERE recipient LIKE '155519000%'}),
	'15551900001:sent 15551900002:sent 15551900003:sent 15551900004:sent 15551900005:sent',
	'B: the message A sent stays sent, the other four are sent');

# sending continues on B
$node_b->safe_psql('postgres', 'SELECT wasend.wasend_resume_campaign(3)');
ok($node_b->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'B: the resumed campaign completes');
is($node_b->safe_psql('postgres', q{SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 3 GROUP BY 1}),
	'sent|300', 'B: every row of campaign 3 is sent');
is($node_b->safe_psql('postgres', q{SELECT id, status FROM wasend.campaigns WHERE id IN (1, 2) ORDER BY 1}),
	"1|completed\n2|draft", 'B: the completed and the draft campaign stay as they were');

WasendTest::load_mock_log($node_b, $mock_a, 'mock_a');
WasendTest::load_mock_log($node_b, $mock_b, 'mock_b');
is($node_b->safe_psql('postgres', q{SELECT count(*), count(*) FILTER (WHERE http_status = 200) FROM mock_b}),
	(304 - $sent_on_a) . '|' . (304 - $sent_on_a),
	'B\'s mock saw exactly the rows A had not sent (and B\'s four lane messages)');
is($node_b->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT phone_number_id, recipient
	                        FROM (SELECT * FROM mock_a UNION ALL SELECT * FROM mock_b) m
	                       WHERE http_status = 200 GROUP BY 1, 2 HAVING count(*) > 1) d}),
	'0', 'no recipient was sent twice across A and B');
is($node_b->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	  JOIN (SELECT * FROM mock_a UNION ALL SELECT * FROM mock_b) m
	    ON m.recipient = q.recipient AND m.wamid = q.wa_message_id
	 WHERE q.campaign_id IN (1, 3, 4, 6)}),
	'605', 'B: each sent row holds the wamid one of the mocks returned for it');

WasendTest::stop_mock($mock_a);
WasendTest::stop_mock($mock_b);
$node_a->stop;
$node_b->stop;
done_testing();
