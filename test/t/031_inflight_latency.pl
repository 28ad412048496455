# 031_inflight_latency.pl — what the senders size from what they measure:
# in flight by Little's law, one sender per number, the latency
# histograms, and a 130429 sent again at once.
#
# Proves, against the mock answering every request after 600 ms (which it
# reports in a Server-Timing header):
#
#   - with the defaults, a sender means to hold at least its queue (200
#     rows, wasend.batch_size) plus pace x 600 ms x 1.5 for a 1,000 msg/s
#     number (hold_target: more than the 250 ms it assumes before the first
#     answers give, so it was measured; and the latency it measures can only
#     be longer than the mock's, so this holds however slow the machine),
#     and every row is sent once;
#   - wasend.max_inflight caps it: at 40, no poll sees more than 40 rows
#     held or in flight by a sender, and the campaign still completes;
#   - each number's rows are claimed by one sender, the numbers split
#     between the two (their sent counts);
#   - latency_p50_ms is at least the mock's 600 ms, added_p50_ms (the same
#     less Server-Timing) is set and below it;
#   - a recipient refused once with 130429 is sent again by the sender
#     itself: the mock saw it twice, the row is sent with 1 attempt and no
#     error; one refused 4 times is recorded after the third resend (the
#     error policy's retry) and sent then: 5 requests, 2 attempts.  No
#     other recipient was sent twice;
#   - an error answer that says 130429 everywhere but at error.code (an
#     earlier duplicate "code", error_data.code, its message) is not sent
#     again: one request, recorded as its real code.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'3101' => { token => 'tok', rate => 1000 },
		'3102' => { token => 'tok', rate => 1000 },
		'3103' => { token => 'tok', rate => 100 },
	},
	latency_ms => 600,
	rules => [
		{ to => '^15591000007$', code => 130429, times => 1 },
		{ to => '^15591000011$', code => 130429, times => 4 },
		{ to => '^15591000013$', action => 'decoy', code => 131026 },
	],
});
my $node = WasendTest::new_node('inflight', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('3101', 'tok', 1000);
	SELECT wasend.wasend_add_number('3102', 'tok', 1000);
	SELECT wasend.wasend_add_number('3103', 'tok', 100);
	SELECT wasend.wasend_create_campaign('a', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('b', 2, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('refused', 3, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15590000000 + g)::text)) FROM generate_series(1, 3000) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15590100000 + g)::text)) FROM generate_series(1, 3000) g;
	SELECT wasend.wasend_enqueue(3, array_agg((15591000000 + g)::text)) FROM generate_series(1, 20) g;
	CREATE TABLE polls (at timestamptz DEFAULT clock_timestamp(), sender int,
	                    in_flight int, held int, hold_target int);
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_start_campaign(2);
	SELECT wasend.wasend_start_campaign(3);
});

# poll the senders while the campaigns run (bounded)
sub poll_until_done
{
	my ($ids) = @_;
	for (1 .. 1200)
	{
		$node->safe_psql('postgres', q{
			INSERT INTO polls (sender, in_flight, held, hold_target)
			SELECT sender, in_flight, held, hold_target FROM wasend.wasend_worker_stats()});
		return 1 if $node->safe_psql('postgres',
			"SELECT count(*) FROM wasend.campaigns WHERE id IN ($ids) AND status <> 'completed'") eq '0';
		usleep(100_000);
	}
	return 0;
}
ok(poll_until_done('1, 2, 3'), 'the three campaigns complete');

cmp_ok($node->safe_psql('postgres', 'SELECT max(hold_target) FROM polls'), '>=',
	200 + int(1000 * 0.985 * 0.6 * 1.5),
	'a sender of a 1,000 msg/s number answering after 600 ms means to hold its queue + pace x latency x 1.5');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient), bool_and(status = 'sent'), max(attempts)
	  FROM wasend.send_queue WHERE campaign_id IN (1, 2)}),
	'6000|6000|t|1', 'every row of the two big campaigns sent, each once');

# claimed_by is cleared once a row is recorded: the senders' own counts
# show it.  Numbers 1 and 3 (odd ids) go to one sender, number 2 to the
# other: 3,000 + 19 rows sent (the 20th, the decoy below, fails) against
# 3,000.
is($node->safe_psql('postgres', q{
	SELECT string_agg(sent::text, ',' ORDER BY sent) FROM wasend.wasend_worker_stats()}),
	'3000,3019', "each number's rows were sent by one sender, the numbers split between the two");

my ($lat, $added) = split /\|/, $node->safe_psql('postgres', q{
	SELECT round(min(latency_p50_ms)), round(max(added_p50_ms)::numeric, 1)
	  FROM wasend.wasend_worker_stats() WHERE sent > 0});
cmp_ok($lat, '>=', 600, 'latency_p50_ms is at least the mock answer delay');
ok(defined $added && $added ne '' && $added < $lat,
	"added_p50_ms ($added) is set from Server-Timing and below latency_p50_ms ($lat)");

# the 130429s
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT string_agg(format('%s:%s:%s', recipient, n, refused), ',' ORDER BY recipient) FROM (
	  SELECT recipient, count(*) n, count(*) FILTER (WHERE code = '130429') refused FROM mocklog
	   WHERE recipient IN ('15591000007', '15591000011') GROUP BY 1) x}),
	'15591000007:2:1,15591000011:5:4', 'the mock saw the refused recipients 2 and 5 times');
is($node->safe_psql('postgres', q{
	SELECT string_agg(format('%s|%s|%s|%s', recipient, status, attempts, coalesce(last_error_code::text, '-')), ','
	                  ORDER BY recipient)
	  FROM wasend.send_queue WHERE recipient IN ('15591000007', '15591000011')}),
	'15591000007|sent|1|-,15591000011|sent|2|-',
	'refused once: sent again by the sender (1 attempt); 4 times: recorded once, retried, sent');
# an answer that says 130429 everywhere but at error.code (an earlier
# duplicate key, error_data.code, the message) is no refusal: the sender
# reads error.code as jsonb does (the last key) and records it
is($node->safe_psql('postgres', q{
	SELECT format('%s|%s|%s|%s', (SELECT count(*) FROM mocklog WHERE recipient = '15591000013'),
	              status, attempts, last_error_code)
	  FROM wasend.send_queue WHERE recipient = '15591000013'}),
	'1|failed|1|131026', 'a decoy 130429 is not sent again: recorded as its real code, 131026');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT recipient FROM mocklog WHERE code IS NULL OR code = ''
	                       GROUP BY 1 HAVING count(*) > 1) x}),
	'0', 'no recipient accepted twice');

# the cap
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET wasend.max_inflight = 40;
	SELECT pg_reload_conf();
	TRUNCATE polls;
	SELECT wasend.wasend_create_campaign('capped', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(4, array_agg((15592000000 + g)::text)) FROM generate_series(1, 600) g;
});
# a new backend sees 40 once the postmaster has reloaded, and it signals
# the senders then: their next turn, before any claim, reads it too
ok($node->poll_query_until('postgres', q{SELECT current_setting('wasend.max_inflight') = '40'}),
	'the server took wasend.max_inflight = 40');
$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(4)');
ok(poll_until_done('4'), 'the capped campaign completes');
is($node->safe_psql('postgres', q{
	SELECT max(in_flight) <= 40 AND max(held) <= 40 AND max(hold_target) <= 40, count(*) > 0 FROM polls}),
	't|t', 'no poll saw a sender hold or have in flight more than 40 rows');
is($node->safe_psql('postgres', q{
	SELECT count(*), bool_and(status = 'sent'), max(attempts) FROM wasend.send_queue WHERE campaign_id = 4}),
	'600|t|1', 'every row of the capped campaign sent once');

$node->stop;
WasendTest::stop_mock($mock);
done_testing();
