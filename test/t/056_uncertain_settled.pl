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
# request made at least 8 s after the kill; no duplicate send.  Then the
# same with wasend.on_uncertain = fail: the rows that had reached the
# mock are settled as sent, the others failed after the delay, without a
# request.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use WasendTest;

my $delay = 8;
my $n = 300;
my $pnid = '56001';
my $secret = 'test-app-secret-' . int(rand(1e9));
my $sdir = WasendTest::secret_files(app_secret => $secret, verify_token => 'verify-056');
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

# the uncertain rows: settled by the status of their one request (one
# attempt), or sent again (a second attempt) after the delay; every one
# whose request the mock had logged before the kill is settled (a request
# logged around the kill may be either: the two clocks differ a little)
my $settled_text = 'outcome settled by a status webhook: the message had reached Meta';
my ($uncertain, $settled, $retried, $late, $reached, $reached_settled) = split /\|/,
  $node->safe_psql('postgres', qq{
	SELECT count(*),
	       count(*) FILTER (WHERE q.attempts = 1 AND q.last_error = '$settled_text'),
	       count(*) FILTER (WHERE q.attempts > 1),
	       count(*) FILTER (WHERE q.attempts > 1 AND m.t_ms >= $t_kill + $delay * 1000),
	       count(*) FILTER (WHERE m.t_ms < $t_kill),
	       count(*) FILTER (WHERE m.t_ms < $t_kill AND q.attempts = 1 AND q.last_error = '$settled_text')
	  FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.uncertain AND m.http_status = 200});
note("uncertain $uncertain: settled by a status $settled, sent again $retried ($late after the delay); "
	  . "logged by the mock before the kill $reached ($reached_settled settled)");
cmp_ok($settled, '>', 0, 'some uncertain rows were settled by their status');
is($reached_settled, $reached, 'every uncertain row that had reached the mock before the kill was settled');
is($uncertain, $settled + $retried, 'every other uncertain row was sent again');
is($late, $retried, 'only once the delay was over');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.duplicate_sends}), '0',
	'no duplicate send');
is($node->safe_psql('postgres', q{SELECT duplicates FROM wasend.campaign_report WHERE campaign_id = 1}), '0',
	'campaign_report counts no duplicate');

# on_uncertain = fail: the rows that reached the mock are settled the same
# way; the others are failed, without a request, once the delay is over
# (by the claim that finds them due)
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET wasend.on_uncertain = 'fail';
	SELECT pg_reload_conf();
});
$node->poll_query_until('postgres', q{SELECT current_setting('wasend.on_uncertain') = 'fail'});
WasendTest::mock_post($mock, '/__mock/reset');
# (its id: the crash may have cost the sequence a few)
my $c2 = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('settle or fail', 1, '{"type":"text","text":{"body":"x"}}')});
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_enqueue($c2, array_agg((15556100000 + g)::text)) FROM generate_series(1, $n) g;
	SELECT wasend.wasend_start_campaign($c2);
});
$node->poll_query_until('postgres',
	"SELECT count(*) >= 60 FROM wasend.send_queue WHERE campaign_id = $c2 AND status = 'sent'")
  or die 'the second campaign did not send';
$pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'});
$t_kill = time() * 1000;
ok($pid && kill('KILL', $pid), "on_uncertain = fail: SIGKILL to sender 1 (pid $pid)");
ok( WasendTest::poll_across_restart($node, 'postgres',
		qq{SELECT count(*) > 0 FROM wasend.send_queue WHERE campaign_id = $c2 AND uncertain}),
	'the rows in flight are uncertain');
if ($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue
	 WHERE campaign_id = $c2 AND status = 'ready' AND waiting_for = 'uncertain' AND next_attempt_at > now()}) > 0)
{
	like($node->safe_psql('postgres', qq{SELECT waiting FROM wasend.campaign_progress WHERE campaign_id = $c2}),
		qr/uncertain: waiting for Meta's status until .*, then failed \(\d+ rows\)/,
		'campaign_progress says they wait, then fail');
}
ok( WasendTest::poll_across_restart($node, 'postgres',
		qq{SELECT status = 'completed' FROM wasend.campaigns WHERE id = $c2}),
	'the second campaign completes');
$deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	$st = WasendTest::mock_stats($mock)->{status_webhooks};
	last if $st->{answered_200} + $st->{given_up} >= $st->{posted};
	Time::HiRes::usleep(100_000);
}
WasendTest::load_mock_log($node, $mock, 'mocklog2', from_file => 0);
my ($u2, $reached2, $settled2, $failed2, $failed_late, $failed_sent) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT count(*),
	       count(*) FILTER (WHERE m.recipient IS NOT NULL),
	       count(*) FILTER (WHERE q.status = 'sent' AND q.attempts = 1 AND q.wa_message_id = m.wamid),
	       count(*) FILTER (WHERE q.status = 'failed' AND q.last_error_class = 'uncertain'),
	       count(*) FILTER (WHERE q.status = 'failed'
	                          AND extract(epoch FROM q.failed_at) * 1000 >= $t_kill + $delay * 1000),
	       count(*) FILTER (WHERE q.status = 'failed' AND m.recipient IS NOT NULL)
	  FROM wasend.send_queue q LEFT JOIN mocklog2 m ON m.recipient = q.recipient AND m.http_status = 200
	 WHERE q.campaign_id = $c2 AND q.uncertain});
note("on_uncertain = fail: uncertain $u2: reached the mock $reached2 (settled $settled2), "
	  . "failed $failed2 ($failed_late after the delay, $failed_sent with a request)");
cmp_ok($reached2, '>', 0, 'some uncertain rows had reached the mock');
is($settled2, $reached2, 'each is sent, with the wamid of its one request');
is($failed2, $u2 - $reached2, 'the others failed as uncertain');
is($failed_late, $failed2, 'once the delay was over');
is($failed_sent, 0, 'and no request went out for them');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM (SELECT recipient FROM mocklog2 WHERE http_status = 200
	                       GROUP BY 1 HAVING count(*) > 1) d}), '0', 'no recipient accepted twice');
is($node->safe_psql('postgres', qq{
	SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
	  FROM (SELECT status, count(*) n FROM wasend.send_queue WHERE campaign_id = $c2 GROUP BY 1) s}),
	"failed=$failed2 sent=" . ($n - $failed2), 'every other row of the campaign is sent');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
