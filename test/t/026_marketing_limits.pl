# 026_marketing_limits.pl — the per-user marketing rules, with real senders
# against the mock Graph API.  One number, unlimited
# tier; every request the mock saw is compared with the rows.
#
#   1. 131049 (per-user marketing limit): the row goes back to ready,
#      attempt 1, next try exactly 24 h after the answer (no jitter), and
#      campaign_progress says why it waits; the mock saw it once.  With the
#      24 h simulated (next_attempt_at = now()) it is tried once more: still
#      131049, it fails (attempts 2, the mock saw it twice); a recipient
#      whose 131049 came only once is sent on that second try.
#   2. 131050 (the user stopped marketing messages): the row fails and the
#      recipient is suppressed for marketing (scope 'marketing').  A second
#      marketing campaign whose row for that recipient was enqueued before
#      fails it at claim time (last_error_class 'suppressed') without a
#      request; a utility campaign to the same recipient sends.
#   3. A user_preferences webhook "stop": the ready row of a running
#      marketing campaign fails as suppressed without a request, the
#      utility one is sent; "resume" lifts it: a new marketing campaign
#      to the recipient sends.  (The number is paused while the webhook
#      arrives, so that the rows are ready and their campaigns running.)
#   4. Frequency cap: campaign X (marketing, cap 1 per 7 days) to R1..R10,
#      after campaign W (marketing, no cap) sent to R1..R5: R6..R10 are
#      sent, R1..R5 wait (ready, waiting_for 'frequency_cap', until exactly
#      7 days after W's send), campaign_progress says why; the mock saw
#      each of R1..R10 once.  A utility campaign with a cap of 1 to R1 is
#      not capped (the cap counts and limits marketing messages only).
#   5. Campaign W2 (marketing, no cap) and X2 (marketing, cap
#      1 per 7 days) to the same 20 recipients, W2's rows enqueued first,
#      both started in one transaction: W2 sends all 20; X2 must count
#      W2's messages, so its 20 rows wait and the mock sees each
#      recipient once, whether one claim takes W2's and X2's rows together
#      (the claim counts its own marketing rows, capped or not) or two
#      senders claim them at once (the 'frequency_cap' claim lock makes
#      the second claim see the first's rows).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $pnid = '26001';

# recipients: section / campaign digit, then 5 digits
my $p1 = '155526100001';	# always 131049
my $p2 = '155526100002';	# 131049 once
my $p3 = '155526200001';	# 131050 once
my $p4 = '155526400001';	# user_preferences stop, then resume

my $mock = WasendTest::start_mock({
	numbers => {
		$pnid => { token => "tok-$pnid", rate => 200,
			account => { tier => 'TIER_UNLIMITED', display_phone_number => "155500$pnid" } },
	},
	rules => [
		{ to => "^$p1\$", code => 131049, http => 400 },
		{ to => "^$p2\$", code => 131049, http => 400, times => 1 },
		{ to => "^$p3\$", code => 131050, http => 400, times => 1 },
	],
});
my $node = WasendTest::new_node('marketing', $mock);

# what the campaigns and the queue look like, for a failure message
sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s (%s): %s', id, category, status), E'\n' ORDER BY id)
		  FROM wasend.campaigns})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('number %s: %s %s', phone_number_id, status,
		                         coalesce(pause_reason, '-')), E'\n')
		  FROM wasend.whatsapp_numbers})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('row %s campaign %s %s: %s attempts %s, next %s, %s %s %s',
		                         id, campaign_id, recipient, status, attempts, next_attempt_at,
		                         coalesce(waiting_for, '-'), coalesce(last_error_code::text, '-'),
		                         coalesce(last_error_class, '-')), E'\n' ORDER BY id)
		  FROM wasend.send_queue});
}

sub arr
{
	return 'ARRAY[' . join(',', map { "'$_'" } @_) . ']';
}

# recipients 155526<s><nnnnn>, n from $from to $to
sub range
{
	my ($s, $from, $to) = @_;
	return map { sprintf('155526%d%05d', $s, $_) } $from .. $to;
}

sub wait_completed
{
	my (@c) = @_;
	my $list = join(',', @c);
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = } . scalar(@c) . qq{ FROM wasend.campaigns
		 WHERE id IN ($list) AND status = 'completed'})
	  or die "campaigns $list did not complete: " . state_of();
	WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
}

# the mock's requests for one recipient: "http:code" in order of arrival
sub mock_seen
{
	my ($r) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(http_status || ':' || coalesce(code, ''), ' ' ORDER BY t_ms), '')
		  FROM mocklog WHERE recipient = '$r'});
}

my $msg = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok-$pnid', 50);
});
$node->poll_query_until('postgres', q{
	SELECT messaging_tier = 'TIER_UNLIMITED' AND messaging_limit IS NULL AND limits_error IS NULL
	  FROM wasend.whatsapp_numbers})
  or die 'the number was not read: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT action, backoff, backoff_factor, jitter, retry_once FROM wasend.error_policy
	 WHERE code = '131049'}),
	'retry|24:00:00|1|0|t', 'the shipped policy for 131049: wait 24 h, no jitter, once');

# --- 1. 131049 waits 24 h and is tried once more --------------------------
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('c131049', 1, $msg);
	SELECT wasend.wasend_enqueue(1, } . arr(range(1, 1, 10)) . q{);
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 8
	   AND count(*) FILTER (WHERE status = 'ready' AND last_error_code = 131049) = 2
	  FROM wasend.send_queue WHERE campaign_id = 1})
  or die 'campaign 1 did not meet 131049: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts, last_error_code, last_error_class, waiting_for IS NULL,
	       sent_at IS NULL AND failed_at IS NULL,
	       next_attempt_at BETWEEN now() + interval '23 hours 59 minutes'
	                           AND now() + interval '24 hours 1 minute'
	  FROM wasend.send_queue WHERE campaign_id = 1 AND status <> 'sent' ORDER BY recipient}),
	"$p1|ready|1|131049|api|t|t|t\n$p2|ready|1|131049|api|t|t|t",
	'131049: back to ready after attempt 1, next try in 24 h (no jitter)');
like($node->safe_psql('postgres', q{
	SELECT status || ' / ' || waiting FROM wasend.campaign_progress WHERE campaign_id = 1}),
	qr{^running / per-user marketing limit \(131049\), retry at \d{4}-\d\d-\d\d [0-9:.+]+ \(2 rows\)$},
	'campaign_progress says the rows wait for the per-user marketing limit');
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is(mock_seen($p1) . ' / ' . mock_seen($p2), '400:131049 / 400:131049',
	'the mock saw each of the two once, answered 131049');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	  JOIN mocklog m ON m.recipient = q.recipient
	 WHERE q.campaign_id = 1 AND q.status = 'sent' AND m.http_status = 200
	   AND m.wamid = q.wa_message_id}),
	'8', 'the other 8 were sent, once each');
# exactly 24 h after the answer the mock gave
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m ON m.recipient = q.recipient
	 WHERE q.campaign_id = 1 AND q.status = 'ready'
	   AND q.next_attempt_at - to_timestamp(m.t_ms / 1000.0)
	       BETWEEN interval '24 hours' - interval '1 second' AND interval '24 hours 10 seconds'}),
	'2', 'the next try is 24 h after the 131049 answer');

# the 24 h pass
$node->safe_psql('postgres', qq{
	UPDATE wasend.send_queue SET next_attempt_at = now()
	 WHERE campaign_id = 1 AND recipient IN ('$p1', '$p2')});
wait_completed(1);
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts, coalesce(last_error_code::text, '-'),
	       failed_at IS NOT NULL, sent_at IS NOT NULL
	  FROM wasend.send_queue WHERE campaign_id = 1 AND recipient IN ('} . "$p1', '$p2" . q{')
	 ORDER BY recipient}),
	"$p1|failed|2|131049|t|f\n$p2|sent|2|-|f|t",
	'tried once more: 131049 again fails the row; the one answered 131049 once is sent');
WasendTest::load_mock_log($node, $mock);
is(mock_seen($p1) . ' / ' . mock_seen($p2), '400:131049 400:131049 / 400:131049 200:',
	'the mock saw each exactly twice');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m ON m.wamid = q.wa_message_id
	 WHERE q.recipient = '$p2'}),
	'1', 'the sent row stores the wamid of the second answer');

# --- 2. 131050 suppresses the recipient for marketing --------------------
# campaign 3 (marketing) holds a row for p3 before p3's 131050
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('m1', 1, $msg);
	SELECT wasend.wasend_create_campaign('m2', 1, $msg);
	SELECT wasend.wasend_enqueue(2, } . arr($p3, range(2, 2, 5)) . qq{);
	SELECT wasend.wasend_enqueue(3, } . arr($p3, range(3, 1, 3)) . q{);
	SELECT wasend.wasend_start_campaign(2);
});
wait_completed(2);
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts, last_error_code, last_error_class
	  FROM wasend.send_queue WHERE campaign_id = 2 AND status <> 'sent'}),
	"$p3|failed|1|131050|api", '131050: the row fails, not retried');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 2 AND status = 'sent'}),
	'4', 'the other 4 were sent');
is($node->safe_psql('postgres', q{SELECT recipient, scope, reason FROM wasend.suppressions}),
	"$p3|marketing|message failed with 131050", 'the recipient is suppressed for marketing only');
is($node->safe_psql('postgres', qq{
	SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 3 GROUP BY 1}),
	'ready|4', 'the second marketing campaign still has its row for the recipient (enqueued before)');

$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(3)});
wait_completed(3);
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts, coalesce(last_error_code::text, '-'), last_error_class,
	       last_error, failed_at IS NOT NULL, wa_message_id IS NULL
	  FROM wasend.send_queue WHERE campaign_id = 3 AND status <> 'sent'}),
	"$p3|failed|0|-|suppressed|recipient is suppressed (see wasend.suppressions)|t|t",
	'its row fails at claim time as suppressed, never attempted');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'sent'}),
	'3', 'the other 3 were sent');

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('u1', 1, $msg, category => 'utility');
	SELECT wasend.wasend_enqueue(4, } . arr($p3) . q{);
	SELECT wasend.wasend_start_campaign(4);
});
wait_completed(4);
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts FROM wasend.send_queue WHERE campaign_id = 4}),
	"$p3|sent|1", 'a utility campaign to the recipient sends');
WasendTest::load_mock_log($node, $mock);
is(mock_seen($p3), '400:131050 200:',
	'the mock saw the recipient twice: the 131050, then the utility message; never campaign 3');
is($node->safe_psql('postgres', qq{
	SELECT q.campaign_id FROM wasend.send_queue q JOIN mocklog m ON m.wamid = q.wa_message_id
	 WHERE q.recipient = '$p3'}),
	'4', 'the accepted request is the utility campaign\'s row');

# --- 3. user_preferences stop / resume ------------------------------------
# the number is paused: the campaigns run but nothing is claimed yet
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_pause_number(1);
	SELECT wasend.wasend_create_campaign('m3', 1, $msg);
	SELECT wasend.wasend_create_campaign('u2', 1, $msg, category => 'utility');
	SELECT wasend.wasend_enqueue(5, } . arr($p4, range(5, 1, 3)) . qq{);
	SELECT wasend.wasend_enqueue(6, } . arr($p4, range(6, 1, 1)) . q{);
	SELECT wasend.wasend_start_campaign(5);
	SELECT wasend.wasend_start_campaign(6);
});
is($node->safe_psql('postgres', qq{
	SELECT c.id, c.status, q.status FROM wasend.send_queue q JOIN wasend.campaigns c ON c.id = q.campaign_id
	 WHERE q.recipient = '$p4' ORDER BY 1}),
	"5|running|ready\n6|running|ready", 'the recipient has a ready row in a running marketing and utility campaign');
my $stop = WasendTest::webhook_body(WasendTest::wh_user_preferences(
	wa_id => $p4, value => 'stop', phone_number_id => $pnid, display_phone_number => "155500$pnid"));
is($node->safe_psql('postgres', qq{SELECT wasend._ingest_verified('$stop') ->> 'preferences_applied'}),
	'1', 'the stop webhook is applied');
is($node->safe_psql('postgres', qq{
	SELECT scope, reason FROM wasend.suppressions WHERE recipient = '$p4'}),
	'marketing|user_preferences: stopped marketing messages', 'the recipient is suppressed for marketing');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1)});
wait_completed(5, 6);
is($node->safe_psql('postgres', qq{
	SELECT campaign_id, status, attempts, coalesce(last_error_class, '-') FROM wasend.send_queue
	 WHERE recipient = '$p4' ORDER BY 1}),
	"5|failed|0|suppressed\n6|sent|1|-",
	'its marketing row fails as suppressed, the utility row is sent');
is($node->safe_psql('postgres', q{
	SELECT campaign_id, count(*) FROM wasend.send_queue
	 WHERE campaign_id IN (5, 6) AND status = 'sent' GROUP BY 1 ORDER BY 1}),
	"5|3\n6|2", 'the other recipients were sent');
WasendTest::load_mock_log($node, $mock);
is(mock_seen($p4), '200:', 'the mock saw the recipient once');
is($node->safe_psql('postgres', qq{
	SELECT q.campaign_id FROM wasend.send_queue q JOIN mocklog m ON m.wamid = q.wa_message_id
	 WHERE q.recipient = '$p4'}),
	'6', 'that request is the utility campaign\'s row');

my $resume = WasendTest::webhook_body(WasendTest::wh_user_preferences(
	wa_id => $p4, value => 'resume', phone_number_id => $pnid, display_phone_number => "155500$pnid"));
is($node->safe_psql('postgres', qq{SELECT wasend._ingest_verified('$resume') ->> 'preferences_applied'}),
	'1', 'the resume webhook is applied');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM wasend.suppressions WHERE recipient = '$p4'}),
	'0', 'the marketing suppression is lifted');
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('m4', 1, $msg);
	SELECT wasend.wasend_enqueue(7, } . arr($p4) . q{);
	SELECT wasend.wasend_start_campaign(7);
});
wait_completed(7);
is($node->safe_psql('postgres', q{SELECT status, attempts FROM wasend.send_queue WHERE campaign_id = 7}),
	'sent|1', 'a new marketing campaign to the recipient sends');
WasendTest::load_mock_log($node, $mock);
is(mock_seen($p4), '200: 200:', 'the mock saw the recipient a second time');

# --- 4. frequency cap -------------------------------------------------------
my @r = range(7, 1, 10);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('w', 1, $msg);
	SELECT wasend.wasend_enqueue(8, } . arr(@r[0 .. 4]) . q{);
	SELECT wasend.wasend_start_campaign(8);
});
wait_completed(8);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('x', 1, $msg, frequency_cap => 1, frequency_window => '7 days');
	SELECT wasend.wasend_enqueue(9, } . arr(@r) . q{);
	SELECT wasend.wasend_start_campaign(9);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 5
	   AND count(*) FILTER (WHERE status = 'ready' AND waiting_for = 'frequency_cap') = 5
	  FROM wasend.send_queue WHERE campaign_id = 9})
  or die 'campaign 9 did not settle: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, coalesce(waiting_for, '-'), count(*), min(recipient), max(recipient),
	       count(*) FILTER (WHERE attempts = 0)
	  FROM wasend.send_queue WHERE campaign_id = 9 GROUP BY 1, 2 ORDER BY 1}),
	"ready|frequency_cap|5|$r[0]|$r[4]|5\nsent|-|5|$r[5]|$r[9]|0",
	'cap 1 per 7 days: the 5 recipients W reached wait, the 5 others are sent');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue x JOIN wasend.send_queue w
	    ON w.recipient = x.recipient AND w.campaign_id = 8 AND w.status = 'sent'
	 WHERE x.campaign_id = 9 AND x.status = 'ready'
	   AND x.next_attempt_at = w.sent_at + interval '7 days'}),
	'5', 'each waits until exactly 7 days after W\'s message to it');
like($node->safe_psql('postgres', q{
	SELECT status || ' / ' || waiting FROM wasend.campaign_progress WHERE campaign_id = 9}),
	qr{^running / frequency cap 1 per 7 days, next at \d{4}-\d\d-\d\d [0-9:.+]+ \(5 rows\)$},
	'campaign_progress says the rows wait for the frequency cap');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT string_agg(m.recipient || ':' || q.campaign_id, ' ' ORDER BY m.recipient)
	  FROM mocklog m JOIN wasend.send_queue q ON q.wa_message_id = m.wamid
	 WHERE m.recipient LIKE '1555267%'}),
	join(' ', (map { "$_:8" } @r[0 .. 4]), (map { "$_:9" } @r[5 .. 9])),
	'the mock saw R1..R5 once (from W) and R6..R10 once (from X)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE recipient LIKE '1555267%'}),
	'10', 'and nothing else for them');

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('u3', 1, $msg, category => 'utility', frequency_cap => 1);
	SELECT wasend.wasend_enqueue(10, } . arr($r[0]) . q{);
	SELECT wasend.wasend_start_campaign(10);
});
wait_completed(10);
is($node->safe_psql('postgres', q{
	SELECT status, attempts, waiting_for IS NULL FROM wasend.send_queue WHERE campaign_id = 10}),
	'sent|1|t', 'a utility campaign to R1 (even with a cap of 1) is not capped');
WasendTest::load_mock_log($node, $mock);
is(mock_seen($r[0]), '200: 200:', 'the mock saw R1 a second time');
is($node->safe_psql('postgres', q{
	SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 9 GROUP BY 1 ORDER BY 1}),
	"ready|5\nsent|5", 'X still waits for its 5 rows');

# --- 5. the cap counts the uncapped campaign claimed with it -------------
# W2 (campaign 11, no cap) and X2 (campaign 12, cap 1) to the same 20
# recipients; W2's rows have the lower ids; started together
my @s = range(8, 1, 20);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('w2', 1, $msg);
	SELECT wasend.wasend_create_campaign('x2', 1, $msg, frequency_cap => 1, frequency_window => '7 days');
	SELECT wasend.wasend_enqueue(11, } . arr(@s) . qq{);
	SELECT wasend.wasend_enqueue(12, } . arr(@s) . q{);
	BEGIN;
	SELECT wasend.wasend_start_campaign(11);
	SELECT wasend.wasend_start_campaign(12);
	COMMIT;
});
wait_completed(11);
# X2: every row sent, or waiting for the cap (or anything else, so that a
# wrong outcome is asserted below, not waited for)
$node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM wasend.send_queue
	 WHERE campaign_id = 12 AND status IN ('ready', 'sending') AND waiting_for IS NULL})
  or die 'campaign 12 did not settle: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 11 GROUP BY 1}),
	'sent|20', 'W2 (no cap) sends all 20');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT status, coalesce(waiting_for, '-'), count(*) FROM wasend.send_queue
	 WHERE campaign_id = 12 GROUP BY 1, 2 ORDER BY 1}),
	'ready|frequency_cap|20', 'X2 (cap 1) counts W2\'s messages: its 20 rows wait');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient) FROM mocklog WHERE recipient LIKE '1555268%'}),
	'20|20', 'the mock saw each of the 20 recipients once');

# --- in all -----------------------------------------------------------------
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM mocklog WHERE http_status = 200)
	       - (SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'),
	       (SELECT count(*) FROM mocklog WHERE http_status <> 200),
	       (SELECT count(*) FROM mocklog m JOIN wasend.send_queue q ON q.wa_message_id = m.wamid)}),
	'0|4|' . $node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}),
	'in all: one accepted request per sent row, 4 error answers (131049 x3, 131050)');

done_testing();
