# 038_rate_slow_connect.pl — the rate holds in every 1 s window when new
# connections are slow to set up.
#
# A request that must first open a connection reaches the API later than
# the rate gate granted it, while requests granted after it on connections
# that open at once do not: without care they land together.  The mock
# here speaks HTTPS (HTTP/1.1), answers every send after 1 s, closes every
# connection after one answer (so every send opens a connection), and
# counts its throughput window strictly: every send that arrives counts,
# refused ones too, and a send is refused 130429 when 50 sends of the
# number arrived in the second before it.  Two databases send on the same
# 50 msg/s number (two senders share its gate).  Once both are sending,
# the next 150 connections stall 2.5 s before their TLS handshake.
#
# Proves: both campaigns complete, every row sent once; the mock refused
# nothing (0 x 130429); in no window (t - 1000 ms, t] did more than 50
# sends of the number arrive; and the stall did happen (150 connections
# held).
#
# Then the next 50 connections stall 20 s (requests time out after 30 s
# here): the number's sender has 50 sends granted and none written (the
# gate grants no more), and is terminated while they wait.  It stops after
# its drain with them still unwritten; they count as written then, so the
# number is not blocked: a new campaign on it completes, every row sent.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $rows = 300;		# per database

my $mock = WasendTest::start_mock({
	numbers => { '3201' => { token => 'tok', rate => 50 } },
	strict_rate => JSON::PP::true,
	requests_per_connection => 1,
	latency_ms => 1000,
}, tls => 1);
my $node = WasendTest::new_node('slowconnect', $mock,
	'wasend.http_version' => "'1.1'",
	'wasend.ca_file' => "'$mock->{ca_file}'",
	# the account reads are not what this is about
	'wasend.limits_refresh_interval' => 0,
	# longer than a stalled connection set-up (below) takes
	'wasend.request_timeout_ms' => 30000);

$node->safe_psql('postgres', 'CREATE DATABASE other');
for my $db ('postgres', 'other')
{
	my $first = $db eq 'postgres' ? 15550000000 : 15560000000;
	$node->safe_psql($db, qq{
		CREATE EXTENSION wasend;
		SELECT wasend.wasend_add_number('3201', 'tok', 50);
		SELECT wasend.wasend_create_campaign('slow', 1, '{"type":"text","text":{"body":"x"}}');
		SELECT wasend.wasend_enqueue(1, array_agg(($first + g)::text)) FROM generate_series(1, $rows) g;
	});
}
$node->safe_psql($_, 'SELECT wasend.wasend_start_campaign(1)') for ('postgres', 'other');

# once both databases send (bounded wait), new connections start stalling
my $both = 0;
for (1 .. 600)
{
	$both = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}) >= 20
	  && $node->safe_psql('other',
		q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}) >= 20;
	last if $both;
	usleep(100_000);
}
ok($both, 'both databases were sending before the stall');
WasendTest::mock_post($mock, '/__mock/config',
	{ connect_delay_ms => 2500, connect_delay_count => 150 });

for my $db ('postgres', 'other')
{
	ok($node->poll_query_until($db,
			q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
		"$db: the campaign completed");
	is($node->safe_psql($db, q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}),
		$rows, "$db: every row was sent");
}

my $stats = WasendTest::mock_stats($mock);
is($stats->{delayed_connections}, 150, '150 connections stalled 2.5 s');
is($stats->{by_code}{130429} // 0, 0, 'the strict mock refused nothing (0 x 130429)');

WasendTest::load_mock_log($node, $mock);
my $max = $node->safe_psql('postgres', q{
	SELECT max(n) FROM (
	  SELECT count(*) OVER (ORDER BY t_ms RANGE BETWEEN 999.999 PRECEDING AND CURRENT ROW) AS n
	    FROM mocklog WHERE phone_number_id = '3201') w});
cmp_ok($max, '<=', 50, "at most 50 sends arrived in any 1 s window (most: $max)");
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT recipient FROM mocklog WHERE http_status = 200
		                       GROUP BY 1 HAVING count(*) > 1) d}),
	0, 'no recipient was accepted twice');

# a sender that exits with grants still unwritten leaves none behind
WasendTest::mock_post($mock, '/__mock/config',
	{ connect_delay_ms => 20000, connect_delay_count => 50 });
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('stuck', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15570000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend.wasend_start_campaign(2);
});
ok($node->poll_query_until('postgres',
		q{SELECT sum(in_flight) = 50 FROM wasend.wasend_worker_stats()}),
	'50 sends granted, stalled in their connection set-up');
my $pids = $node->safe_psql('postgres', q{
	SELECT string_agg(pid::text, ',') FROM pg_stat_activity
	 WHERE backend_type LIKE 'wasend sender%' AND datname = 'postgres'});
$node->safe_psql('postgres', qq{SELECT pg_terminate_backend(pid) FROM unnest('{$pids}'::int[]) pid});
ok($node->poll_query_until('postgres', qq{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY ('{$pids}'::int[])}),
	'the senders stopped');
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('after', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(3, array_agg((15580000000 + g)::text)) FROM generate_series(1, 50) g;
	SELECT wasend.wasend_start_campaign(3);
});
ok($node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'a new campaign on the number completes after the senders left grants unwritten');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'sent'}),
	50, 'every row of it was sent');
like(slurp_file($node->logfile), qr/wasend sender \d+ stopping \([1-9]\d* requests abandoned/,
	'a sender stopped with requests abandoned');

$node->stop;
done_testing();
