# 050_sender_start_warnings.pl — senders that cannot start for want of background
# worker slots (max_worker_processes).
#
# Proves: with one slot too few, "wasend could not start sender 2" is
# warned at once, and not again while the supervisor keeps failing to
# start it (its failed starts are counted at DEBUG1: the warning is
# compared with the attempts seen, not with a clock); once every sender
# wanted runs again (wasend.workers lowered), one LOG line says so with
# the number of failed starts.  With max_worker_processes exactly as the
# README's formula gives it (launcher, supervisor and senders, webhook,
# metrics, PostgreSQL's logical replication launcher), every worker runs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({ numbers => {} });

sub count_log
{
	my ($node, $re) = @_;
	my @m = (slurp_file($node->logfile) =~ /$re/g);
	return scalar @m;
}

# --- one worker slot short: PostgreSQL's logical replication launcher,
# wasend's launcher, the supervisor and sender 1 take all 4
my $node = WasendTest::new_node('short', $mock,
	max_worker_processes => 4,
	log_min_messages => 'debug1',
	'wasend.workers' => 2,
	'wasend.limits_refresh_interval' => 0);
$node->safe_psql('postgres', q{CREATE EXTENSION wasend});

my $warn_re = qr/WARNING:  wasend could not start sender 2 in database "postgres"\n/;
my $again_re = qr/DEBUG:  wasend could not start sender 2 in database "postgres" again/;
ok($node->wait_for_log($warn_re), 'the first failed start is warned at once');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'}),
	'sender 1 runs');

# several supervisor cycles, each failing to start sender 2
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my $tries = 0;
while (($tries = count_log($node, $again_re)) < 5 && time < $deadline)
{
	usleep(200_000);
}
cmp_ok($tries, '>=', 5, "the supervisor tried again ($tries failed starts not warned about)");
is(count_log($node, $warn_re), 1, "one warning for those $tries failed starts");

# --- every sender wanted runs: said once
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.workers = 1; SELECT pg_reload_conf()});
ok($node->wait_for_log(
		qr/LOG:  wasend supervisor of "postgres": every sender runs again, after \d+ failed start\(s\) \(max_worker_processes was reached\)/),
	'once every sender wanted runs, the log says so');
my ($n) = slurp_file($node->logfile) =~ /every sender runs again, after (\d+) failed start/;
cmp_ok($n, '>', $tries, "it counts the failed starts ($n)");
is(count_log($node, $warn_re), 1, 'still one warning');
$node->stop;

# --- exactly the README's max_worker_processes: 1 launcher + 1 database x
# (1 supervisor + 2 senders) + webhook + metrics + PostgreSQL's logical
# replication launcher = 7, and every worker runs
my $full = WasendTest::new_node('exact', $mock,
	max_worker_processes => 1 + 1 * (1 + 2) + 1 + 1 + 1,
	'wasend.workers' => 2,
	'wasend.webhook_port' => PostgreSQL::Test::Cluster::get_free_port(),
	'wasend.metrics_port' => PostgreSQL::Test::Cluster::get_free_port(),
	'wasend.limits_refresh_interval' => 0);
$full->safe_psql('postgres', q{CREATE EXTENSION wasend});
ok($full->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE backend_type LIKE 'wasend sender%') = 2
	   AND count(*) FILTER (WHERE backend_type = 'wasend supervisor') = 1
	   AND count(*) FILTER (WHERE backend_type = 'wasend launcher') = 1
	   AND count(*) FILTER (WHERE backend_type = 'wasend webhook') = 1
	   AND count(*) FILTER (WHERE backend_type = 'logical replication launcher') = 1
	  FROM pg_stat_activity}),
	'with max_worker_processes = 7, both senders, the supervisor, the launcher, the webhook and the logical replication launcher run');
ok($full->wait_for_log(qr/wasend metrics listening on/), 'and the metrics worker');
is(count_log($full, qr/could not start/), 0, 'no worker failed to start');
$full->stop;

WasendTest::stop_mock($mock);
done_testing();
