# 055_patroni.pl — exact accounting through a switchover and crash
# failovers under Patroni (etcd and three members on loopback).
#
# A real Patroni cluster with synchronous_mode (n1 and n2 are sync
# candidates, n3 is tagged nosync) and one mock Graph API per member (each
# member's wasend.api_base_url points at its own mock, so every request is
# traced to the member that sent it) runs one campaign of unique
# recipients, which is paused only while a former leader rejoins, through:
#   (a) patronictl switchover (leader -> sync standby) mid-campaign;
#   (b) the async replica's walreceiver is stopped (held behind), a signed
#       inbound STOP from a recipient whose row is not yet claimed gets its
#       200 from the leader's webhook, then the leader's Patroni and its
#       postmaster are killed (SIGKILL); the sync standby takes over, the
#       held replica is resumed, the old leader rejoins (pg_rewind);
#   (c) the leader's walsenders are stopped, so its standbys hear nothing
#       more (as in a network stall of the sync standby), a STOP is posted
#       to it, it sends (or, waiting for its standby, does not) for a
#       moment, then it is killed with its walsenders; the sync standby,
#       which lacks that last WAL, takes over (a STOP not answered 200 is
#       posted again to it, as Meta retries), the old leader rejoins.
# Proves that the campaign completes by itself on the final leader; that
# every recipient but the STOP ones got an accepted request; that the
# switchover duplicates nothing; and, per crash, that every recipient that
# got two or more requests has its row marked uncertain (no unmarked
# duplicate) and that the STOP answered 200 is kept (a suppression on the
# final leader, no request after its 200); that only the leader of the
# moment sent (replicas never); that the held replica was not promoted and
# the old leaders rejoin as replicas.
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

# every process the test starts (pid => what); cleanup kills exactly these
# and the postmasters named in the members' postmaster.pid, and signals the
# processes the test stopped: CONT a replica's walreceiver, KILL the
# walsenders of a leader that is killed with them
my %started;
my %stopped;    # pid => CONT or KILL
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

# cleanup: exactly what the test started.  Patroni first, with SIGKILL: a
# Patroni stopped with SIGTERM stops its PostgreSQL, and the others then
# elect a new leader while the test ends; then every member's postmaster
# (immediate shutdown), then etcd.  A second signal must not cut it short.
sub cleanup
{
	local $SIG{TERM} = 'IGNORE';
	local $SIG{INT} = 'IGNORE';
	kill $stopped{$_}, $_ for keys %stopped;
	for my $m (values %member)
	{
		stop_pid($m->{patroni}, 'KILL', 5) if $m->{patroni};
	}
	for my $m (values %member)
	{
		my $pm = postmaster_pid($m);
		next unless $pm && kill(0, $pm);
		kill 'QUIT', $pm;    # immediate shutdown
		my $until = time() + 15;
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
$SIG{INT} = $SIG{TERM} = sub { diag("killed by a signal: cleaning up"); cleanup(); exit 1; };

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
	}, 'PatroniMember';
}
# each mock sends the "sent" status of each accepted message to the
# members' webhook endpoints in turn until one answers 200, as Meta sends
# it to the one URL that the load balancer routes to the leader: a status
# names its row (biz_opaque_callback_data), and settles it when a
# failover left it uncertain
my @wh_urls = map { "http://127.0.0.1:$member{$_}{wh}/webhook" } qw(n1 n2 n3);
for my $i (1 .. 3)
{
	$member{"n$i"}{mock} = WasendTest::start_mock({
		numbers => { $pnid => { token => 'tok', rate => 10000 } },
		latency_ms => 20, jitter_ms => 10,
		statuses => { urls => \@wh_urls, app_secret_file => "$T/app_secret",
			kinds => ['sent'], delay_ms => 100, retry_ms => 300, max_tries => 1000 } });
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
	# a server without the setting warns and ignores it: the figures are
	# then those of today's behaviour, whatever was asked
	if (psql_member($n1, q{SELECT count(*) FROM pg_settings WHERE name = 'wasend.durability'}) eq '1')
	{
		is(psql_member($n1, q{SELECT current_setting('wasend.durability')}), $durability,
			"harness: wasend.durability = $durability from the DCS");
	}
	else
	{
		diag("wasend.durability = $durability is unknown to this wasend (ignored by the server)");
		$durability_label .= '(unknown)';
	}
}

# --- the campaign: N unique recipients; the last two (claimed last) will write STOP
my $base = 15570000000;
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

sub streams_from
{
	my ($replica, $primary) = @_;
	return psql_member($replica,
		q{SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'}) eq $primary->{pg};
}

sub uncertain_rows
{
	my ($m) = @_;
	return psql_member($m, q{SELECT count(*) FROM wasend.send_queue WHERE uncertain});
}

# post_stop($m, $recipient, $timeout): a signed inbound STOP from $recipient
# to $m's webhook; returns the HTTP status (599: no answer) and the time
# the answer came
sub post_stop
{
	my ($m, $recipient, $timeout) = @_;
	my $body = WasendTest::webhook_body(WasendTest::wh_inbound(
		from => $recipient, phone_number_id => $pnid, body => 'STOP'));
	my $res = HTTP::Tiny->new(timeout => $timeout)->post("http://127.0.0.1:$m->{wh}/webhook", {
		headers => { 'Content-Type' => 'application/json',
			'X-Hub-Signature-256' => 'sha256=' . hmac_sha256_hex($body, $secret) },
		content => $body });
	note("STOP from $recipient to $m->{name}: $res->{status} $res->{content}");
	return ($res->{status}, time());
}

# unclaimed($m, $recipient): the harness needs this row not yet claimed
sub check_unclaimed
{
	my ($m, $recipient) = @_;
	my $state = psql_member($m,
		qq{SELECT status || ' ' || attempts FROM wasend.send_queue WHERE recipient = '$recipient'});
	harness_fail("the STOP recipient $recipient is already claimed ($state): the campaign went too far")
	  unless $state eq 'ready 0';
}

# kill_leader($m, @also): SIGKILL the leader's Patroni first (else it
# restarts PostgreSQL), then its postmaster (and @also, processes of that
# instance); returns the time of the kill
sub kill_leader
{
	my ($m, @also) = @_;
	my $pm = postmaster_pid($m);
	kill 'KILL', $m->{patroni};
	my $t = time();
	kill 'KILL', $pm if $pm;
	kill 'KILL', @also if @also;
	stop_pid($m->{patroni}, 'KILL', 5);
	return $t;
}

# rewinds($m): how many pg_rewind runs $m's Patroni log shows
sub rewinds
{
	my ($m) = @_;
	my $log = "$T/log/$m->{name}/patroni.log";
	return 0 unless -e $log;
	my @runs = PostgreSQL::Test::Utils::slurp_file($log) =~ /pg_rewind exit code=0/g;
	return scalar @runs;
}

# rejoin($m, $leader): start the killed member's Patroni again once the
# processes of its killed postmaster are gone; it rewinds and follows the
# leader.  Patroni may start the server, find it must rewind, stop it
# and start it again: the member counts as rejoined once it streams from
# the leader.  Returns the time it is a replica.
sub rejoin
{
	my ($m, $leader) = @_;
	wait_until("the processes of $m->{name}'s killed postmaster exit", 60,
		sub { !processes_in($m->{data}) });
	my $rewinds = rewinds($m);
	start_patroni($m);
	wait_until("$m->{name} rejoins as a replica streaming from $leader->{name}", 150,
		sub { rest_code($m, '/replica') == 200 && eval { streams_from($m, $leader) } });
	my $t = time();
	is(psql_member($m, 'SELECT pg_is_in_recovery()'), 't',
		"harness: the old leader $m->{name} rejoined as a replica");
	note("$m->{name} " . (rewinds($m) > $rewinds ? 'ran pg_rewind' : 'needed no pg_rewind'));
	return $t;
}

sub pause { my ($m) = @_; psql_member($m, 'SELECT wasend.wasend_pause_campaign(1)'); }
sub resume { my ($m) = @_; psql_member($m, 'SELECT wasend.wasend_resume_campaign(1)'); }

my %t;    # the moments of the scenarios (epoch seconds)
my %u;    # uncertain rows before each kill, on the leader of the moment

# --- (a) switchover n1 -> n2 after about a sixth of the campaign
wait_until('n1 sends a sixth of the campaign', 120, sub { accepted($n1) >= $N / 6 });
$t{sw} = time();
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'patronictl', '-c', $n1->{yml}, 'switchover', '--leader', 'n1',
		'--candidate', 'n2', '--force' ], '>', \$out, '2>', \$err, IPC::Run::timeout(120))
	  or harness_fail("patronictl switchover failed: $out $err");
	note("patronictl switchover: $out");
}
wait_until('n2 leads after the switchover', 90, sub { is_primary($n2) });
$t{sw_done} = time();
wait_until('n2 sends after the switchover', 60, sub { accepted($n2) >= 50 });
# the campaign waits while the cluster settles, so that its rows last
# whatever the machine's speed
pause($n2);
wait_until('n1 rejoins as n2\'s sync standby', 120, sub { rest_code($n1, '/sync') == 200 });
pass(sprintf('harness: switchover n1 -> n2 took %.1f s; n1 is the sync standby again', $t{sw_done} - $t{sw}));

# --- (b) crash of n2, a STOP answered just before, n3 held behind
wait_until('n3 streams from n2', 90, sub { streams_from($n3, $n2) });
resume($n2);
my $n2_at_resume = accepted($n2);
wait_until('n2 sends again', 60, sub { accepted($n2) >= $n2_at_resume + 50 });
my $wr = psql_member($n3, q{SELECT pid FROM pg_stat_wal_receiver});
harness_fail("no walreceiver pid on n3") unless $wr =~ /^\d+$/;
kill 'STOP', $wr or harness_fail("cannot stop n3's walreceiver $wr");
$stopped{$wr} = 'CONT';
my $before = accepted($n2);
wait_until('n2 keeps sending while n3 is held behind', 30, sub { accepted($n2) >= $before + 20 });
pass('harness: n2 kept sending with n3\'s walreceiver stopped');

my $stop_b = $base + $N;
check_unclaimed($n2, $stop_b);
my ($code_b, $t_b200) = post_stop($n2, $stop_b, 60);
harness_fail("the STOP webhook got $code_b, not 200") unless $code_b == 200;
$t{stop_b} = $t_b200;
$u{b} = uncertain_rows($n2);
$t{kill_b} = kill_leader($n2);
note(sprintf('STOP answered 200, n2 killed %.3f s later', $t{kill_b} - $t{stop_b}));
wait_until('n1 leads after the crash of n2', 90, sub { is_primary($n1) });
$t{failover_b} = time();
my $n1_at_failover = accepted($n1);
kill 'CONT', $wr;
delete $stopped{$wr};
pass(sprintf('harness: n1 leads %.1f s after n2 was killed', $t{failover_b} - $t{kill_b}));
is(rest_code($n3, '/primary'), 503, 'harness: the held-behind n3 was not promoted');
wait_until('n1 sends after the failover', 60, sub { accepted($n1) >= $n1_at_failover + 50 });
pause($n1);
$t{rejoin_b} = rejoin($n2, $n1);

# --- (c) crash of n1 while its sync standby n2 has not got the last WAL:
# n1's walsenders are stopped (the standbys hear nothing more, as in a
# network stall), a STOP is posted, n1 sends (or not) for a moment, then
# n1 dies with them
wait_until('n2 becomes n1\'s sync standby', 120, sub { rest_code($n2, '/sync') == 200 });
wait_until('n3 streams from n1', 120, sub { streams_from($n3, $n1) });
resume($n1);
my $n1_at_resume = accepted($n1);
wait_until('n1 sends again', 60, sub { accepted($n1) >= $n1_at_resume + 50 });
my $stop_c = $base + $N - 1;
check_unclaimed($n1, $stop_c);
my @ws = split /\n/, psql_member($n1, q{SELECT pid FROM pg_stat_replication});
harness_fail('n1 has not two walsenders: ' . join(',', @ws)) unless @ws == 2;
$t{stall} = time();
for my $p (@ws)
{
	kill 'STOP', $p or harness_fail("cannot stop n1's walsender $p");
	$stopped{$p} = 'KILL';
}
my $at_stall = accepted($n1);
my ($code_c, $t_c) = post_stop($n1, $stop_c, 90);
$t{stop_c} = $t_c if $code_c == 200;
# a moment for the senders, longer than the rows they claimed before the
# stall last: 300 requests, or 5 s if they wait for n2
my $until = time() + 5;
usleep(100_000) while accepted($n1) < $at_stall + 300 && time() < $until;
my $stall_sends = accepted($n1) - $at_stall;
$u{c} = uncertain_rows($n1);
$t{kill_c} = kill_leader($n1, @ws);
delete @stopped{@ws};
note("n1 sent $stall_sends accepted requests while its standbys heard nothing; STOP got $code_c");
wait_until('n2 leads after the crash of n1', 90, sub { is_primary($n2) });
$t{failover_c} = time();
pass(sprintf('harness: n2 leads %.1f s after n1 was killed', $t{failover_c} - $t{kill_c}));
if ($code_c != 200)
{
	# not acknowledged: Meta sends it again, now to the new leader
	wait_until('the STOP sent again to n2 gets 200', 90, sub {
		my ($c, $t) = post_stop($n2, $stop_c, 30);
		$t{stop_c} = $t if $c == 200;
		return $c == 200;
	});
}
$t{rejoin_c} = rejoin($n1, $n2);
wait_until('n3 streams from n2', 120, sub { streams_from($n3, $n2) });
pass('harness: n3 follows the new leader n2');

# --- the campaign completes by itself on n2
wait_until('the campaign completes on n2', 240, sub {
	psql_member($n2, q{SELECT status FROM wasend.campaigns WHERE id = 1}) eq 'completed';
});
pass('harness: the campaign completed on the final leader');

# --- the accounting, from the merged mock logs and the rows on n2
my $L = $n2;
WasendTest::load_mock_log($L, $_->{mock}, "ha_$_->{name}") for ($n1, $n2, $n3);
psql_member($L, q{
	DROP TABLE IF EXISTS ha_log, ha_acc;
	CREATE TABLE ha_log AS
	  SELECT 'n1'::text AS node, * FROM ha_n1 UNION ALL
	  SELECT 'n2', * FROM ha_n2 UNION ALL
	  SELECT 'n3', * FROM ha_n3;
	CREATE TABLE ha_acc AS
	  SELECT recipient, count(*) AS n, (array_agg(t_ms ORDER BY t_ms))[2] AS t_second
	    FROM ha_log WHERE http_status = 200 AND wamid <> '' GROUP BY 1;
});
my %ms = map { ($_ => int($t{$_} * 1000)) } keys %t;
sub qL { my ($sql) = @_; return psql_member($L, $sql); }

# where the requests went: only the leader of the moment sends
is(qL(q{SELECT count(*) FROM ha_n3}), '0', 'harness: n3 (always a replica) sent nothing');
is(qL(qq{SELECT count(*) FROM ha_n2 WHERE t_ms < $ms{sw}}), '0',
	'harness: n2 sent nothing while it was a replica before the switchover');
is(qL(qq{SELECT count(*) FROM ha_n1 WHERE t_ms > $ms{sw_done} AND t_ms < $ms{kill_b}}), '0',
	'harness: n1 sent nothing while it was n2\'s replica');
is(qL(qq{SELECT count(*) FROM ha_n2 WHERE t_ms > $ms{rejoin_b} AND t_ms < $ms{kill_c}}), '0',
	'harness: n2 sent nothing after it rejoined as a replica');
is(qL(qq{SELECT count(*) FROM ha_n1 WHERE t_ms > $ms{rejoin_c}}), '0',
	'harness: n1 sent nothing after it rejoined as a replica');
my %orphan = (
	b => qL(qq{SELECT count(*) FROM ha_n2 WHERE t_ms > $ms{kill_b} AND t_ms < $ms{rejoin_b}}),
	c => qL(qq{SELECT count(*) FROM ha_n1 WHERE t_ms > $ms{kill_c} AND t_ms < $ms{rejoin_c}}));
my %kill_to_send = (
	b => qL(qq{SELECT coalesce(round((min(t_ms) - $ms{kill_b}) / 1000.0, 1)::text, 'none')
		FROM ha_n1 WHERE t_ms > $ms{kill_b}}),
	c => qL(qq{SELECT coalesce(round((min(t_ms) - $ms{kill_c}) / 1000.0, 1)::text, 'none')
		FROM ha_n2 WHERE t_ms > $ms{kill_c}}));

my $missing = qL(qq{SELECT count(*) FROM wasend.send_queue q
	WHERE q.campaign_id = 1 AND q.recipient NOT IN ('$stop_b', '$stop_c')
	  AND NOT EXISTS (SELECT 1 FROM ha_acc a WHERE a.recipient = q.recipient)});
my $uncertain_total = uncertain_rows($L);
my %sc = (
	a => { name => 'switchover', cond => "t_second <= $ms{kill_b}", uncertain => $u{b} },
	b => { name => 'crash', cond => "t_second > $ms{kill_b} AND t_second <= $ms{kill_c}",
		uncertain => $u{c} - $u{b}, stop => $stop_b },
	c => { name => 'crash-stalled-standby', cond => "t_second > $ms{kill_c}",
		uncertain => $uncertain_total - $u{c}, stop => $stop_c });
for my $k (sort keys %sc)
{
	my $s = $sc{$k};
	$s->{dup} = qL(qq{SELECT count(*) FROM ha_acc WHERE n > 1 AND $s->{cond}});
	$s->{unmarked} = qL(qq{SELECT count(*) FROM ha_acc a JOIN wasend.send_queue q USING (recipient)
		WHERE a.n > 1 AND $s->{cond} AND NOT q.uncertain});
	$s->{stop_kept} = 'n/a';
	if (my $r = $s->{stop})
	{
		my $from = $k eq 'b' ? $ms{stop_b} : $ms{stop_c};
		$s->{suppressed} = qL(qq{SELECT count(*) FROM wasend.suppressions WHERE recipient = '$r'});
		$s->{after} = qL(qq{SELECT count(*) FROM ha_log WHERE recipient = '$r' AND t_ms > $from});
		$s->{stop_kept} = ($s->{suppressed} eq '1' && $s->{after} eq '0') ? 'yes' : 'no';
	}
	diag("HA-SUMMARY scenario=$s->{name} durability=$durability_label duplicates=$s->{dup} "
		. "unmarked=$s->{unmarked} uncertain=$s->{uncertain} stop_kept=$s->{stop_kept}"
		. ($k ne 'a' ? " kill_to_send=$kill_to_send{$k}" : ''));
}
my $rows = qL(q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
	FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s});
diag("rows on the final leader: $rows; recipients without an accepted request (but the STOPs'): $missing; "
	. "requests at a killed leader's mock after its kill: crash $orphan{b}, stalled $orphan{c}; "
	. "sent while the standbys heard nothing: $stall_sends; first answer to that STOP: $code_c; "
	. sprintf('failovers took %.1f s and %.1f s', $t{failover_b} - $t{kill_b}, $t{failover_c} - $t{kill_c}));

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
accounting($missing == 0, 'every recipient but the STOP ones got an accepted request');
accounting($sc{a}{dup} == 0, 'switchover: no recipient got two requests');
for my $k (qw(b c))
{
	my $s = $sc{$k};
	accounting($s->{unmarked} == 0,
		"$s->{name}: every recipient that got two requests has its row marked uncertain");
	accounting($s->{suppressed} eq '1', "$s->{name}: the STOP answered 200 is a suppression on the final leader");
	accounting($s->{after} eq '0', "$s->{name}: the STOP recipient got no request after the 200");
}

done_testing();
