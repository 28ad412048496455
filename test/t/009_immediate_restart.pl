# 009_immediate_restart.pl — fault test 4: PostgreSQL restarts in immediate
# mode mid-campaign.  The running campaign continues by itself; account:
# 0 lost, uncertain rows and duplicates within senders x in-flight cap.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $inflight = 20;
my $workers = 2;
my $mock = WasendTest::start_mock({ numbers => { '9001' => { token => 'tok', rate => 100 } } });
my $node = WasendTest::new_node('immediate', $mock,
	'wasend.max_inflight' => $inflight, 'wasend.workers' => $workers,
	# queued again at once: the mock posts no statuses that could settle them
	'wasend.uncertain_retry_delay' => 0);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('9001', 'tok', 100);
	SELECT wasend.wasend_create_campaign('restart', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15590000000 + g)::text)) FROM generate_series(1, 400) g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 150 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'nothing sent';
$node->stop('immediate');
$node->start;

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'after the immediate restart the campaign continues and completes by itself');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
my $bound = $workers * $inflight;
is($a->{by_status}, 'sent=400', 'all 400 rows sent');
is($a->{lost}, 0, '0 rows lost');
cmp_ok($a->{uncertain}, '<=', $bound, "uncertain rows ($a->{uncertain}) within senders x in-flight cap ($bound)");
cmp_ok($a->{duplicates}, '<=', $a->{uncertain}, "duplicates ($a->{duplicates}) only among uncertain rows");

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
