# 008_sigkill.pl — fault test 3: a sender is killed with SIGKILL
# mid-campaign, three times.
#
# Each kill makes the postmaster restart every backend; the database's
# supervisor then settles the rows left 'sending' (marked uncertain, queued
# again) before it starts its senders, and the campaign continues by
# itself.  Account: 0 lost; uncertain rows and duplicates within kills x
# senders x in-flight cap.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $inflight = 20;
my $workers = 2;
my $kills = 3;
my $mock = WasendTest::start_mock({ numbers => { '8001' => { token => 'tok', rate => 100 } } });
my $node = WasendTest::new_node('sigkill', $mock,
	'wasend.max_inflight' => $inflight,
	'wasend.workers' => $workers,
	# queued again at once: the mock posts no statuses that could settle them
	'wasend.uncertain_retry_delay' => 0,
	restart_after_crash => 'on');

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('8001', 'tok', 100);
	SELECT wasend.wasend_create_campaign('kill', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15580000000 + g)::text)) FROM generate_series(1, 600) g;
	SELECT wasend.wasend_start_campaign(1);
});

for my $k (1 .. $kills)
{
	my $target = 100 * $k;
	$node->poll_query_until('postgres',
		"SELECT count(*) >= $target FROM wasend.send_queue WHERE status = 'sent'")
	  or die "campaign stalled before kill $k";
	my $pid = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'});
	ok($pid && kill('KILL', $pid), "kill $k: SIGKILL to sender 1 (pid $pid)");
	# wait for the crash restart to finish and the senders to be back
	WasendTest::poll_across_restart($node, 'postgres',
		"SELECT count(*) = $workers FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%' AND pid <> $pid")
	  or die "senders did not come back after kill $k";
}

ok( WasendTest::poll_across_restart($node, 'postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes by itself after the kills');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
my $bound = $kills * $workers * $inflight;
is($a->{by_status}, 'sent=600', 'all 600 rows sent');
is($a->{lost}, 0, '0 rows lost');
cmp_ok($a->{uncertain}, '<=', $bound, "uncertain rows ($a->{uncertain}) within kills x senders x in-flight cap ($bound)");
cmp_ok($a->{duplicates}, '<=', $a->{uncertain}, "duplicates ($a->{duplicates}) only among uncertain rows");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT recipient FROM mocklog WHERE http_status = 200
	                       GROUP BY 1 HAVING count(*) > 1) d
	  JOIN wasend.send_queue q USING (recipient) WHERE NOT q.uncertain}),
	'0', 'every recipient accepted twice is marked uncertain');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile),
	qr/wasend settled \d+ rows left in flight by a stopped sender/, 'the supervisor logged what it settled');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
