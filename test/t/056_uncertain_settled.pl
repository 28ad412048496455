# 056_uncertain_settled.pl — a sender is killed with requests in flight;
# Meta's status webhooks, which echo each message's
# biz_opaque_callback_data ('wasend:<row id>'), settle the rows whose
# request had reached the API, and only the others are sent again, after
# wasend.uncertain_retry_delay.
#
# The mock answers every send after 600 ms, and posts a signed "sent"
# status of each accepted send to the webhook endpoint (retrying, as Meta
# does, while the endpoint is down for the crash restart).  Sender 1 is
# killed mid-campaign: the postmaster restarts every backend, and the
# supervisor marks the rows left 'sending' uncertain and holds them 8 s.
# Account, from the mock's log and the rows: every recipient accepted
# exactly once; every uncertain row whose request reached the mock before
# the kill is sent with the mock's wamid of that request, never retried;
# every uncertain row whose request had not reached it is sent by one
# request made at least 8 s after the kill; no duplicate send.
use strict;
use warnings;

use Cwd;
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use WasendTest;

my $delay = 8;
my $n = 300;
my $pnid = '56001';
my $secret = 'test-app-secret-' . int(rand(1e9));
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
for my $f ([ 'app_secret', $secret ], [ 'verify_token', 'verify-056' ])
{
	my $path = "$sdir/$f->[0]";
	sysopen(my $fh, $path, O_WRONLY | O_CREAT | O_TRUNC, 0600) or die "$path: $!";
	print $fh "$f->[1]\n";
	close $fh;
}
my $wport = PostgreSQL::Test::Cluster::get_free_port();
my $mock = WasendTest::start_mock({
	numbers => { $pnid => { token => 'tok', rate => 40 } },
	latency_ms => 600,
	statuses => { urls => [ "http://127.0.0.1:$wport/webhook" ],
		app_secret_file => "$sdir/app_secret", kinds => [ 'sent' ],
		delay_ms => 0, retry_ms => 200, max_tries => 1000 },
});
my $node = WasendTest::new_node('settled', $mock,
	'wasend.workers' => 2,
	'wasend.uncertain_retry_delay' => $delay,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_verify_token_file' => "'$sdir/verify_token'",
	'wasend.webhook_port' => $wport,
	restart_after_crash => 'on');

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok', 40);
	SELECT wasend.wasend_create_campaign('settle', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15556000000 + g)::text)) FROM generate_series(1, $n) g;
	SELECT wasend.wasend_start_campaign(1);
});

$node->poll_query_until('postgres',
	"SELECT count(*) >= 60 FROM wasend.send_queue WHERE status = 'sent'")
  or die 'the campaign did not send';
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'});
my $t_kill = time() * 1000;
ok($pid && kill('KILL', $pid), "SIGKILL to sender 1 (pid $pid) with requests in flight");

# right after the recovery the rows no status settled wait, and say so
ok( WasendTest::poll_across_restart($node, 'postgres',
		q{SELECT count(*) > 0 FROM wasend.send_queue WHERE uncertain}),
	'the supervisor marked the rows in flight uncertain');
my $waiting = $node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue
	 WHERE status = 'ready' AND waiting_for = 'uncertain' AND next_attempt_at > now()});
note("uncertain rows waiting after the recovery: $waiting");
if ($waiting > 0)
{
	like($node->safe_psql('postgres', q{SELECT waiting FROM wasend.campaign_progress WHERE campaign_id = 1}),
		qr/uncertain: waiting for Meta's status until .*, then retried \(\d+ rows\)/,
		'campaign_progress says the uncertain rows wait for Meta\'s status');
}

ok( WasendTest::poll_across_restart($node, 'postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes');
# the statuses of the last sends are in (bounded wait)
my $st;
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	$st = WasendTest::mock_stats($mock)->{status_webhooks};
	last if $st->{answered_200} + $st->{given_up} >= $st->{posted};
	Time::HiRes::usleep(100_000);
}
note('status webhooks: ' . join(', ', map { "$_ $st->{$_}" } sort keys %$st));
is($st->{answered_200}, $n, "the endpoint took the $n status webhooks (one per accepted send)");

WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, "sent=$n", "all $n rows sent");
note('requests not accepted: '
	  . $node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE http_status <> 200}));
is($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE http_status = 200}), $n,
	"the mock accepted $n requests: one per recipient");
is($a->{duplicates}, 0, 'no recipient accepted twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog m JOIN wasend.send_queue q USING (recipient)
	 WHERE m.opaque IS DISTINCT FROM 'wasend:' || q.id}),
	'0', 'every request carried biz_opaque_callback_data wasend:<row id> (the mock logs it)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog m JOIN wasend.send_queue q USING (recipient)
	 WHERE m.http_status = 200 AND m.wamid IS DISTINCT FROM q.wa_message_id}),
	'0', 'every row has the wamid of its one request');

# the uncertain rows: reached the mock before the kill (settled by its
# status), or not (sent once, after the delay)
my ($uncertain, $settled, $reached, $retried, $late) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT count(*),
	       count(*) FILTER (WHERE q.last_error = 'outcome settled by a status webhook: the message had reached Meta'),
	       count(*) FILTER (WHERE m.t_ms < $t_kill),
	       count(*) FILTER (WHERE m.t_ms >= $t_kill),
	       count(*) FILTER (WHERE m.t_ms >= $t_kill + $delay * 1000)
	  FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.uncertain AND m.http_status = 200});
note("uncertain $uncertain: reached the mock before the kill $reached (settled by a status $settled), "
	  . "sent after it $retried ($late after the delay)");
cmp_ok($reached, '>', 0, 'some uncertain rows had reached the mock before the kill');
is($settled, $reached, 'every uncertain row that had reached the mock was settled by its status');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.uncertain AND m.http_status = 200 AND m.t_ms < $t_kill
	   AND (q.attempts <> 1 OR q.status <> 'sent')}),
	'0', 'and not retried: one attempt, sent');
is($late, $retried, 'the uncertain rows that had not reached the mock were sent only after the delay');
is($uncertain, $reached + $retried, 'the uncertain rows are those two kinds');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.duplicate_sends}), '0',
	'no duplicate send');
is($node->safe_psql('postgres', q{SELECT duplicates FROM wasend.campaign_report WHERE campaign_id = 1}), '0',
	'campaign_report counts no duplicate');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
