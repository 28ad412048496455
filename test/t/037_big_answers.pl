# 037_big_answers.pl — the memory a sender holds for answers in flight is
# bounded, whatever size the API's answers are.
#
# The mock answers every send 200 with a wamid and a body padded to
# 300 kB, all but its last 16 bytes at once and the rest 4 s later, so a
# client that keeps answers holds each one for 4 s; one sender sends 400
# rows at 100/s (about 400 requests in flight at once).  Proves: the
# sender's anonymous memory (RssAnon, sampled while the campaign runs)
# grows by less than 40 MB, where keeping such answers would take about
# 120 MB (64 kB kept of an answer at most: Meta's answers are a few hundred
# bytes); every row is recorded as bad_response and failed, as
# wasend.error_policy says for that class (the campaign's circuit breaker
# is off: every answer is an error here); the sender lives on (same pid).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $rows = 400;
my $mock = WasendTest::start_mock({
	numbers => { '37001' => { token => 'tok-37001', rate => 100 } },
	rules => [ { to => '^1555037', action => 'big', bytes => 300000, hold_ms => 4000 } ],
});
my $node = WasendTest::new_node('big_answers', $mock,
	'wasend.workers' => 1,
	'wasend.limits_refresh_interval' => 0);

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('37001', 'tok-37001', 100);
	SELECT wasend.wasend_create_campaign('big', 1, '{"type":"text","text":{"body":"b"}}');
	-- every answer is an error here: no circuit breaker
	UPDATE wasend.campaigns SET error_threshold = 1 WHERE id = 1;
	SELECT wasend.wasend_enqueue(1, array_agg((15550370000 + g)::text)) FROM generate_series(1, $rows) g;
});
my $sender_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'};
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'"),
	'one sender runs');
my $pid = $node->safe_psql('postgres', $sender_sql);

# RssAnon of the sender, in kB
sub rss_anon
{
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+) kB/;
	}
	return undef;
}

my $base = rss_anon();
ok(defined $base, "the sender's RssAnon can be read ($base kB)");
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
my $max = $base;
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my $done = 0;
while (time < $deadline)
{
	my $now = rss_anon();
	$max = $now if defined $now && $now > $max;
	if ($node->safe_psql('postgres', q{SELECT status FROM wasend.campaigns WHERE id = 1}) eq 'completed')
	{
		$done = 1;
		last;
	}
	usleep(50_000);
}
ok($done, "the campaign of $rows rows completed");
my $grew = int(($max - $base) / 1024);
note("sender RssAnon: $base kB before, at most $max kB while sending (+$grew MB)");
ok($max - $base < 40 * 1024, "the sender's memory grew by less than 40 MB (+$grew MB) with 300 kB answers");
is($node->safe_psql('postgres', q{
	SELECT status, last_error_class, count(*) FROM wasend.send_queue GROUP BY 1, 2}),
	"failed|bad_response|$rows", 'every row is recorded as bad_response and failed, as the error policy says');
is($node->safe_psql('postgres', q{SELECT action FROM wasend.error_policy WHERE code = 'bad_response'}),
	'fail', '(the policy of bad_response is fail)');
is($node->safe_psql('postgres', $sender_sql), $pid, 'the sender lives on (same pid)');

$node->stop;
done_testing();
