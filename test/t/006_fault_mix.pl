# 006_fault_mix.pl — fault test 1: the mock answers a scripted mix of
# 500s, a burst of 130429, 131056, 131026, timeouts and dropped connections.
#
# Ends with the exact account: every row sent or failed (only the 131026
# recipients fail), 0 rows lost, no recipient accepted twice (and in any
# case no more than the in-flight cap), every row that met a retryable
# error retried and sent.  A request that timed out may have reached
# Meta, and so may one answered 500 without an error body: their rows are
# marked uncertain and retried after wasend.uncertain_retry_delay (2 s
# here), and no row whose request was answered otherwise is.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $inflight = 50;
my $mock = WasendTest::start_mock({
	numbers => { '6001' => { token => 'tok', rate => 200 } },
	rules => [
		{ to => '^1556000001[0-9]$', action => 'http500', times => 10 },
		{ to => '^1556000002[0-9]$', code => 131056, times => 10 },
		{ to => '^1556000003[0-4]$', code => 131026 },
		{ to => '^1556000004[0-9]$', action => 'hang', times => 10 },
		{ to => '^1556000005[0-9]$', action => 'drop', times => 10 },
		{ to => '.*', code => 130429, after => 200, times => 30 },
	],
});
my $node = WasendTest::new_node('faults', $mock,
	'wasend.max_inflight' => $inflight,
	'wasend.request_timeout_ms' => 3000,
	'wasend.uncertain_retry_delay' => 2,
	'wasend.max_attempts' => 6);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('6001', 'tok', 200);
	SELECT wasend.wasend_create_campaign('faults', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15560000000 + g)::text)) FROM generate_series(1, 600) g;
	SELECT wasend.wasend_start_campaign(1);
});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes through the faults');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');

is($a->{by_status}, 'failed=5 sent=595', 'rows: 595 sent, 5 failed');
is($a->{failed_by_code}, '131026=5', 'only the undeliverable recipients failed');
is($a->{lost}, 0, '0 rows lost');
is($a->{sent_without_wamid}, 0, 'every sent row has its wamid');
cmp_ok($a->{duplicates}, '<=', $inflight, "duplicates ($a->{duplicates}) within the in-flight cap");
is($a->{duplicates}, 0, 'the mock never accepted a recipient twice');
is($node->safe_psql('postgres', q{
	SELECT code, count(*) FROM mocklog WHERE http_status <> 200 GROUP BY 1 ORDER BY 1}),
	"130429|30\n131026|5\n131056|10\ndrop|10\nhang|10\nhttp500|10",
	'the mock answered the scripted faults');
# A fault is retried by wasend (attempts > 1) or, for a connection that
# died before any answer, by libcurl itself within the same attempt (it
# re-sends a request whose reused connection was closed under it): either
# way the mock saw the recipient again and accepted it once.
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT recipient FROM mocklog
	                       WHERE http_status <> 200 AND code <> '131026' GROUP BY 1) f
	  JOIN wasend.send_queue q USING (recipient)
	 WHERE q.status <> 'sent'
	    OR (SELECT count(*) FROM mocklog m WHERE m.recipient = f.recipient) < 2
	    OR (SELECT count(*) FROM mocklog m WHERE m.recipient = f.recipient AND m.http_status = 200) <> 1}),
	'0', "every row that met a retryable fault was sent again and accepted once ($a->{retried} retried by wasend)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE recipient LIKE '1556000004_' OR recipient LIKE '1556000001_'),
	       count(*) FILTER (WHERE recipient NOT LIKE '1556000004_' AND recipient NOT LIKE '1556000001_'
	                          AND recipient NOT LIKE '1556000005_')
	  FROM wasend.send_queue WHERE uncertain}),
	'20|0', 'the rows whose request timed out or got a bare 500 are uncertain, no row answered otherwise');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.status = 'sent'
	   AND q.wa_message_id = (SELECT m.wamid FROM mocklog m
	                           WHERE m.recipient = q.recipient AND m.http_status = 200)}),
	'595', 'each sent row stores the wamid of its one accepted request');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
