# 017_launcher_restart.pl — the launcher can be cancelled, terminated or
# restarted mid-campaign without duplicating senders or messages.
#
# A cancel (pg_cancel_backend) is ignored: the launcher keeps its pid.
# After a terminate (pg_terminate_backend) the postmaster starts a new
# launcher (the server is never left without one until its next restart),
# which adopts the database's running supervisor (its pid is in shared
# memory) instead of starting a second one: a second set of senders in the
# same slots (4 senders for wasend.workers = 2) would re-queue rows the
# live senders were still sending.  A terminated supervisor first stops
# its senders (they finish and record what is in flight); the launcher
# then starts a new supervisor, which starts its own.  Never more than
# wasend.workers senders, nor more than one supervisor, run at once (and
# exactly wasend.workers after each step); the mock log shows every
# recipient accepted exactly once, and no row becomes uncertain.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '17001' => { token => 'tok-17001', rate => 100 } },
	latency_ms => 100,
});
my $node = WasendTest::new_node('launcher', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('17001', 'tok-17001', 100);
	SELECT wasend.wasend_create_campaign('restart', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15517000000 + g)::text)) FROM generate_series(1, 1500) g;
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';

my $senders = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'};
my $launcher = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend launcher'};
# the most senders seen at once, sampled while the test waits
my $max_senders = 0;
my $max_supervisors = 0;
my $sample = sub {
	my ($n, $s) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT ($senders), (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'wasend supervisor')});
	$max_senders = $n if $n > $max_senders;
	$max_supervisors = $s if $s > $max_supervisors;
};

$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(1)');
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 200 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'campaign did not send';

# --- cancel: ignored
my $l1 = $node->safe_psql('postgres', $launcher);
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($l1)"), 't', 'cancel sent to the launcher');
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 400 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'campaign stalled after the cancel';
is($node->safe_psql('postgres', $launcher), $l1, 'the launcher ignored the cancel (same pid)');
is($node->safe_psql('postgres', $senders), '2', 'still exactly 2 senders');

# --- terminate the launcher: a new one adopts the running supervisor
my $supervisor = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend supervisor'};
my $old_senders = $node->safe_psql('postgres',
	q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'});
my $s1 = $node->safe_psql('postgres', $supervisor);
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($l1)"), 't', 'terminate sent to the launcher');
my $l2 = '';
for (1 .. 600)
{
	$sample->();
	$l2 = $node->safe_psql('postgres', $launcher);
	last if $l2 ne '' && $l2 ne $l1;
	usleep(100_000);
}
isnt($l2, '', 'a launcher runs again after pg_terminate_backend');
isnt($l2, $l1, 'it is a new launcher');
is($node->safe_psql('postgres', $supervisor), $s1, 'the supervisor kept running (adopted, not doubled)');
is($node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'}),
	$old_senders, 'the same two senders kept sending');

# --- terminate the supervisor: it stops its senders, a new one starts new senders
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($s1)"), 't', 'terminate sent to the supervisor');
my $s2 = '';
for (1 .. 600)
{
	$sample->();
	$s2 = $node->safe_psql('postgres', $supervisor);
	last if $s2 ne '' && $s2 ne $s1
	  && $node->safe_psql('postgres', qq{
		SELECT count(*) = 2 AND count(*) FILTER (WHERE pid IN ($old_senders)) = 0
		  FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'}) eq 't';
	usleep(100_000);
}
isnt($s2, $s1, 'the launcher started a new supervisor');
like(slurp_file($node->logfile), qr/wasend sender \d stopping \(0 requests abandoned/,
	'the old senders stopped cleanly, nothing abandoned');

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes');
$sample->();
cmp_ok($max_senders, '<=', 2, "never more than 2 senders at once (most seen: $max_senders)");
cmp_ok($max_supervisors, '<=', 1, "never more than 1 supervisor at once (most seen: $max_supervisors)");
is($node->safe_psql('postgres', $senders), '2', 'exactly 2 senders at the end');

WasendTest::load_mock_log($node, $mock);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, 'sent=1500', 'all 1500 rows sent');
is($a->{duplicates}, 0, '0 duplicates in the mock log');
is($a->{uncertain}, 0, 'no row became uncertain: the senders stopped cleanly');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
