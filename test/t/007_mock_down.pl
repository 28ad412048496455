# 007_mock_down.pl — fault test 2: the API is down for a while (connections
# refused), then comes back.
#
# Rows that met the outage are retried with backoff and sent once the API is
# back.  Account over both lives of the mock: 0 lost, duplicates within the
# in-flight cap (a request the first mock accepted but whose answer was
# lost when it died may legitimately be sent again).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $inflight = 20;
my $config = { numbers => { '7001' => { token => 'tok', rate => 100 } } };
my $mock = WasendTest::start_mock($config);
my $node = WasendTest::new_node('down', $mock,
	'wasend.max_inflight' => $inflight,
	'wasend.max_attempts' => 10);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('7001', 'tok', 100);
	SELECT wasend.wasend_create_campaign('outage', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15570000000 + g)::text)) FROM generate_series(1, 400) g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 100 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'nothing sent';

WasendTest::stop_mock($mock);
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) >= 20 FROM wasend.send_queue WHERE last_error_class = 'connect'}),
	'while the API is down, sends fail to connect and are queued for retry');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM wasend.send_queue WHERE status = 'failed'}),
	'0', 'no row fails during the outage');

WasendTest::load_mock_log($node, $mock, 'mocklog1', from_file => 1);
my $mock2 = WasendTest::start_mock($config, port => $mock->{port});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'once the API is back, the campaign completes');
WasendTest::load_mock_log($node, $mock2, 'mocklog2', from_file => 1);

my $a = WasendTest::account($node, 'mocklog1', 'mocklog2');
is($a->{by_status}, 'sent=400', 'all 400 rows sent');
is($a->{lost}, 0, '0 rows lost');
cmp_ok($a->{duplicates}, '<=', $inflight, "duplicates ($a->{duplicates}) within the in-flight cap ($inflight)");
cmp_ok($a->{retried}, '>=', 20, "rows retried after the outage: $a->{retried}");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.wa_message_id IN (SELECT wamid FROM mocklog1 UNION ALL SELECT wamid FROM mocklog2)}),
	'400', 'every row stores a wamid the API returned');

WasendTest::stop_mock($mock2);
$node->stop;
done_testing();
