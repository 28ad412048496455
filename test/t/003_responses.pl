# 003_responses.pl — what a sender does with each kind of answer, per
# wasend.error_policy.
#
# Proves: a 200 stores its wamid; 131026 and 131050 fail at once with the
# API's code and message; a 500 without a body and a 131056 are retried
# and then sent, a 130429 is sent again by the sender itself (one
# attempt); a 200 that is not JSON fails as bad_response; a
# template error (132001) pauses the campaign with the reason stored; a
# wrong token (190) pauses the number with the reason stored and shown in
# campaign_progress, its rows wait, and resuming the number with the right
# token finishes the campaign; an error that keeps coming fails the row
# after wasend.max_attempts with its last code; 131048 pauses the number for
# its policy's pause_for, after which it resumes by itself; a campaign whose
# failures exceed its threshold is paused by the circuit breaker.  Nothing
# is sent twice.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'3001' => { token => 'good', rate => 100 },
		'3002' => { token => 'expected-token', rate => 100 },
		'3003' => { token => 'good', rate => 100 },
		'3004' => { token => 'good', rate => 100 },
		'3005' => { token => 'good', rate => 100 },
	},
	rules => [
		{ to => '^15570000013$', code => 131026 },
		{ to => '^15570000027$', code => 131050 },
		{ to => '^15570000042$', action => 'http500', times => 1 },
		{ to => '^15570000077$', code => 130429, times => 1 },
		{ to => '^15570000088$', code => 131056, times => 1 },
		{ to => '^15570000099$', action => 'garbage' },
		{ to => '^15570000055$', action => 'http500' },
		{ to => '^1557800', code => 132001, http => 404 },
		{ to => '^1557700', code => 131048, after => 10, times => 1 },
		{ to => '^155760000[0-9][05]$', code => 131026 },
	],
});
# (a bare 500 may have been taken: its row waits for a status, 1 s here)
my $node = WasendTest::new_node('responses', $mock, 'wasend.max_attempts' => 3,
	'wasend.uncertain_retry_delay' => 1);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('3001', 'good', 100);
	SELECT wasend.wasend_add_number('3002', 'wrong-token', 100);
	SELECT wasend.wasend_add_number('3003', 'good', 100);
	SELECT wasend.wasend_add_number('3004', 'good', 100);
	SELECT wasend.wasend_add_number('3005', 'good', 100);
	UPDATE wasend.error_policy SET pause_for = '2 seconds' WHERE code = '131048';
	SELECT wasend.wasend_create_campaign('mixed', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('bad-token', 2, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('bad-template', 3, '{"type":"template","template":{"name":"gone","language":{"code":"en"}}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15570000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend.wasend_enqueue(2, ARRAY['15579000001', '15579000002']);
	SELECT wasend.wasend_enqueue(3, ARRAY['15578000001', '15578000002', '15578000003']);
	SELECT wasend.wasend_create_campaign('spam-pause', 4, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('breaker', 5, '{"type":"text","text":{"body":"x"}}');
	UPDATE wasend.campaigns SET error_window = 20 WHERE id = 5;
	SELECT wasend.wasend_enqueue(4, array_agg((15577000000 + g)::text)) FROM generate_series(1, 40) g;
	SELECT wasend.wasend_enqueue(5, array_agg((15576000000 + g)::text)) FROM generate_series(1, 300) g;
});
WasendTest::install_state_log($node);
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_start_campaign(2);
	SELECT wasend.wasend_start_campaign(3);
	SELECT wasend.wasend_start_campaign(4);
	SELECT wasend.wasend_start_campaign(5);
});
ok( $node->poll_query_until('postgres', q{
		SELECT (SELECT status FROM wasend.campaigns WHERE id = 1) = 'completed'
		   AND (SELECT status FROM wasend.whatsapp_numbers WHERE id = 2) = 'paused'
		   AND (SELECT status FROM wasend.campaigns WHERE id = 3) = 'paused'}),
	'campaign 1 completes; number 2 and campaign 3 pause themselves');

is($node->safe_psql('postgres', q{
	SELECT recipient, status, last_error_code, last_error_class, last_error, attempts
	  FROM wasend.send_queue WHERE campaign_id = 1 AND (status <> 'sent' OR attempts <> 1)
	 ORDER BY recipient}),
	join("\n",
		'15570000013|failed|131026|api|(#131026) Message undeliverable|1',
		'15570000027|failed|131050|api|(#131050) User has opted out of marketing messages|1',
		'15570000042|sent||||2',
		'15570000055|failed||http_5xx|HTTP 500, response is not JSON|3',
		'15570000088|sent||||2',
		'15570000099|failed||bad_response|response is not JSON|1'),
	'fail codes fail at once with code and message; 500 and 131056 are retried and sent; a lasting 500 fails after 3 attempts; the 130429 row is sent with 1 attempt (the sender sent it again itself)');

like($node->safe_psql('postgres', q{SELECT pause_reason FROM wasend.whatsapp_numbers WHERE id = 2}),
	qr/^error 190: \(#190\) Error validating access token/, 'number 2 paused with the reason stored');
like($node->safe_psql('postgres', q{SELECT status || ' / ' || pause_reason FROM wasend.campaign_progress WHERE campaign_id = 2}),
	qr{^running / number paused: error 190}, 'campaign_progress shows why campaign 2 waits');
is($node->safe_psql('postgres', q{
	SELECT string_agg(status || ':' || attempts, ',') FROM wasend.send_queue WHERE campaign_id = 2}),
	'ready:0,ready:0', 'its rows wait, the refused attempt not counted');

like($node->safe_psql('postgres', q{SELECT pause_reason FROM wasend.campaigns WHERE id = 3}),
	qr/^error 132001: /, 'campaign 3 paused by the template error');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'ready') FROM wasend.send_queue WHERE campaign_id = 3}),
	'3', 'campaign 3 rows wait for the template to be fixed');

# 131048: the number pauses for its pause_for (2 s here), then resumes
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4}),
	'the campaign of the number paused for spam completes after the timed pause');

# circuit breaker: every 5th recipient of campaign 5 is undeliverable
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'paused' FROM wasend.campaigns WHERE id = 5}),
	'the circuit breaker pauses the campaign with too many failures');
like($node->safe_psql('postgres', q{SELECT pause_reason FROM wasend.campaigns WHERE id = 5}),
	qr/^circuit breaker: \d+ of the last 20 results failed \(threshold 5\.00%\)$/,
	'with the reason stored');
cmp_ok($node->safe_psql('postgres',
	q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 5 AND status = 'ready'}),
	'>', 0, 'the rest of its rows wait');

# a person fixes the token: the campaign finishes
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(2, 'expected-token')});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'resuming the number with the right token finishes campaign 2');

WasendTest::load_mock_log($node, $mock);
# the number paused and resumed by itself: checked on the transactions,
# without a clock window (the pause's own timing is make bench's business)
is($node->safe_psql('postgres', q{
	SELECT string_agg(status, ',' ORDER BY seq) FROM public.state_log
	 WHERE what = 'whatsapp_numbers' AND id = 4}),
	'paused,active', 'the 131048 paused number 4 once, and it resumed by itself');
is($node->safe_psql('postgres', WasendTest::claims_seeing_pause_sql('whatsapp_numbers', 4, 4)),
	'0', 'no claim saw the pause: nothing was claimed for the number while it was paused');
is($node->safe_psql('postgres', q{
	SELECT (max(t_ms) - min(t_ms)) >= 3200 FROM mocklog WHERE recipient = '15570000088'}),
	't', '131056 waited its 4 s backoff (minus 20% jitter) before the retry');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.campaign_id IN (1, 2, 4) AND q.status = 'sent' AND m.http_status = 200
	   AND q.wa_message_id = m.wamid}),
	'138', 'the 138 sent rows of campaigns 1, 2, 4 (96 + 2 + 40) store the wamid the mock returned');
my $a = WasendTest::account($node, 'mocklog');
is($a->{duplicates}, 0, 'no recipient accepted twice');
is($a->{lost}, $node->safe_psql('postgres',
	q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id IN (3, 5) AND status = 'ready'}),
	'the only rows not finished are those of the two paused campaigns');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
