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

# install_state_log($node): test-only triggers that log, in public, every
# claim of a queue row (claim_log: the row, its campaign, and the snapshot
# the claiming statement's trigger ran with) and every status change of a
# campaign or number (state_log: what, id, status, the changing
# transaction's id).  claims_seeing_pause_sql then tells, without any clock,
# whether a claim saw a pause (and not the resume after it): a claim takes
# nothing of a campaign that is not running or whose number is paused as
# its snapshot sees them, so such claims must not exist.  (The trigger's
# snapshot is taken a moment after the claim statement's: a pause that
# commits inside that moment would be reported although the claim could not
# see it; the window is the statement's own run time.)
sub install_state_log
{
	my ($node) = @_;
	$node->safe_psql('postgres', q{
		CREATE TABLE public.claim_log (row_id bigint, campaign_id bigint, snap pg_snapshot);
		CREATE TABLE public.state_log (what text, id bigint, status text, xid xid8,
			seq bigserial);
		CREATE FUNCTION public.log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.claim_log
			VALUES (NEW.id, NEW.campaign_id, pg_catalog.pg_current_snapshot());
			RETURN NEW;
		END $$;
		CREATE TRIGGER log_claim BEFORE UPDATE ON wasend.send_queue FOR EACH ROW
			WHEN (NEW.status = 'sending' AND OLD.status IS DISTINCT FROM 'sending')
			EXECUTE FUNCTION public.log_claim();
		CREATE FUNCTION public.log_state() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.state_log (what, id, status, xid)
			VALUES (TG_TABLE_NAME, NEW.id, NEW.status, pg_catalog.pg_current_xact_id());
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_state AFTER UPDATE OF status ON wasend.campaigns FOR EACH ROW
			WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION public.log_state();
		CREATE TRIGGER log_state AFTER UPDATE OF status ON wasend.whatsapp_numbers FOR EACH ROW
			WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION public.log_state();
	});
	return;
}

# claims_seeing_pause_sql($what, $id, $campaign): the number of claims of
# the campaign's rows whose snapshot saw a pause of the campaign or number
# ($what 'campaigns' or 'whatsapp_numbers', $id) but not the status change
# that followed it.
sub claims_seeing_pause_sql
{
	my ($what, $id, $campaign) = @_;
	return qq{
		SELECT count(*) FROM public.claim_log c
		  JOIN public.state_log p ON p.what = '$what' AND p.id = $id AND p.status = 'paused'
		 WHERE c.campaign_id = $campaign
		   AND pg_visible_in_snapshot(p.xid, c.snap)
		   AND NOT EXISTS (SELECT 1 FROM public.state_log r
		                    WHERE r.what = p.what AND r.id = p.id AND r.seq > p.seq
		                      AND pg_visible_in_snapshot(r.xid, c.snap))};
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
