# 054_durable_claims.pl — no request before its claim is durable where a
# failover can promote; no webhook 200 before its commit is.
#
# A primary with one synchronous standby (synchronous_standby_names = '*'),
# one number, the mock Graph API.  Proves:
#  - with the standby streaming, a campaign goes out, each recipient once,
#    also when the standby becomes synchronous in the middle of it;
#  - with the standby's walreceiver stopped (SIGSTOP), a campaign started
#    then is claimed but not one of its requests starts: the senders show
#    the rows held back (wasend_worker_stats().awaiting_durable), the
#    campaign's stalled_reason names the synchronous standby, the log says
#    it once; a signed STOP is stored but answered 503 (not acknowledged)
#    after wasend.webhook_durable_timeout, so that Meta sends it again;
#  - emptying synchronous_standby_names (what Patroni does when no sync
#    standby is left) lets the same campaign go on at once, and the log
#    says so; a STOP is then answered 200;
#  - with wasend.durability = standby and no synchronous standby, claims
#    wait for the asynchronous standby the same way;
#  - a campaign started (durably) while no sender ran, then claimed while
#    the standby is stopped: the primary crashes, the standby, which never
#    got those claims, is promoted and sends the campaign itself, each
#    recipient exactly once at the mock, none of them before the crash: no
#    message went out twice unmarked;
#  - a STOP answered 503 before the crash is not on the promoted node; sent
#    again there (Meta's retry), it is answered 200 and kept.
#
# The test's own writes while the standby is stopped use
# synchronous_commit = local: with the default they would wait for it.
use strict;
use warnings;

use Cwd;
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use WasendTest;

my $secret = 'durable-secret-' . int(rand(1e9));
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
sysopen(my $sf, "$sdir/app_secret", O_WRONLY | O_CREAT | O_TRUNC, 0600) or die;
print $sf "$secret\n";
close $sf;
chmod 0600, "$sdir/app_secret";

my $mock = WasendTest::start_mock({ numbers => { '5401' => { token => 'tok', rate => 100 } } });
my $wh_port = PostgreSQL::Test::Cluster::get_free_port();
my $primary = WasendTest::new_node('primary', $mock,
	init => { allows_streaming => 1 },
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_port' => $wh_port,
	'wasend.webhook_durable_timeout' => "'1s'",
	'wasend.limits_refresh_interval' => 0);
$primary->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('5401', 'tok', 100);
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
my $wh_port2 = PostgreSQL::Test::Cluster::get_free_port();
# restart_after_crash: the test kills its stopped walreceiver (below)
$standby->append_conf('postgresql.conf',
	"wasend.webhook_port = $wh_port2\nrestart_after_crash = on\n");
$standby->start;
$primary->wait_for_catchup($standby);

# a signed POST of an inbound STOP from $from to the endpoint at $port;
# returns "body code"
sub post_stop
{
	my ($port, $from) = @_;
	my $body = WasendTest::webhook_body(
		WasendTest::wh_inbound(from => $from, phone_number_id => '5401', body => 'STOP'));
	my $file = "$sdir/body.json";
	open my $bf, '>', $file or die;
	print $bf $body;
	close $bf;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-s', '-o', '-', '-w', ' %{http_code}', '-X', 'POST',
		'-H', 'Content-Type: application/json',
		'-H', 'X-Hub-Signature-256: sha256=' . hmac_sha256_hex($body, $secret),
		'--data-binary', "\@$file", "http://127.0.0.1:$port/webhook" ], '>', \$out, '2>', \$err);
	return $out // '';
}

# post until the endpoint gives an answer other than "starting" (503
# before it connected); returns the answer
sub post_stop_settled
{
	my ($port, $from) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	my $answer = '';
	while (time < $deadline)
	{
		$answer = post_stop($port, $from);
		return $answer unless $answer =~ /starting|launcher|000$/;
		select(undef, undef, undef, 0.2);
	}
	return $answer;
}

# requests the mock accepted for recipients of campaign $c (numbered
# 1554010c0000 + g)
sub sent_of
{
	my ($c) = @_;
	my $prefix = sprintf('1554010%d', $c);
	open my $fh, '<', $mock->{log_file} or return 0;
	my $n = 0;
	while (<$fh>)
	{
		my @f = split /,/;
		$n++ if defined $f[2] && $f[2] =~ /^$prefix/ && ($f[4] // '') eq '200';
	}
	close $fh;
	return $n;
}

# create, fill and start campaign $c of $n recipients, committing with
# synchronous_commit = $sync
sub campaign
{
	my ($node, $c, $n, $sync) = @_;
	$node->safe_psql('postgres', qq{
		SET synchronous_commit = $sync;
		SELECT wasend.wasend_create_campaign('c$c', 1, '{"type":"text","text":{"body":"x"}}');
		SELECT wasend.wasend_enqueue($c, array_agg((1554010${c}0000 + g)::text)) FROM generate_series(1, $n) g;
		SELECT wasend.wasend_start_campaign($c);
	});
}

# ALTER SYSTEM and reload, and wait until this session sees it
sub set_conf
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $name = $value");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	(my $want = $value) =~ s/^'(.*)'$/$1/;
	$node->poll_query_until('postgres', "SELECT current_setting('$name')", $want)
	  or die "$name did not become $want";
}

sub walreceiver_pid
{
	my $pid = $standby->safe_psql('postgres', q{SELECT pid FROM pg_stat_wal_receiver});
	die 'no walreceiver' unless $pid =~ /^\d+$/;
	return $pid;
}

# 1. the standby streams: nothing waits
# (the standby becomes synchronous while rows claimed without one wait in
# the senders' queues: they are held until the standby has them, then go)
campaign($primary, 1, 100, 'on');
$primary->poll_query_until('postgres',
	q{SELECT count(*) >= 20 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'})
  or die 'campaign 1 does not send';
set_conf($primary, 'synchronous_standby_names', "'*'");
ok($primary->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'with the synchronous standby streaming, the campaign completes');
is(sent_of(1), 100, 'each of its 100 recipients reached the mock once');

# 2. the standby stops confirming: claims are made, no request starts
my $wr = walreceiver_pid();
kill 'STOP', $wr;
my $log_at = -s $primary->logfile;
campaign($primary, 2, 50, 'local');
ok($primary->poll_query_until('postgres',
		q{SELECT sum(awaiting_durable) > 0 FROM wasend.wasend_worker_stats()}),
	'a sender holds rows back until their claim is durable');
ok($primary->poll_query_until('postgres',
		q{SELECT stalled_reason LIKE 'sending waits for the synchronous standby to flush them (synchronous_standby_names = ''*'') since %'
		  FROM wasend.campaign_progress WHERE campaign_id = 2}),
	'campaign_progress says the messages wait for the synchronous standby');
$primary->wait_for_log(qr/wasend sender \d waits: its commits of the last [0-9.]+ s are not durable yet/, $log_at);
ok(1, 'the log says a sender waits for durable commits');
is(sent_of(2), 0, 'not one request of a claim the standby has not flushed');
ok($primary->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 2 AND status = 'sending'}) > 0,
	'its rows are claimed (sending) meanwhile');

like(post_stop_settled($wh_port, '15540100001'), qr/not yet where a failover keeps it.* 503$/,
	'a signed STOP stored while the standby does not confirm is answered 503');
$primary->wait_for_log(qr/wasend webhook answers stored notifications 503: their commit is not durable within wasend.webhook_durable_timeout/, $log_at);
ok(1, 'the log says the webhook answers 503');
is($primary->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.suppressions WHERE recipient = '15540100001'}),
	'1', 'the STOP is stored locally all the same');
like(post_stop($wh_port, '15540100001'), qr/ 503$/,
	'sent again, it finds itself stored, but that is not durable either: 503 again');

# 3. no synchronous standby any more: local durability, as for any commit
$log_at = -s $primary->logfile;
set_conf($primary, 'synchronous_standby_names', "''");
ok($primary->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'with synchronous_standby_names emptied the held campaign completes');
is(sent_of(2), 50, 'each of its 50 recipients reached the mock once');
$primary->wait_for_log(qr/wasend sender \d goes on: the commits it waited for are durable/, $log_at);
ok(1, 'the log says the sender goes on');
like(post_stop($wh_port, '15540100002'), qr/ 200$/,
	'a signed STOP is answered 200 again');

# 4. an asynchronous cluster opts in: wasend.durability = standby waits
# for any streaming standby's flush.  The senders are stopped while the
# setting changes, so that they start with it.
set_conf($primary, 'wasend.workers', 0);
ok($primary->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'}),
	'with wasend.workers = 0 no sender runs');
set_conf($primary, 'wasend.durability', 'standby');
campaign($primary, 3, 20, 'local');
set_conf($primary, 'wasend.workers', 2);
ok($primary->poll_query_until('postgres',
		q{SELECT stalled_reason LIKE 'sending waits for a streaming standby to flush them (wasend.durability = standby) since %'
		  FROM wasend.campaign_progress WHERE campaign_id = 3}),
	'with wasend.durability = standby, claims wait for the asynchronous standby');
is(sent_of(3), 0, 'none of them was sent meanwhile');
kill 'CONT', $wr;
ok($primary->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'once it streams again, the campaign completes');
is(sent_of(3), 20, 'each of its 20 recipients reached the mock once');
set_conf($primary, 'wasend.durability', 'synchronous');

# 5. a campaign started durably while no sender runs; the standby stops;
# the senders claim it; the primary crashes; the standby is promoted
$primary->wait_for_catchup($standby);
set_conf($primary, 'synchronous_standby_names', "'*'");
set_conf($primary, 'wasend.workers', 0);
ok($primary->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'}),
	'no sender runs again');
campaign($primary, 4, 50, 'on');
$wr = walreceiver_pid();
kill 'STOP', $wr;
set_conf($primary, 'wasend.workers', 2);
ok($primary->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM wasend.send_queue WHERE campaign_id = 4 AND status = 'sending'}),
	'the senders claim campaign 4');
ok($primary->poll_query_until('postgres',
		q{SELECT sum(awaiting_durable) > 0 FROM wasend.wasend_worker_stats()}),
	'and hold its rows back');
like(post_stop_settled($wh_port, '15540100003'), qr/ 503$/,
	'a STOP is answered 503 meanwhile');
is(sent_of(4), 0, 'none of its requests started');
$primary->stop('immediate');
# the stopped walreceiver cannot be told to stop: kill it, and the standby
# restarts from what it flushed
my $standby_log_at = -s $standby->logfile;
kill 'KILL', $wr;
$standby->wait_for_log(qr/all server processes terminated; reinitializing/, $standby_log_at);
$standby->poll_query_until('postgres', 'SELECT true') or die 'the standby did not come back';
$standby->promote;
ok($standby->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4}),
	'the promoted standby completes the campaign by itself');
is(sent_of(4), 50, 'each of its 50 recipients reached the mock exactly once: no unmarked duplicate');
is($standby->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.suppressions WHERE recipient = '15540100003'}),
	'0', 'the STOP answered 503 is not on the promoted node');
like(post_stop_settled($wh_port2, '15540100003'), qr/ 200$/,
	'sent again to the promoted node (as Meta does after a 503), it is answered 200');
is($standby->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.suppressions WHERE recipient = '15540100003'}),
	'1', 'and kept');

WasendTest::stop_mock($mock);
$standby->stop;
done_testing();
