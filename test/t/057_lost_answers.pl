# 057_lost_answers.pl — a request that reached Meta but whose answer was
# lost (it timed out, or its connection closed) is never sent again
# unmarked: its row is marked uncertain and waits
# wasend.uncertain_retry_delay for the status webhook that names it
# (biz_opaque_callback_data 'wasend:<row id>'), which settles it as sent;
# a row no status settled is retried, and a status that comes after the
# retry counts the duplicate in wasend.duplicate_sends, also when it came
# while the retry was in flight.  With wasend.on_uncertain = fail such a
# row fails instead of being sent again.
#
# The mock's "lost" rule accepts a send as Meta would (a wamid, a signed
# "sent" status webhook echoing biz_opaque_callback_data), then never
# answers it ("hang": the request times out) or closes its connection
# ("drop"); "hold_statuses" keeps its status webhook back until the test
# releases it.  The account, from the mock's log and the rows: every
# request the mock accepted is either its row's wamid or a duplicate the
# row records, and nothing else is a duplicate.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WasendTest;

my $delay = 8;
my $pnid = '57001';
my $secret = 'test-app-secret-' . int(rand(1e9));
my $sdir = WasendTest::secret_files(app_secret => $secret, verify_token => 'verify-057');
my $wport = PostgreSQL::Test::Cluster::get_free_port();
my $statuses = { urls => [ "http://127.0.0.1:$wport/webhook" ],
	app_secret_file => "$sdir/app_secret", kinds => [ 'sent' ],
	delay_ms => 0, retry_ms => 200, max_tries => 1000 };

# campaign 1: recipients 15557000001..100; by their tens:
#   1x  accepted, the answer lost (hang: a timeout)
#   2x  accepted, the connection closed (drop: a reset)
#   3x  accepted, the answer lost, the status webhook held back
#   4x  not accepted, never answered (a plain timeout)
#   5x  refused once with 131056 (an API error: retried, not uncertain)
#   6x  answered once 500 without a body (may have been taken: uncertain)
#   7x  accepted, answered 200 with HTML (failed, but settled by its status)
my $mock = WasendTest::start_mock({
	numbers => { $pnid => { token => 'tok', rate => 40 } },
	statuses => $statuses,
	rules => [
		{ to => '^1555700001[0-9]$', action => 'lost', lost => 'hang', times => 10 },
		{ to => '^1555700002[0-9]$', action => 'lost', lost => 'drop', times => 10 },
		{ to => '^1555700003[0-9]$', action => 'lost', lost => 'hang', hold_statuses => JSON::PP::true,
		  times => 10 },
		{ to => '^1555700004[0-9]$', action => 'hang', times => 10 },
		{ to => '^1555700005[0-9]$', code => 131056, times => 10 },
		{ to => '^1555700006[0-9]$', action => 'http500', times => 10 },
		{ to => '^1555700007[0-9]$', action => 'lost', lost => 'garbage', times => 10 },
	],
});
my $node = WasendTest::new_node('lost', $mock,
	'wasend.request_timeout_ms' => 3000,
	'wasend.uncertain_retry_delay' => $delay,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_verify_token_file' => "'$sdir/verify_token'",
	'wasend.webhook_port' => $wport);

# Wait (bounded) until every status webhook the mock posted was answered.
sub statuses_in
{
	my $st;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		$st = WasendTest::mock_stats($mock)->{status_webhooks};
		last if $st->{answered_200} + $st->{given_up} >= $st->{posted};
		usleep(100_000);
	}
	return $st;
}

# Every request the mock accepted for the campaign's rows is the row's
# wamid or one of its recorded duplicates; returns "unaccounted|false".
sub accounting
{
	my ($log, $campaign) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM $log m JOIN wasend.send_queue q USING (recipient)
		         WHERE q.campaign_id = $campaign AND m.http_status = 200
		           AND m.wamid IS DISTINCT FROM q.wa_message_id
		           AND NOT EXISTS (SELECT 1 FROM wasend.duplicate_sends d
		                            WHERE d.wa_message_id = m.wamid AND d.row_id = q.id)),
		       (SELECT count(*) FROM wasend.duplicate_sends d
		         WHERE d.campaign_id = $campaign
		           AND NOT EXISTS (SELECT 1 FROM $log m
		                            WHERE m.wamid = d.wa_message_id AND m.http_status = 200))});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('57001', 'tok', 40);
	SELECT wasend.wasend_create_campaign('lost answers', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15557000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend.wasend_start_campaign(1);
});

# the plain timeouts wait for a status, and say so
ok( $node->poll_query_until('postgres', q{
		SELECT waiting ~ '^uncertain: waiting for Meta''s status until .*, then retried \(\d+ rows\)'
		  FROM wasend.campaign_progress WHERE campaign_id = 1}),
	'campaign_progress says rows wait for Meta\'s status after a lost answer');
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'campaign 1 completes');
is(WasendTest::mock_get($mock, '/__mock/held') =~ /"held_statuses":10/ ? 1 : 0, 1,
	'the 3x statuses are still held back');
WasendTest::mock_post($mock, '/__mock/release_statuses');
my $st = statuses_in();
is($st->{given_up}, 0, 'the endpoint took every status webhook (' . $st->{answered_200} . ')');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 10 FROM wasend.duplicate_sends d JOIN wasend.send_queue q ON q.id = d.row_id
		 WHERE q.recipient LIKE '1555700003_'}),
	'the held statuses of the 3x rows count as duplicates once they come');

WasendTest::load_mock_log($node, $mock, 'log1', from_file => 1);
is($node->safe_psql('postgres', q{
	SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
	  FROM (SELECT status, count(*) n FROM wasend.send_queue WHERE campaign_id = 1 GROUP BY 1) s}),
	'sent=100', 'all 100 rows sent');
is(accounting('log1', 1), '0|0',
	'every request the mock accepted is its row\'s wamid or a duplicate the row records; no false duplicate');

my $settled_text = 'outcome settled by a status webhook: the message had reached Meta';
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700001_'
	   AND q.uncertain AND q.attempts = 1 AND q.last_error = '$settled_text'
	   AND (SELECT count(*) FROM log1 m WHERE m.recipient = q.recipient) = 1
	   AND q.wa_message_id = (SELECT m.wamid FROM log1 m WHERE m.recipient = q.recipient)}),
	'10', 'a timed-out request that reached Meta: settled by its status, one request, never sent again');
my ($b_rows, $b_settled) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT count(*), count(*) FILTER (WHERE q.attempts = 1 AND q.last_error = '$settled_text')
	  FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700002_' AND q.uncertain});
note("dropped connections: $b_rows rows uncertain, $b_settled settled by their status at the first attempt");
cmp_ok($b_rows, '>', 0, 'a dropped connection after Meta took the request marks the row uncertain');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700002_'
	   AND (SELECT count(*) FROM log1 m WHERE m.recipient = q.recipient AND m.http_status = 200) > 1
	   AND NOT EXISTS (SELECT 1 FROM wasend.duplicate_sends d WHERE d.row_id = q.id)}),
	'0', 'a dropped row the mock accepted twice has its duplicate recorded');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700003_' AND q.uncertain AND q.attempts = 2
	   AND (SELECT min(m.t_ms) FROM log1 m WHERE m.recipient = q.recipient AND m.code IS NULL)
	       >= (SELECT m.t_ms FROM log1 m WHERE m.recipient = q.recipient AND m.code = 'lost_hang') + $delay * 1000
	   AND q.wa_message_id = (SELECT m.wamid FROM log1 m WHERE m.recipient = q.recipient AND m.code IS NULL)
	   AND (SELECT d.wa_message_id FROM wasend.duplicate_sends d WHERE d.row_id = q.id)
	       = (SELECT m.wamid FROM log1 m WHERE m.recipient = q.recipient AND m.code = 'lost_hang')}),
	'10', 'no status in time: sent again after the delay, the lost request a recorded duplicate');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700004_' AND q.uncertain AND q.attempts = 2
	   AND (SELECT count(*) FROM log1 m WHERE m.recipient = q.recipient AND m.code = 'hang') = 1
	   AND (SELECT m.t_ms FROM log1 m WHERE m.recipient = q.recipient AND m.http_status = 200)
	       >= (SELECT m.t_ms FROM log1 m WHERE m.recipient = q.recipient AND m.code = 'hang') + $delay * 1000
	   AND NOT EXISTS (SELECT 1 FROM wasend.duplicate_sends d WHERE d.row_id = q.id)}),
	'10', 'a timed-out request Meta never took: sent again after the delay, no duplicate');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700006_' AND q.uncertain AND q.attempts = 2 AND q.status = 'sent'
	   AND (SELECT m.t_ms FROM log1 m WHERE m.recipient = q.recipient AND m.http_status = 200)
	       >= (SELECT m.t_ms FROM log1 m WHERE m.recipient = q.recipient AND m.code = 'http500') + $delay * 1000}),
	'10', 'a 500 without an error body: uncertain, sent again after the delay');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700005_' AND NOT q.uncertain AND q.attempts = 2 AND q.status = 'sent'}),
	'10', 'an API error (131056) is retried as before, not uncertain');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700007_' AND q.uncertain AND q.attempts = 1 AND q.status = 'sent'
	   AND q.last_error = '$settled_text'
	   AND q.wa_message_id = (SELECT m.wamid FROM log1 m WHERE m.recipient = q.recipient)}),
	'10', 'a 200 without JSON fails the row, and the status of the message settles it as sent');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue
	 WHERE campaign_id = 1 AND uncertain
	   AND NOT (recipient BETWEEN '15557000010' AND '15557000049'
	            OR recipient LIKE '1555700006_' OR recipient LIKE '1555700007_')}),
	'0', 'rows whose request was answered are not uncertain');
is($node->safe_psql('postgres', q{
	SELECT duplicates = (SELECT count(*) FROM wasend.duplicate_sends WHERE campaign_id = 1)
	  FROM wasend.campaign_report WHERE campaign_id = 1}),
	't', 'campaign_report counts the duplicates');

# A status that comes while the row's next request is in flight waits
# (a row in flight takes none), and counts once that request is
# recorded, however long it waited.  Three rows (what a number of this
# rate keeps in flight with fast answers is about four): their first
# request is taken by Meta and its answer cut short, their status held
# back; requests may take a minute here, and their second request is held
# in flight while the statuses come.
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET wasend.request_timeout_ms = '60s';
	SELECT pg_reload_conf();
});
$node->poll_query_until('postgres', q{SELECT current_setting('wasend.request_timeout_ms') = '1min'});
WasendTest::mock_post($mock, '/__mock/config', {
	rules => [
		{ to => '^1555700100[0-9]$', action => 'lost', lost => 'cut', hold_statuses => JSON::PP::true,
		  times => 3 },
		{ to => '^1555700100[0-9]$', action => 'hold', times => 3 },
	] });
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('in flight', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15557001000 + g)::text)) FROM generate_series(0, 2) g;
	SELECT wasend.wasend_start_campaign(2);
});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 3 FROM wasend.send_queue
		 WHERE campaign_id = 2 AND status = 'ready' AND waiting_for = 'uncertain' AND uncertain}),
	'the 3 rows whose answer was cut short wait for their status');
my $held;
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	$held = WasendTest::mock_get($mock, '/__mock/held');
	last if $held =~ /"held":3,/;
	usleep(100_000);
}
like($held, qr/"held":3,"held_statuses":3/, 'the 3 rows are sent again and held in flight');
WasendTest::mock_post($mock, '/__mock/release_statuses');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 3 FROM wasend.pending_statuses p JOIN wasend.send_queue q ON q.id = p.row_id
		 WHERE q.campaign_id = 2 AND q.status = 'sending' AND p.settled}),
	'their statuses wait, settled as waiting, while the rows are in flight');
# A bad day on top: a session holds wasend.duplicate_sends locked, so the
# statuses cannot be applied when the answers are recorded (the senders'
# lock_timeout): they are left to the senders' refresh, which applies
# them once the lock is gone.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE wasend.duplicate_sends IN SHARE MODE;');
WasendTest::mock_post($mock, '/__mock/release');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 3 FROM wasend.pending_statuses p JOIN wasend.send_queue q ON q.id = p.row_id
		 WHERE q.campaign_id = 2 AND q.status = 'sent' AND NOT p.settled}),
	'the answers are recorded; the statuses that could not be applied wait, left to the refresh');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.duplicate_sends WHERE campaign_id = 2}),
	'0', 'no duplicate counted while the table is locked');
$locker->query_safe('COMMIT;');
$locker->quit;
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 3 FROM wasend.duplicate_sends WHERE campaign_id = 2}),
	'once the lock is gone, the statuses count the duplicates');
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'campaign 2 completes');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.pending_statuses p JOIN wasend.send_queue q ON q.id = p.row_id
	 WHERE q.campaign_id = 2}), '0', 'no status is left waiting');
WasendTest::load_mock_log($node, $mock, 'log2', from_file => 0);
is(accounting('log2', 2), '0|0', 'every request the mock accepted is accounted for');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.campaign_id = 2 AND q.status = 'sent' AND q.uncertain AND q.attempts = 2
	   AND q.wa_message_id = (SELECT m.wamid FROM log2 m WHERE m.recipient = q.recipient AND m.code = 'held')}),
	'3', 'each row keeps the wamid of the request whose answer it got');

# wasend.on_uncertain = fail: a request that timed out is never sent
# again; the status of one that reached Meta settles its row as sent
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET wasend.request_timeout_ms;
	ALTER SYSTEM SET wasend.on_uncertain = 'fail';
	SELECT pg_reload_conf();
});
$node->poll_query_until('postgres', q{
	SELECT current_setting('wasend.request_timeout_ms') = '3s' AND current_setting('wasend.on_uncertain') = 'fail'});
WasendTest::mock_post($mock, '/__mock/config', {
	rules => [
		{ to => '^1555700200[0-9]$', action => 'hang', times => 10 },
		{ to => '^1555700201[0-9]$', action => 'lost', lost => 'hang', times => 10 },
	] });
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('fail when unsure', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(3, array_agg((15557002000 + g)::text)) FROM generate_series(0, 19) g;
	SELECT wasend.wasend_start_campaign(3);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'campaign 3 completes');
statuses_in();
WasendTest::load_mock_log($node, $mock, 'log3', from_file => 0);
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700200_' AND q.status = 'failed' AND q.uncertain
	   AND q.last_error_class = 'uncertain' AND q.attempts = 1
	   AND (SELECT count(*) FROM log3 m WHERE m.recipient = q.recipient) = 1
	   AND extract(epoch FROM q.failed_at) * 1000
	       >= (SELECT m.t_ms FROM log3 m WHERE m.recipient = q.recipient) + $delay * 1000}),
	'10', 'a timed-out request Meta never took: failed after the delay, never sent again');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.recipient LIKE '1555700201_'
	   AND q.status = 'sent' AND q.attempts = 1 AND q.last_error = '$settled_text'
	   AND q.wa_message_id = (SELECT m.wamid FROM log3 m WHERE m.recipient = q.recipient)}),
	'10', 'a timed-out request that reached Meta: settled as sent by its status');
is(accounting('log3', 3), '0|0', 'every request the mock accepted is accounted for');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
