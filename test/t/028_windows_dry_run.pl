# 028_windows_dry_run.pl — send windows, wasend_dry_run, wasend_test_send
# and wasend_wait against real senders.
#
# The windows are built from the clock at test time, never from the hour
# the test happens to run at: a zone is chosen (Etc/GMT offsets, or a
# country's main zone from wasend.country_zones) whose local hour now is
# well inside 08:00-16:00 (10-13 h) or well outside it (19-21 h), so no
# boundary is crossed while the test runs.
#
#  1. A window in a fixed zone that is closed now: no row goes (while a
#     probe campaign completes), campaign_progress counts every ready row
#     as waiting for its window, the dry run says so; a wasend_send on the
#     same number goes at once; clearing the window sends them all and
#     wasend_wait returns 'completed'.
#  2. Windows per recipient: rows with their own timezone, and rows whose
#     zone comes from the country calling code: exactly the rows inside
#     their window reach the mock; the others wait (waiting_for
#     send_window, next_attempt_at = when their window opens), never fail.
#  3. wasend_dry_run: would send now, messaging limit, suppressed,
#     invalid, estimated duration; exact figures.
#  4. wasend_test_send: Meta's answer comes back, the mock saw exactly one
#     request, no queue row was made; an API error comes back as the answer
#     with a WARNING; bad recipients are refused.  A test send spends the
#     messaging limit as a send does: a new recipient takes a slot in
#     wasend.recipient_window, one already in the window costs nothing
#     again, and with no slot left (a limit of 0, or the last slot spent)
#     it is an ERROR with a hint and no request reaches the API.
#  5. wasend_wait: a timeout returns the status then; drafts and
#     REPEATABLE READ are refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'28001' => { token => 'tok-28001', rate => 50 },
		'28002' => { token => 'tok-28002', rate => 50 },
	},
});
my $node = WasendTest::new_node('windows', $mock);

# a zone whose local hour is $h now (Etc/GMT covers every hour)
sub zone_at_hour
{
	my ($h) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT name FROM pg_timezone_names
		 WHERE name ~ '^Etc/GMT[-+][0-9]+\$' AND extract(hour FROM now() AT TIME ZONE name) = $h
		 ORDER BY name LIMIT 1});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('28001', 'tok-28001', 50);
	SELECT wasend.wasend_add_number('28002', 'wrong-token', 50);
});
my $closed_zone = zone_at_hour(20);
my $open_zone = zone_at_hour(12);
note("closed zone $closed_zone, open zone $open_zone");

# --- 1. fixed zone, closed now
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('closed', 1, '{"type":"text","text":{"body":"w"}}',
	       send_window_start => '08:00', send_window_end => '16:00', send_timezone => '$closed_zone');
	SELECT wasend.wasend_enqueue(1, array_agg((15550281000 + g)::text)) FROM generate_series(1, 10) g;
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_create_campaign('probe', 1, '{"type":"text","text":{"body":"p"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15550282000 + g)::text)) FROM generate_series(1, 10) g;
	SELECT wasend.wasend_start_campaign(2);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'the probe campaign completed');
is($node->safe_psql('postgres', q{
	SELECT status, ready, waiting_window, waiting ~ '^send window 08:00:00-16:00:00 ' FROM wasend.campaign_progress WHERE campaign_id = 1}),
	'running|10|10|t', 'closed window: 10 rows ready, all waiting for the window, and why');
is($node->safe_psql('postgres', q{
	SELECT would_send_now, waiting_send_window, waiting_messaging_limit, suppressed, invalid FROM wasend.wasend_dry_run(1)}),
	'0|10|0|0|0', 'the dry run says the same');
my $tx = $node->safe_psql('postgres',
	q{SELECT wasend.wasend_send(1, '15550283000', '{"type":"text","text":{"body":"now"}}')});
ok($node->poll_query_until('postgres', "SELECT status = 'sent' FROM wasend.wasend_send_status($tx)"),
	'a wasend_send on the same number goes at once, window or not');
is($node->safe_psql('postgres', q{SELECT id FROM wasend.campaigns WHERE kind = 'transactional'}), '3',
	'it made the number\'s lane, campaign 3 (the campaigns below are 4, 5 and 6)');
WasendTest::load_mock_log($node, $mock, 'seen1');
is($node->safe_psql('postgres', q{SELECT count(*) FROM seen1 WHERE recipient LIKE '155502810%' OR recipient = '15550281010'}),
	'0', 'no row of the closed window reached the API');
$node->safe_psql('postgres', q{SELECT wasend.wasend_update_campaign(1, clear_send_window => true)});
is($node->safe_psql('postgres', q{SELECT wasend.wasend_wait(1, '2 minutes')}), 'completed',
	'wasend_wait returns completed once the window is cleared');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'}),
	'10', 'all 10 sent');

# --- 2. per recipient: own timezone, and from the country calling code
my ($in_cc, $out_cc) = map {
	$node->safe_psql('postgres', qq{
		SELECT calling_code FROM wasend.country_zones
		 WHERE calling_code NOT IN ('1', '7') AND builtin
		   AND extract(hour FROM now() AT TIME ZONE zone) BETWEEN $_
		 ORDER BY length(calling_code), calling_code LIMIT 1})
} ('10 AND 13', '19 AND 21');
note("country inside: $in_cc, outside: $out_cc");
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('per recipient', 1, '{"type":"text","text":{"body":"r"}}',
	       send_window_start => '08:00', send_window_end => '16:00');
	INSERT INTO wasend.send_queue (campaign_id, recipient, timezone) VALUES
	  (4, '15550284001', '$open_zone'), (4, '15550284002', '$open_zone'),
	  (4, '15550284003', '$closed_zone'), (4, '15550284004', '$closed_zone');
});
my @derived;
if ($in_cc ne '' && $out_cc ne '')
{
	@derived = ("${in_cc}5550101", "${out_cc}5550102");
	$node->safe_psql('postgres', qq{
		INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (4, '$derived[0]'), (4, '$derived[1]')});
}
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(4)});
my $expect_sent = @derived ? 3 : 2;
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) FILTER (WHERE status = 'sent') = $expect_sent
	   AND count(*) FILTER (WHERE waiting_for = 'send_window') = $expect_sent
	  FROM wasend.send_queue WHERE campaign_id = 4}),
	'the rows inside their window are sent, the others wait for it');
is($node->safe_psql('postgres', q{
	SELECT string_agg(recipient, ',' ORDER BY recipient) FROM wasend.send_queue
	 WHERE campaign_id = 4 AND status = 'sent'}),
	join(',', sort('15550284001', '15550284002', @derived ? ($derived[0]) : ())),
	'exactly the rows whose local time is inside the window were sent');
is($node->safe_psql('postgres', q{
	SELECT bool_and(status = 'ready' AND waiting_for = 'send_window' AND next_attempt_at > now()
	                AND next_attempt_at <= now() + interval '24 hours' AND failed_at IS NULL
	                AND attempts = 0)
	  FROM wasend.send_queue WHERE campaign_id = 4 AND status <> 'sent'}),
	't', 'the others are ready, not failed, not tried, next attempt when their window opens');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.campaign_id = 4 AND q.status = 'ready'
	   AND abs(extract(epoch FROM q.next_attempt_at
	           - wasend._window_opens('08:00', '16:00', wasend._row_zone('recipient', q.timezone, q.recipient)))) > 5}),
	'0', 'each waits exactly until 08:00 in its own zone');
is($node->safe_psql('postgres', q{SELECT waiting_window FROM wasend.campaign_progress WHERE campaign_id = 4}),
	$expect_sent, 'campaign_progress counts them');
is($node->safe_psql('postgres', q{SELECT wasend.wasend_wait(4, '1 second')}), 'running',
	'wasend_wait gives up at its timeout and says running');

# --- 3. dry run
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_add_number('28003', 'tok-28003', 50);
	SELECT wasend.wasend_update_number(3, messaging_limit => 2);
	SELECT wasend.wasend_create_campaign('dry', 3, '{"type":"text","text":{"body":"d"}}');
	-- an invalid row: its calling code is taken out of country_zones
	-- after it was queued (a new row with it is refused)
	INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'UTC');
	INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES
	  (5, '15550285001'), (5, '15550285002'), (5, '15550285003'), (5, '15550285004'), (5, '999123456');
	DELETE FROM wasend.country_zones WHERE calling_code = '999';
	INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15550285004', 'test');
});
is($node->safe_psql('postgres', q{SELECT * FROM wasend.wasend_dry_run(5)}),
	'2|1|0|0|0|1|1|00:00:01|',
	'dry run: 2 now, 1 over the messaging limit of 2, 1 suppressed, 1 invalid, about a second, nothing stops it');
is($node->safe_psql('postgres', q{SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 5 GROUP BY 1}),
	'ready|5', 'the dry run changed nothing');

# --- 4. test send
WasendTest::load_mock_log($node, $mock, 'before_test');
my $answer = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_test_send(2, '+15550286001') #>> '{messages,0,id}' LIKE 'wamid.%'});
is($answer, 't', 'wasend_test_send returns Meta\'s answer with the message id');
WasendTest::load_mock_log($node, $mock, 'after_test');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM after_test) - (SELECT count(*) FROM before_test),
	       (SELECT count(*) FROM after_test WHERE recipient = '15550286001' AND phone_number_id = '28001')}),
	'1|1', 'the mock saw exactly that one request');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE recipient = '15550286001'}),
	'0', 'no queue row was made');
$node->safe_psql('postgres', q{SELECT wasend.wasend_create_campaign('wrong token', 2, '{"type":"text","text":{"body":"t"}}')});
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(6, '15550286002') #>> '{error,code}'});
is($out, '190', 'an API error comes back as the answer');
like($err, qr/WARNING:  test send of campaign 6 to 15550286002 failed: HTTP 401/, 'with a WARNING saying so');
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(2, '999123456')});
like($err, qr/invalid recipient "999123456": no country calling code wasend.country_zones lists starts it/, 'an unknown country is refused');
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(2, 'not a number')});
like($err, qr/invalid recipient "not a number"/, 'a malformed number is refused');
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(404, '15550286003')});
like($err, qr/campaign 404 does not exist/, 'an unknown campaign is refused');

# a test send spends the messaging limit: number 4 has a limit of 0,
# number 5 a limit of 1
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_add_number('28004', 'tok-28004', 50);
	SELECT wasend.wasend_update_number(4, messaging_limit => 0);
	SELECT wasend.wasend_create_campaign('limit 0', 4, '{"type":"text","text":{"body":"z"}}');
	SELECT wasend.wasend_add_number('28005', 'tok-28005', 50);
	SELECT wasend.wasend_update_number(5, messaging_limit => 1);
	SELECT wasend.wasend_create_campaign('limit 1', 5, '{"type":"text","text":{"body":"o"}}');
});
my $requests = WasendTest::mock_stats($mock)->{requests};
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(7, '15550287001')});
like($err, qr/ERROR:  the messaging limit of number 28004 is spent: 0 of 0 recipients in 24 hours/,
	'a test send past a messaging limit of 0 is an ERROR');
like($err, qr/HINT:  .*messaging limit/, 'with a hint');
is(WasendTest::mock_stats($mock)->{requests}, $requests, 'and no request reached the API');
is($node->safe_psql('postgres', q{
	SELECT wasend.wasend_test_send(8, '15550287002') #>> '{messages,0,id}' LIKE 'wamid.%'}),
	't', 'a test send to a new recipient within the limit goes');
is($node->safe_psql('postgres', q{SELECT portfolio, recipient, last_at > now() - interval '1 minute' FROM wasend.recipient_window}),
	'number:5|15550287002|t', 'and takes that recipient\'s slot in wasend.recipient_window, as a send would');
is($node->safe_psql('postgres', q{
	SELECT wasend.wasend_test_send(8, '15550287002') #>> '{messages,0,id}' LIKE 'wamid.%'}),
	't', 'a second test send to the same recipient costs nothing and goes');
$requests = WasendTest::mock_stats($mock)->{requests};
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(8, '15550287003')});
like($err, qr/ERROR:  the messaging limit of number 28005 is spent: 1 of 1 recipients in 24 hours/,
	'a test send to a second new recipient past the limit of 1 is an ERROR');
is(WasendTest::mock_stats($mock)->{requests}, $requests, 'and no request reached the API');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.recipient_window}), '1',
	'the refused test send took no slot');

# --- 5. wasend_wait refusals
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_wait(5, '1 second')});
like($err, qr/campaign 5 is a draft: it will not end by itself/, 'waiting for a draft is refused');
($ret, $out, $err) = $node->psql('postgres',
	q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT wasend.wasend_wait(1, '1 second'); COMMIT});
like($err, qr/wasend_wait needs READ COMMITTED, not repeatable read/, 'REPEATABLE READ is refused');
($ret, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT wasend.wasend_start_campaign(5); SELECT wasend.wasend_wait(5, '1 second'); COMMIT});
like($err, qr/wasend_wait cannot run in a transaction that has changed data/,
	'waiting for a start this transaction has not committed is refused');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
