# test/lib/WasendTest.pm — helpers for wasend's TAP integration tests:
# start the mock Graph API, create a cluster with wasend preloaded and
# pointed at it, and load the mock's request log into the database so tests
# can compare, in SQL, exactly what was sent with what the rows say.
package WasendTest;

use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $root = $ENV{WASEND_ROOT} or die "WASEND_ROOT is not set";

# start_mock(\%config, %opts): start test/mock/graph-api.js; returns a
# hashref with port, url (API base URL) and the IPC::Run handle.
sub start_mock
{
	my ($config, %opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $port = $opts{port} // PostgreSQL::Test::Cluster::get_free_port();
	my $cfg = "$dir/mock.json";
	open my $fh, '>', $cfg or die "$cfg: $!";
	print $fh encode_json($config);
	close $fh;
	my @cmd = ('node', "$root/test/mock/graph-api.js", '--port', $port,
		'--config', $cfg, '--ready-file', "$dir/ready",
		'--log-file', "$dir/requests.csv");
	my $h = IPC::Run::start(\@cmd, '>', "$dir/mock.out", '2>&1');
	for (1 .. 200)
	{
		last if -f "$dir/ready";
		usleep(50_000);
	}
	die "mock Graph API did not start" unless -f "$dir/ready";
	return {
		port => $port,
		url => "http://127.0.0.1:$port/v21.0",
		handle => $h,
		dir => $dir,
		log_file => "$dir/requests.csv",
	};
}

sub stop_mock
{
	my ($mock) = @_;
	$mock->{handle}->kill_kill;
	$mock->{handle}->finish;
}

# restart_mock($mock, \%config): a new mock on the same port (its log
# starts empty); returns it.
sub restart_mock
{
	my ($mock, $config) = @_;
	stop_mock($mock);
	return start_mock($config, port => $mock->{port});
}

# account($node, $mock_tables, %opts): the exact account of a run, from the
# rows and the mock logs loaded into the given tables: rows by status, rows
# lost (not in a final state), requests seen, recipients accepted more
# than once, rows retried, failures by code, uncertain rows.
sub account
{
	my ($node, @tables) = @_;
	my $union = join(' UNION ALL ', map { "SELECT * FROM $_" } @tables);
	my %a;
	$a{by_status} = $node->safe_psql('postgres',
		q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
		    FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s});
	$a{lost} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE status IN ('ready', 'sending')});
	$a{requests} = $node->safe_psql('postgres', "SELECT count(*) FROM ($union) m");
	$a{duplicates} = $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (SELECT phone_number_id, recipient FROM ($union) m
		 WHERE http_status = 200 AND wamid <> '' GROUP BY 1, 2 HAVING count(*) > 1) d});
	$a{retried} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE attempts > 1});
	$a{uncertain} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE uncertain});
	$a{failed_by_code} = $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), 'none')
		    FROM (SELECT coalesce(last_error_code::text, last_error_class) k, count(*) n
		            FROM wasend.send_queue WHERE status = 'failed' GROUP BY 1) f});
	$a{sent_without_wamid} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent' AND wa_message_id IS NULL});
	note(sprintf('account: rows %s; lost %d; requests %d; duplicated %d; retried %d; uncertain %d; failed by code: %s',
		$a{by_status}, $a{lost}, $a{requests}, $a{duplicates}, $a{retried},
		$a{uncertain}, $a{failed_by_code}));
	return \%a;
}

# mock_get($mock, $path): body of a GET to the mock's control API.
sub mock_get
{
	my ($mock, $path) = @_;
	my $out = `curl -s --max-time 10 http://127.0.0.1:$mock->{port}$path`;
	die "mock GET $path failed" if $? != 0;
	return $out;
}

sub mock_post
{
	my ($mock, $path, $body) = @_;
	my $json = encode_json($body // {});
	my $out = `curl -s --max-time 10 -X POST -d '$json' http://127.0.0.1:$mock->{port}$path`;
	die "mock POST $path failed" if $? != 0;
	return $out;
}

sub mock_stats
{
	my ($mock) = @_;
	return decode_json(mock_get($mock, '/__mock/stats'));
}

# new_node($name, $mock, %settings): an initialized, started cluster with
# wasend preloaded and senders pointed at the mock.  Extra settings are
# appended to postgresql.conf.
sub new_node
{
	my ($name, $mock, %settings) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	my $init = delete $settings{init} // {};
	$node->init(%$init);
	my %conf = (
		shared_preload_libraries => "'wasend'",
		max_worker_processes => 32,
		'wasend.workers' => 2,
		# The mock stamps arrivals with its own clock, which stalls for
		# 10-60 ms at times on a shared 2-core VM and then stamps the
		# queued requests together (seen: 4 requests within 10 ms from a
		# number paced every 21 ms).  Pacing at 90% leaves 100 ms of each
		# second free, so the tests' exact "never above the rate"
		# assertions do not depend on that.  make demo / bench measure the
		# default (0.985).
		'wasend.rate_headroom' => 0.90,
		'wasend.api_base_url' => "'$mock->{url}'",
		%settings);
	$node->append_conf('postgresql.conf',
		join("\n", map { "$_ = $conf{$_}" } sort keys %conf) . "\n");
	$node->start;
	return $node;
}

# load_mock_log($node, $mock, $table): copy the mock's request log into a
# table (t_ms epoch milliseconds, phone_number_id, recipient, type,
# http_status, code, wamid).
sub load_mock_log
{
	my ($node, $mock, $table, %opts) = @_;
	$table //= 'mocklog';
	my $csv;
	if ($opts{from_file})
	{
		# the file the mock appended to before each answer (it may be dead)
		$csv = "header\n" . PostgreSQL::Test::Utils::slurp_file($mock->{log_file});
	}
	else
	{
		$csv = mock_get($mock, '/__mock/log');
	}
	$node->safe_psql('postgres', qq{
		DROP TABLE IF EXISTS $table;
		CREATE TABLE $table (t_ms numeric, phone_number_id text, recipient text,
			type text, http_status int, code text, wamid text);
	});
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', "COPY $table FROM STDIN WITH (FORMAT csv, HEADER true)" ],
		'<', \$csv, '>', \$stdout, '2>', \$stderr);
	die "loading mock log failed: $stderr" unless $ok;
	return;
}

# wait_quiet($node): wait until no sender holds a row and no row is sending.
sub wait_quiet
{
	my ($node) = @_;
	return $node->poll_query_until('postgres', q{
		SELECT coalesce(sum(held), 0) = 0
		       AND NOT EXISTS (SELECT 1 FROM wasend.send_queue WHERE status = 'sending')
		  FROM wasend_worker_stats()});
}

# max_window($node, $table): per phone number, the most requests accepted
# in any window (t - 1000 ms, t] — the definition the mock enforces.
sub max_window_sql
{
	my ($table) = @_;
	$table //= 'mocklog';
	return qq{
		SELECT phone_number_id, max(n) FROM (
		  SELECT phone_number_id, count(*) OVER (PARTITION BY phone_number_id ORDER BY t_ms
		         RANGE BETWEEN 999.999 PRECEDING AND CURRENT ROW) AS n
		    FROM $table WHERE http_status = 200) w
		 GROUP BY 1 ORDER BY 1};
}

1;
