# 055_patroni.pl — exact accounting through a switchover and a crash
# failover under Patroni (etcd and three members on loopback).
#
# Proves, on a real Patroni cluster with synchronous_mode (n1 and n2 are
# sync candidates, n3 is tagged nosync) and one mock Graph API per member
# (each member's wasend.api_base_url points at its own mock, so every
# request is traced to the member that sent it), while one campaign of
# unique recipients runs by itself:
#   (a) patronictl switchover (leader -> sync standby) mid-campaign;
#   (b) the async replica's walreceiver is stopped (held behind), a signed
#       inbound STOP from a recipient whose row is not yet claimed gets its
#       200 from the leader's webhook, then the leader's Patroni and its
#       postmaster are killed (SIGKILL); the sync standby takes over and
#       the held replica is resumed;
# that the campaign completes by itself on the new leader, that every
# recipient but the STOP one got an accepted request, that every recipient
# that got two or more is marked uncertain (no unmarked duplicate), that
# the STOP is kept (suppressed on the new leader, no request after its
# 200), that only the leader of the moment sent (replicas never), and that
# the old leader rejoins as a replica (pg_rewind).
#
# Test names start with "harness:" (the cluster did what the scenario
# needs: elections, rejoins, the replica held) or "accounting:" (what
# wasend guarantees); a harness step that cannot go on dies with
# "HARNESS FAILURE: ...".
#
# Environment: WASEND_HA_DURABILITY puts wasend.durability into the DCS
# (unset: the extension's default); WASEND_HA_MEASURE=1 runs the scenarios
# without failing on the accounting assertions and prints one
# "HA-SUMMARY ..." line per scenario (test/ha/measure.sh collects them).
#
# Runs on PostgreSQL 15 only (Debian's patroni/etcd packages, bin_dir of
# the pg_config in PATH); skipped with the reason otherwise.
use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use File::Path qw(make_path);
use File::Temp;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WasendTest;

# --- skip unless the tools and PostgreSQL 15 are there
my $bindir = `pg_config --bindir`;
chomp $bindir;
my ($major) = (`pg_config --version` // '') =~ /PostgreSQL (\d+)/;
sub have { my ($p) = @_; return system("command -v $p >/dev/null 2>&1") == 0; }
plan skip_all => 'Patroni test runs on PostgreSQL 15 only (pg_config says ' . ($major // '?') . ')'
  unless defined $major && $major == 15;
for my $tool (qw(patroni patronictl etcd))
{
	plan skip_all => "$tool is not installed (test/deps.sh installs patroni etcd-server etcd-client)"
	  unless have($tool);
}
for my $tool (qw(pg_basebackup pg_rewind initdb))
{
	plan skip_all => "$bindir/$tool is missing" unless -x "$bindir/$tool";
}
plan skip_all => 'Patroni runs initdb, which refuses root: run as postgres (make test does)'
  if $> == 0;

my $measure = $ENV{WASEND_HA_MEASURE} ? 1 : 0;
my $durability = $ENV{WASEND_HA_DURABILITY};
$durability = undef if defined $durability && $durability eq '';
my $durability_label = $durability // 'default';

my $T = File::Temp::tempdir('patroni_XXXX', DIR => abs_path($PostgreSQL::Test::Utils::tmp_check));
make_path("$T/sock", "$T/log");
note("cluster files in $T");

my $http = HTTP::Tiny->new(timeout => 5);

# every process the test starts (pid => what); cleanup kills exactly these,
# the postmasters named in the members' postmaster.pid, and resumes the
# walreceiver the test stopped
my %started;
my $stopped_walreceiver;
my %member;

sub harness_fail
{
	my ($msg) = @_;
	die "HARNESS FAILURE: $msg\n";
}

# spawn($log, @cmd): start @cmd with stdout and stderr appended to $log
sub spawn
{
	my ($log, @cmd) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDOUT, '>>', $log or POSIX::_exit(126);
		open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
		open STDIN, '<', '/dev/null';
		exec @cmd or POSIX::_exit(127);
	}
	$started{$pid} = "@cmd";
	return $pid;
}

# alive($pid): the process exists (our own children are reaped first)
sub alive
{
	my ($pid) = @_;
	return 0 unless $pid;
	waitpid($pid, WNOHANG) if $started{$pid};
	return kill(0, $pid) ? 1 : 0;
}

# stop_pid($pid, $sig, $grace): signal, wait up to $grace s, then SIGKILL
sub stop_pid
{
	my ($pid, $sig, $grace) = @_;
	return unless alive($pid);
	kill $sig, $pid;
	my $until = time() + $grace;
	usleep(100_000) while alive($pid) && time() < $until;
	if (alive($pid))
	{
		kill 'KILL', $pid;
		usleep(50_000) while alive($pid) && time() < $until + 5;
	}
	delete $started{$pid};
}

# processes_in($dir): how many processes run with $dir as their working
# directory (PostgreSQL's processes run in their data directory)
sub processes_in
{
	my ($dir) = @_;
	my $n = 0;
	for my $p (glob '/proc/[0-9]*')
	{
		my $cwd = readlink("$p/cwd");
		$n++ if defined $cwd && $cwd eq $dir;
	}
	return $n;
}

sub postmaster_pid
{
	my ($m) = @_;
	open my $fh, '<', "$m->{data}/postmaster.pid" or return undef;
	my $pid = <$fh>;
	close $fh;
	return undef unless defined $pid;
	chomp $pid;
	return $pid =~ /^\d+$/ ? $pid : undef;
}

sub cleanup
{
	kill 'CONT', $stopped_walreceiver if $stopped_walreceiver;
	# Patroni stops its PostgreSQL (fast) on SIGTERM
	for my $m (values %member)
	{
		stop_pid($m->{patroni}, 'TERM', 30) if $m->{patroni};
	}
	for my $m (values %member)
	{
		my $pm = postmaster_pid($m);
		next unless $pm && kill(0, $pm);
		kill 'QUIT', $pm;    # immediate shutdown
		my $until = time() + 10;
		usleep(100_000) while kill(0, $pm) && time() < $until;
		kill 'KILL', $pm if kill(0, $pm);
	}
	stop_pid($_, 'TERM', 10) for keys %started;    # etcd and anything left
}

END
{
	local $?;
	cleanup();
}
$SIG{INT} = $SIG{TERM} = sub { die "killed by a signal\n" };

# wait_until($what, $seconds, $sub): poll $sub every 200 ms until it is
# true; a harness failure after $seconds
sub wait_until
{
	my ($what, $seconds, $sub) = @_;
	my $until = time() + $seconds;
	while (1)
	{
		my $r = eval { $sub->() };
		return $r if $r;
		harness_fail("$what: not within $seconds s") if time() > $until;
		usleep(200_000);
	}
}

sub rest_code
{
	my ($m, $path) = @_;
	return $http->get("http://127.0.0.1:$m->{rest}$path")->{status};
}

# psql_member($m, $sql): the query's output (unaligned, tuples only); dies on error
sub psql_member
{
	my ($m, $sql) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGCONNECT_TIMEOUT} = 5;
	my $ok = IPC::Run::run(
		[ "$bindir/psql", '-X', '-qAt', '-v', 'ON_ERROR_STOP=1',
		  '-h', '127.0.0.1', '-p', $m->{pg}, '-U', 'postgres', '-d', 'postgres', '-c', $sql ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	die "psql on $m->{name} failed: $err" unless $ok;
	chomp $out;
	return $out;
}

# a member as WasendTest::load_mock_log wants a node
{
	package PatroniMember;
	sub safe_psql { my ($self, $db, $sql) = @_; return main::psql_member($self, $sql); }
	sub connstr { my ($self, $db) = @_; return "host=127.0.0.1 port=$self->{pg} user=postgres dbname=$db"; }
}

# --- secrets: the app secret file, the same path on every member
my $secret = 'ha-app-secret-' . int(rand(1e9));
{
	sysopen(my $fh, "$T/app_secret", O_WRONLY | O_CREAT | O_TRUNC, 0600) or die "$T/app_secret: $!";
	print $fh "$secret\n";
	close $fh;
}

# --- etcd
my $etcd_port = PostgreSQL::Test::Cluster::get_free_port();
my $etcd_peer = PostgreSQL::Test::Cluster::get_free_port();
my $etcd = spawn("$T/log/etcd.log", 'etcd', '--name', 'e1', '--data-dir', "$T/etcd",
	'--listen-client-urls', "http://127.0.0.1:$etcd_port",
	'--advertise-client-urls', "http://127.0.0.1:$etcd_port",
	'--listen-peer-urls', "http://127.0.0.1:$etcd_peer",
	'--initial-advertise-peer-urls', "http://127.0.0.1:$etcd_peer",
	'--initial-cluster', "e1=http://127.0.0.1:$etcd_peer",
	'--initial-cluster-state', 'new', '--initial-cluster-token', 'wasend-ha',
	'--heartbeat-interval', '100', '--election-timeout', '1000', '--log-level', 'warn');
wait_until('etcd answers /health', 60, sub {
	my $r = $http->get("http://127.0.0.1:$etcd_port/health");
	return $r->{success} && $r->{content} =~ /"health":\s*"true"/;
});

# --- one mock per member; the number's mock rate is far above wasend's,
# so that the mock never refuses and wasend's pacing decides
my $rate = 90;
my $N = 2400;
my $pnid = '7001';
for my $i (1 .. 3)
{
	my $name = "n$i";
	$member{$name} = bless {
		name => $name,
		pg => PostgreSQL::Test::Cluster::get_free_port(),
		rest => PostgreSQL::Test::Cluster::get_free_port(),
		wh => PostgreSQL::Test::Cluster::get_free_port(),
		data => "$T/data/$name",
		yml => "$T/$name.yml",
		mock => WasendTest::start_mock({
			numbers => { $pnid => { token => 'tok', rate => 10000 } },
			latency_ms => 20, jitter_ms => 10 }),
	}, 'PatroniMember';
}
my ($n1, $n2, $n3) = @member{qw(n1 n2 n3)};

# --- the members' configuration (JSON is YAML)
my %dcs_params = (
	max_worker_processes => 16,          # DCS only: Patroni ignores a local value
	max_wal_senders => 10,
	max_replication_slots => 10,
	wal_level => 'replica',
	hot_standby => 'on',
	wal_log_hints => 'on',
	wal_keep_size => '128MB',
	shared_buffers => '32MB',
	shared_preload_libraries => 'wasend',
	'wasend.workers' => 2,
	'wasend.on_uncertain' => 'retry',
	'wasend.rate_headroom' => '0.90',
	'wasend.app_secret_file' => "$T/app_secret",
	(defined $durability ? ('wasend.durability' => $durability) : ()),
);
for my $m (values %member)
{
	my $name = $m->{name};
	my $conf = {
		scope => 'wasend-ha',
		namespace => '/wasend/',
		name => $name,
		log => { level => 'INFO', dir => "$T/log/$name" },
		restapi => { listen => "127.0.0.1:$m->{rest}", connect_address => "127.0.0.1:$m->{rest}" },
		etcd3 => { hosts => "127.0.0.1:$etcd_port" },
		bootstrap => {
			dcs => {
				ttl => 15, loop_wait => 2, retry_timeout => 4,
				maximum_lag_on_failover => 1048576,
				synchronous_mode => JSON::PP::true,
				synchronous_mode_strict => JSON::PP::false,
				synchronous_node_count => 1,
				postgresql => {
					use_pg_rewind => JSON::PP::true,
					use_slots => JSON::PP::true,
					parameters => \%dcs_params,
				},
			},
			initdb => [ { encoding => 'UTF8' }, { locale => 'C' }, 'data-checksums' ],
			pg_hba => [
				'local all all trust', 'host all all 127.0.0.1/32 trust',
				'local replication all trust', 'host replication all 127.0.0.1/32 trust' ],
		},
		postgresql => {
			listen => "127.0.0.1:$m->{pg}",
			connect_address => "127.0.0.1:$m->{pg}",
			data_dir => $m->{data},
			bin_dir => $bindir,
			pgpass => "$T/pgpass.$name",
			authentication => {
				superuser => { username => 'postgres' },
				replication => { username => 'postgres' },
				rewind => { username => 'postgres' },
			},
			# local parameters override the DCS: each member its own mock and port
			parameters => {
				unix_socket_directories => "$T/sock",
				'wasend.api_base_url' => $m->{mock}{url},
				'wasend.webhook_port' => $m->{wh},
			},
		},
		tags => { nofailover => JSON::PP::false, noloadbalance => JSON::PP::false,
			clonefrom => JSON::PP::false, nosync => ($name eq 'n3' ? JSON::PP::true : JSON::PP::false) },
	};
	make_path("$T/log/$name");
	open my $fh, '>', $m->{yml} or die "$m->{yml}: $!";
	print $fh JSON::PP->new->canonical->pretty->encode($conf);
	close $fh;
}

sub start_patroni
{
	my ($m) = @_;
	$m->{patroni} = spawn("$T/log/$m->{name}.out", 'patroni', $m->{yml});
	return;
}

sub is_primary
{
	my ($m) = @_;
	return rest_code($m, '/primary') == 200
	  && psql_member($m, 'SELECT NOT pg_is_in_recovery()') eq 't';
}

# --- boot: n1 bootstraps and leads, n2 and n3 clone from it
my $t0 = time();
start_patroni($n1);
wait_until('n1 bootstraps and leads', 120, sub { is_primary($n1) });
start_patroni($n2);
start_patroni($n3);
wait_until('n2 becomes the sync standby', 120, sub { rest_code($n2, '/sync') == 200 });
wait_until('n3 becomes an async replica', 120, sub { rest_code($n3, '/async') == 200 });
pass(sprintf('harness: etcd and three Patroni members up in %.0f s (n1 leader, n2 sync, n3 async)',
	time() - $t0));
if (defined $durability)
{
	is(psql_member($n1, q{SELECT current_setting('wasend.durability', true)}), $durability,
		"harness: wasend.durability = $durability from the DCS");
}

# --- the campaign: N unique recipients, the last one (claimed last) will write STOP
my $base = 15570000000;
my $stop_recipient = $base + $N;
psql_member($n1, qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok', $rate);
	SELECT wasend.wasend_create_campaign('ha', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg(($base + g)::text ORDER BY g)) FROM generate_series(1, $N) g;
	SELECT wasend.wasend_start_campaign(1);
});

sub accepted
{
	my ($m) = @_;
	return WasendTest::mock_stats($m->{mock})->{by_status}{200} // 0;
}

# --- (a) switchover n1 -> n2 after about a fifth of the campaign
wait_until('n1 sends a fifth of the campaign', 120, sub { accepted($n1) >= $N / 5 });
my $t_sw = time();
{
	my ($out, $err);
	IPC::Run::run([ 'patronictl', '-c', $n1->{yml}, 'switchover', '--leader', 'n1',
		'--candidate', 'n2', '--force' ], '>', \$out, '2>', \$err, IPC::Run::timeout(120))
	  or harness_fail("patronictl switchover failed: $out $err");
	note("patronictl switchover: $out");
}
wait_until('n2 leads after the switchover', 90, sub { is_primary($n2) });
my $t_sw_done = time();
wait_until('n1 rejoins as n2\'s sync standby', 120, sub { rest_code($n1, '/sync') == 200 });
pass(sprintf('harness: switchover n1 -> n2 took %.1f s; n1 is the sync standby again', $t_sw_done - $t_sw));

# --- (b) crash of n2 with n3 held behind
wait_until('n3 streams from n2', 90, sub {
	psql_member($n3, q{SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'}) eq $n2->{pg};
});
wait_until('n2 sends after the switchover', 60, sub { accepted($n2) >= 50 });
my $wr = psql_member($n3, q{SELECT pid FROM pg_stat_wal_receiver});
harness_fail("no walreceiver pid on n3") unless $wr =~ /^\d+$/;
kill 'STOP', $wr or harness_fail("cannot stop n3's walreceiver $wr");
$stopped_walreceiver = $wr;
my $after_stop = accepted($n2);
wait_until('n2 keeps sending while n3 is held behind', 30, sub { accepted($n2) >= $after_stop + 20 });
pass('harness: n2 kept sending with n3\'s walreceiver stopped');

my $r_state = psql_member($n2, qq{SELECT status || ' ' || attempts FROM wasend.send_queue WHERE recipient = '$stop_recipient'});
harness_fail("the STOP recipient's row is already claimed ($r_state): the campaign went too far")
  unless $r_state eq 'ready 0';
my $body = WasendTest::webhook_body(WasendTest::wh_inbound(
	from => $stop_recipient, phone_number_id => $pnid, body => 'STOP'));
my $res = $http->post("http://127.0.0.1:$n2->{wh}/webhook", {
	headers => { 'Content-Type' => 'application/json',
		'X-Hub-Signature-256' => 'sha256=' . hmac_sha256_hex($body, $secret) },
	content => $body });
my $t_stop_200 = time();
my $stop_code = $res->{status};
harness_fail("the STOP webhook got $stop_code, not 200: $res->{content}") unless $stop_code == 200;

# the leader's Patroni first (else it restarts PostgreSQL), then its postmaster
my $uncertain_before_kill = psql_member($n2, q{SELECT count(*) FROM wasend.send_queue WHERE uncertain});
my $pm2 = postmaster_pid($n2);
kill 'KILL', $n2->{patroni};
my $t_kill = time();
kill 'KILL', $pm2 if $pm2;
stop_pid($n2->{patroni}, 'KILL', 5);
note(sprintf('STOP answered 200, leader killed %.3f s later', $t_kill - $t_stop_200));

wait_until('n1 leads after the crash of n2', 90, sub { is_primary($n1) });
my $t_failover = time();
kill 'CONT', $stopped_walreceiver;
$stopped_walreceiver = undef;
pass(sprintf('harness: n1 leads %.1f s after n2 was killed', $t_failover - $t_kill));
is(rest_code($n3, '/primary'), 503, 'harness: the held-behind n3 was not promoted');

# old orphans of n2's postmaster exit by themselves; then its Patroni rewinds it
wait_until('the processes of n2\'s killed postmaster exit', 60, sub { !processes_in($n2->{data}) });
start_patroni($n2);
wait_until('n2 rejoins as a replica', 150, sub { rest_code($n2, '/replica') == 200 });
my $t_rejoin = time();
is(psql_member($n2, 'SELECT pg_is_in_recovery()'), 't', 'harness: the old leader n2 rejoined as a replica');
my $rewound = -e "$T/log/n2/patroni.log"
  && PostgreSQL::Test::Utils::slurp_file("$T/log/n2/patroni.log") =~ /pg_rewind exit code=0/;
note('n2 ' . ($rewound ? 'ran pg_rewind' : 'needed no pg_rewind'));
wait_until('n3 streams from n1', 120, sub {
	psql_member($n3, q{SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'}) eq $n1->{pg};
});
pass('harness: n3 caught up and streams from the new leader n1');

# --- the campaign completes by itself on n1
wait_until('the campaign completes on n1', 240, sub {
	psql_member($n1, q{SELECT status FROM wasend.campaigns WHERE id = 1}) eq 'completed';
});
pass('harness: the campaign completed on the new leader');

# --- the accounting, from the merged mock logs and the rows on n1
WasendTest::load_mock_log($n1, $_->{mock}, "ha_$_->{name}") for ($n1, $n2, $n3);
psql_member($n1, q{
	DROP TABLE IF EXISTS ha_log;
	CREATE TABLE ha_log AS
	  SELECT 'n1'::text AS node, * FROM ha_n1 UNION ALL
	  SELECT 'n2', * FROM ha_n2 UNION ALL
	  SELECT 'n3', * FROM ha_n3;
	CREATE TABLE ha_acc AS
	  SELECT recipient, count(*) AS n, (array_agg(t_ms ORDER BY t_ms))[2] AS t_second
	    FROM ha_log WHERE http_status = 200 AND wamid <> '' GROUP BY 1;
});
my $kill_ms = int($t_kill * 1000);
my $sw_ms = int($t_sw * 1000);
my $sw_done_ms = int($t_sw_done * 1000);
my $rejoin_ms = int($t_rejoin * 1000);
my $stop_ms = int($t_stop_200 * 1000);

sub q1 { my ($sql) = @_; return psql_member($n1, $sql); }

# where the requests went: only the leader of the moment sends
is(q1(q{SELECT count(*) FROM ha_n3}), '0', 'harness: n3 (always a replica) sent nothing');
is(q1(qq{SELECT count(*) FROM ha_n2 WHERE t_ms < $sw_ms}), '0',
	'harness: n2 sent nothing while it was a replica before the switchover');
is(q1(qq{SELECT count(*) FROM ha_n1 WHERE t_ms > $sw_done_ms AND t_ms < $kill_ms}), '0',
	'harness: n1 sent nothing while it was n2\'s replica');
is(q1(qq{SELECT count(*) FROM ha_n2 WHERE t_ms > $rejoin_ms}), '0',
	'harness: n2 sent nothing after it rejoined as a replica');
my $orphan_sends = q1(qq{SELECT count(*) FROM ha_n2 WHERE t_ms > $kill_ms});
my $kill_to_send = q1(qq{SELECT coalesce(round((min(t_ms) - $kill_ms) / 1000.0, 1)::text, 'none')
	FROM ha_n1 WHERE t_ms > $kill_ms});

my $missing = q1(qq{SELECT count(*) FROM wasend.send_queue q
	WHERE q.campaign_id = 1 AND q.recipient <> '$stop_recipient'
	  AND NOT EXISTS (SELECT 1 FROM ha_acc a WHERE a.recipient = q.recipient)});
my %dup;
for my $s ([ 'a', "t_second <= $kill_ms" ], [ 'b', "t_second > $kill_ms" ])
{
	my ($name, $cond) = @$s;
	$dup{$name} = q1(qq{SELECT count(*) FROM ha_acc WHERE n > 1 AND $cond});
	$dup{"${name}_unmarked"} = q1(qq{SELECT count(*) FROM ha_acc a JOIN wasend.send_queue q USING (recipient)
		WHERE a.n > 1 AND $cond AND NOT q.uncertain});
}
my $uncertain_total = q1(q{SELECT count(*) FROM wasend.send_queue WHERE uncertain});
my $uncertain_b = $uncertain_total - $uncertain_before_kill;
my $stop_suppressed = q1(qq{SELECT count(*) FROM wasend.suppressions WHERE recipient = '$stop_recipient'});
my $stop_after = q1(qq{SELECT count(*) FROM ha_log WHERE recipient = '$stop_recipient' AND t_ms > $stop_ms});
my $stop_kept = ($stop_suppressed eq '1' && $stop_after eq '0') ? 'yes' : 'no';
my $rows = q1(q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
	FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s});

diag("HA-SUMMARY scenario=switchover durability=$durability_label duplicates=$dup{a} "
	. "unmarked=$dup{a_unmarked} uncertain=$uncertain_before_kill stop_kept=n/a");
diag("HA-SUMMARY scenario=crash durability=$durability_label duplicates=$dup{b} "
	. "unmarked=$dup{b_unmarked} uncertain=$uncertain_b stop_kept=$stop_kept kill_to_send=$kill_to_send");
diag("rows on n1: $rows; recipients without an accepted request (but STOP's): $missing; "
	. "requests at n2's mock after its kill: $orphan_sends; STOP suppressed on n1: $stop_suppressed, "
	. "requests for it after its 200: $stop_after; failover took "
	. sprintf('%.1f s', $t_failover - $t_kill));

# accounting($ok, $name): an assertion, or only a line in measure mode
sub accounting
{
	my ($ok, $name) = @_;
	if ($measure)
	{
		note(($ok ? 'ok' : 'NOT OK') . " (measure mode): accounting: $name");
		return;
	}
	ok($ok, "accounting: $name");
}
accounting($missing == 0, 'every recipient but the STOP one got an accepted request');
accounting($dup{a_unmarked} == 0, 'switchover: no recipient got two requests without its row marked uncertain');
accounting($dup{a} == 0, 'switchover: no recipient got two requests');
accounting($dup{b_unmarked} == 0, 'crash: no recipient got two requests without its row marked uncertain');
accounting($stop_suppressed eq '1', 'crash: the STOP answered 200 is a suppression on the new leader');
accounting($stop_after eq '0', 'crash: the STOP recipient got no request after the 200');

done_testing();
