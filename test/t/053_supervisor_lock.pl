# 053_supervisor_lock.pl — the supervisor of a database that sends nothing
# (here: a copy of another database) looks every few seconds whether that
# still holds.  When that look fails (a lock held past its lock_timeout),
# it keeps what it knew: the supervisor goes on, nothing crashes, and the
# reason is not said again.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use WasendTest;

my $mock = WasendTest::start_mock({ numbers => {} });
my $node = WasendTest::new_node('suplock', $mock, 'wasend.workers' => 1);
$node->safe_psql('postgres', q{CREATE DATABASE app});
$node->safe_psql('app', q{CREATE EXTENSION wasend});
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'wasend supervisor' AND datname = 'app'})
  or die 'no supervisor in app';
$node->safe_psql('postgres', q{CREATE DATABASE app_copy TEMPLATE app});
ok($node->wait_for_log(qr/wasend sends nothing in database "app_copy": it is a copy/),
	'the copy sends nothing and says why');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend supervisor' AND datname = 'app_copy'});
ok($pid =~ /^\d+$/, 'the copy has a supervisor');
my $off = -s $node->logfile;

# hold the table the supervisor reads past its lock_timeout (1 s)
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('app_copy'), '-c',
	  'BEGIN; LOCK TABLE wasend.database_identity IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(12); COMMIT;' ],
	'>', \$out, '2>', \$err);
ok( $node->poll_query_until('postgres',
		qq{SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid}),
	'the supervisor\'s look waits for the lock');
$h->finish;
is($err, '', 'the lock holder finished');

# once more after the lock: the look succeeds again
$node->poll_query_until('postgres',
	qq{SELECT state = 'idle' OR wait_event = 'Extension' FROM pg_stat_activity WHERE pid = $pid})
  or die 'supervisor gone';
is($node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend supervisor' AND datname = 'app_copy'}),
	$pid, 'the same supervisor runs on');
my $log = slurp_file($node->logfile, $off);
unlike($log, qr/terminated by signal|server process .* exited with exit code/,
	'no process crashed or was restarted');
unlike($log, qr/wasend sends nothing in database "app_copy"/,
	'the reason is not said again');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
