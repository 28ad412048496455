# 032_delivery_cap.pl — the delivery check (0.5.0): a sender whose in
# flight grows without delivering more stops growing it.
#
# The mock answers at most 300 messages a second, in order, each after at
# least 100 ms (capacity_per_sec: a server whose queue grows with what it
# is sent).  The number may send 1,000 a second, so the sender sends
# faster than answers come back, the latency it measures grows with what
# it has in flight, and Little's law alone would hold ever more in flight,
# up to wasend.max_inflight (4,000), without one answer more a second.
#
# Proves:
#   - the sender caps its in flight: between 4,000 and 8,000 of the 10,000
#     rows sent (by progress, not by time, so a slow machine only moves
#     the polls), no poll sees more than 1,000 in flight, nor a sender
#     meaning to hold more than 1,000 (hold_target); the server log says
#     the sender capped it;
#   - the campaign completes, every row sent once: 10,000 requests, no
#     recipient twice.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '3201' => { token => 'tok', rate => 1000 } },
	latency_ms => 100,
	capacity_per_sec => 300,
});
my $node = WasendTest::new_node('delivery', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend_add_number('3201', 'tok', 1000);
	SELECT wasend_create_campaign('slow server', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend_enqueue(1, array_agg((15593000000 + g)::text)) FROM generate_series(1, 10000) g;
	CREATE TABLE polls (at timestamptz DEFAULT clock_timestamp(), sent bigint,
	                    in_flight int, hold_target int);
	SELECT wasend_start_campaign(1);
});

# poll the senders while the campaign runs (bounded: 10,000 rows at 300 a
# second take 34 s; 2,400 polls of at least 100 ms are 4 minutes)
my $done = 0;
for (1 .. 2400)
{
	$node->safe_psql('postgres', q{
		INSERT INTO polls (sent, in_flight, hold_target)
		SELECT sum(sent), sum(in_flight), max(hold_target) FROM wasend_worker_stats()});
	if ($node->safe_psql('postgres',
		"SELECT status FROM wasend.campaigns WHERE id = 1") eq 'completed')
	{
		$done = 1;
		last;
	}
	usleep(100_000);
}
ok($done, 'the campaign completes');

my ($n, $inflight, $target) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), max(in_flight), max(hold_target) FROM polls
	 WHERE sent BETWEEN 4000 AND 8000});
cmp_ok($n, '>', 0, "polls between 4,000 and 8,000 rows sent ($n)");
cmp_ok($inflight, '<=', 1000,
	"in flight stays capped while the server's queue would take more ($inflight at most)");
cmp_ok($target, '<=', 1000,
	"the sender means to hold no more either (hold_target $target at most)");
like(slurp_file($node->logfile), qr/wasend sender \d+: in flight capped at \d+/,
	'the server log says the sender capped its in flight');

is($node->safe_psql('postgres', q{
	SELECT count(*), bool_and(status = 'sent'), max(attempts) FROM wasend.send_queue}),
	'10000|t|1', 'every row sent, each with one attempt');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient), count(*) FILTER (WHERE code <> '') FROM mocklog}),
	'10000|10000|0', 'the mock saw 10,000 requests, one per recipient, no error');

$node->stop;
done_testing();
