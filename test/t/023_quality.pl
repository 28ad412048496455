# 023_quality.pl — quality rating and number health pause what they must,
# with real senders against the mock Graph API.
#
# Three numbers (TIER_10K, GREEN, AVAILABLE), each sending at 20 messages a
# second with 40 ms of mock latency, so that campaigns are still running
# when the account state changes.  Only states are asserted, never timing:
# each change is made once every campaign concerned has sent and still has
# rows left (it cannot go faster than its rate).
#
#   1. Number A, three campaigns: marketing (the default for a template),
#      utility, and marketing with pause_on_quality => false.  The mock's
#      quality turns RED and A is read again: the marketing campaign is
#      paused (pause_rule 'quality', the reason in the campaign and in
#      campaign_progress) with rows left; the other two keep running and
#      complete.  Exact account: every request the mock saw for the paused
#      campaign is a sent row of it with the same wamid and every sent or
#      failed row was seen by the mock, so nothing of it went out after the
#      pause beyond what was in flight; the other two: each recipient once.
#   2. Number B: a phone_number_quality_update webhook (DOWNGRADE to
#      TIER_2K, B's display number) pauses B's running marketing campaign in
#      the webhook's own transaction (reason: the tier change) and sets B's
#      tier to TIER_2K / 2000 from the webhook itself; B is read again once
#      the minute since its last read is up (a second GET in the mock log,
#      at least 60 s after the first).  Exact account as in 1; resumed by
#      the user, the campaign completes, each recipient once.
#   3. Number C: can_send_message BLOCKED, read again: C is paused
#      (pause_rule 'health', its reason, also in campaign_progress of its
#      campaign), its campaign stops sending (exact account as in 1, and
#      still so later); AVAILABLE and read again: C is active, the rule and
#      reason cleared, and its campaign completes, every recipient exactly
#      once in the mock log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my %pnid = (A => '23001', B => '23002', C => '23003');

my $mock = WasendTest::start_mock({
	latency_ms => 40,
	jitter_ms => 20,
	numbers => {
		map {
			($pnid{$_} => { token => "tok-$pnid{$_}", rate => 200,
				account => { tier => 'TIER_10K', quality_rating => 'GREEN',
					can_send_message => 'AVAILABLE',
					display_phone_number => "155500$pnid{$_}" } })
		} keys %pnid
	},
});
my $node = WasendTest::new_node('quality', $mock);

# what the campaigns, numbers and queue look like, for a failure message
sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s (%s, number %s): %s %s %s', id, category, number_id,
		                         status, coalesce(pause_rule, '-'), coalesce(pause_reason, '-')),
		                  E'\n' ORDER BY id) FROM wasend.campaigns})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('number %s: %s %s %s; %s %s %s, checked %s, due %s, error %s',
		                         phone_number_id, status, coalesce(pause_rule, '-'),
		                         coalesce(pause_reason, '-'), messaging_tier, quality_rating,
		                         can_send_message, limits_checked_at, limits_due_at,
		                         coalesce(limits_error, '-')), E'\n' ORDER BY id)
		  FROM wasend.whatsapp_numbers})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s: %s rows', campaign_id, status, n), E'\n')
		  FROM (SELECT campaign_id, status, count(*) n FROM wasend.send_queue
		         GROUP BY 1, 2 ORDER BY 1, 2) s});
}

# recipients of campaign $c: 155523<c><nnnnn>
sub recipients
{
	my ($c, $n) = @_;
	return 'ARRAY[' . join(',', map { sprintf("'155523%d%05d'", $c, $_) } 1 .. $n) . ']';
}

my $msg = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

# poll until each of the campaigns has sent at least 5 rows (all running)
sub wait_sending
{
	my (@c) = @_;
	my $list = join(',', @c);
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = } . scalar(@c) . qq{ FROM (
		  SELECT campaign_id FROM wasend.send_queue
		   WHERE campaign_id IN ($list) AND status = 'sent'
		   GROUP BY 1 HAVING count(*) >= 5) s})
	  or die "campaigns $list did not start sending: " . state_of();
}

# the mock log (loaded) against a campaign's rows: requests the mock saw
# for its recipients, rows sent or failed, and the requests without such a
# row (same recipient, same wamid) plus the rows without such a request
sub mock_vs_rows
{
	my ($c, $pnid) = @_;
	my ($m, $r, $bad) = split /\|/, $node->safe_psql('postgres', qq{
		WITH m AS (SELECT recipient, nullif(wamid, '') AS wamid FROM mocklog
		            WHERE phone_number_id = '$pnid'
		              AND recipient IN (SELECT recipient FROM wasend.send_queue WHERE campaign_id = $c)),
		     r AS (SELECT recipient, wa_message_id FROM wasend.send_queue
		            WHERE campaign_id = $c AND status IN ('sent', 'failed'))
		SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM r),
		       (SELECT count(*) FROM m FULL JOIN r
		            ON r.recipient = m.recipient AND r.wa_message_id IS NOT DISTINCT FROM m.wamid
		         WHERE m.recipient IS NULL OR r.recipient IS NULL)});
	return ($m, $r, $bad);
}

# per campaign: rows, sent rows, sent rows with attempts 1, and in the
# mock: requests, distinct recipients, 200 answers whose wamid is the row's
sub all_once
{
	my ($c, $pnid) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*), count(*) FILTER (WHERE q.status = 'sent'),
		       count(*) FILTER (WHERE q.status = 'sent' AND q.attempts = 1),
		       (SELECT count(*) FROM mocklog m WHERE m.phone_number_id = '$pnid'
		           AND m.recipient IN (SELECT recipient FROM wasend.send_queue WHERE campaign_id = $c)),
		       (SELECT count(DISTINCT m.recipient) FROM mocklog m WHERE m.phone_number_id = '$pnid'
		           AND m.recipient IN (SELECT recipient FROM wasend.send_queue WHERE campaign_id = $c)),
		       count(*) FILTER (WHERE m.http_status = 200)
		  FROM wasend.send_queue q
		  LEFT JOIN mocklog m ON m.phone_number_id = '$pnid' AND m.recipient = q.recipient
		                     AND m.wamid = q.wa_message_id
		 WHERE q.campaign_id = $c});
}

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid{A}', 'tok-$pnid{A}', 20);
	SELECT wasend.wasend_add_number('$pnid{B}', 'tok-$pnid{B}', 20);
	SELECT wasend.wasend_add_number('$pnid{C}', 'tok-$pnid{C}', 20);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM wasend.whatsapp_numbers
	 WHERE messaging_tier = 'TIER_10K' AND messaging_limit = 10000
	   AND quality_rating = 'GREEN' AND can_send_message = 'AVAILABLE'
	   AND display_phone_number = '155500' || phone_number_id AND limits_error IS NULL})
  or die 'the numbers were not read: ' . state_of();

# --- 1. quality RED pauses the marketing campaigns that follow it --------
# campaign 1 marketing (600 rows: it must not finish first), 2 utility,
# 3 marketing without pause_on_quality
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('marketing', 1, $msg);
	SELECT wasend.wasend_create_campaign('utility', 1, $msg, category => 'utility');
	SELECT wasend.wasend_create_campaign('marketing, no quality pause', 1, $msg, pause_on_quality => false);
	SELECT wasend.wasend_enqueue(1, } . recipients(1, 600) . qq{);
	SELECT wasend.wasend_enqueue(2, } . recipients(2, 300) . qq{);
	SELECT wasend.wasend_enqueue(3, } . recipients(3, 300) . q{);
	BEGIN;
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_start_campaign(2);
	SELECT wasend.wasend_start_campaign(3);
	COMMIT;
});
is($node->safe_psql('postgres', q{
	SELECT id, category, pause_on_quality FROM wasend.campaigns ORDER BY id}),
	"1|marketing|t\n2|utility|t\n3|marketing|f",
	'a template campaign is marketing by default; the options are stored');
wait_sending(1, 2, 3);

WasendTest::mock_account($mock, $pnid{A}, quality_rating => 'RED');
# a read is due at most once a minute after the last one
$node->safe_psql('postgres', qq{
	UPDATE wasend.whatsapp_numbers
	   SET limits_checked_at = limits_checked_at - interval '2 minutes', limits_due_at = now()
	 WHERE phone_number_id = '$pnid{A}'});
$node->poll_query_until('postgres', q{SELECT status = 'paused' FROM wasend.campaigns WHERE id = 1})
  or die 'the marketing campaign was not paused: ' . state_of();

is($node->safe_psql('postgres', q{
	SELECT status, pause_rule, pause_reason, paused_at IS NOT NULL FROM wasend.campaigns WHERE id = 1}),
	"paused|quality|quality: quality rating of number $pnid{A} is RED|t",
	'RED quality: the marketing campaign is paused by the quality rule, saying why');
is($node->safe_psql('postgres', q{
	SELECT status, pause_reason FROM wasend.campaign_progress WHERE campaign_id = 1}),
	"paused|quality: quality rating of number $pnid{A} is RED",
	'campaign_progress shows the reason');
is($node->safe_psql('postgres', q{
	SELECT quality_rating, status, pause_rule FROM wasend.whatsapp_numbers WHERE id = 1}),
	'RED|active|', 'the number stores RED and stays active');
is($node->safe_psql('postgres', q{
	SELECT id, status <> 'paused', pause_rule IS NULL, pause_reason IS NULL
	  FROM wasend.campaigns WHERE id IN (2, 3) ORDER BY id}),
	"2|t|t|t\n3|t|t|t", 'the utility campaign and the one without pause_on_quality are not paused');
ok($node->log_contains(
		qr/LOG:  wasend paused 1 marketing campaign\(s\) of number 1: quality rating of number $pnid{A} is RED/),
	'the server log says what was paused');

$node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM wasend.campaigns WHERE id IN (2, 3) AND status = 'completed'})
  or die 'campaigns 2 and 3 did not complete: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT id, status FROM wasend.campaigns WHERE id <= 3 ORDER BY id}),
	"1|paused\n2|completed\n3|completed", 'the other two kept running and completed');

WasendTest::load_mock_log($node, $mock);
{
	my ($m, $r, $bad) = mock_vs_rows(1, $pnid{A});
	is($m, $r, "campaign 1: the mock saw as many requests ($m) as it has rows sent or failed");
	is($bad, 0, 'campaign 1: each request is a row sent or failed with its wamid, and each such row a request');
	is($node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'sent') = } . $r . q{,
		       count(*) FILTER (WHERE status = 'ready') = 600 - } . $r . q{,
		       count(*) FILTER (WHERE status NOT IN ('sent', 'ready'))
		  FROM wasend.send_queue WHERE campaign_id = 1}),
		't|t|0', 'campaign 1: the rest of its rows wait, ready (none sending, none failed)');
	cmp_ok($r, '<', 600, 'campaign 1 was paused before it had sent everything');
}
is(all_once(2, $pnid{A}), '300|300|300|300|300|300',
	'campaign 2 (utility): every recipient sent once, attempt 1, the mock saw each once');
is(all_once(3, $pnid{A}), '300|300|300|300|300|300',
	'campaign 3 (no quality pause): every recipient sent once, attempt 1, the mock saw each once');

# --- 2. a phone_number_quality_update lowering the tier -------------------
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('b marketing', 2, $msg);
	SELECT wasend.wasend_enqueue(4, } . recipients(4, 300) . q{);
	SELECT wasend.wasend_start_campaign(4);
});
wait_sending(4);
# Meta now says TIER_2K too, when asked
WasendTest::mock_account($mock, $pnid{B}, tier => 'TIER_2K');
my $first_b_read = $node->safe_psql('postgres',
	qq{SELECT limits_checked_at FROM wasend.whatsapp_numbers WHERE phone_number_id = '$pnid{B}'});
# in one transaction: what the webhook itself did, before any sender can
# read the number again
my $wh = WasendTest::webhook_body(WasendTest::wh_quality_update(
	display_phone_number => "155500$pnid{B}", event => 'DOWNGRADE',
	current_limit => 'TIER_2K', old_limit => 'TIER_10K'));
my @out = split /\n/, $node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend._ingest_verified('$wh') ->> 'campaigns_changed';
	SELECT status || '|' || pause_rule || '|' || pause_reason FROM wasend.campaigns WHERE id = 4;
	SELECT pause_reason FROM wasend.campaign_progress WHERE campaign_id = 4;
	SELECT messaging_tier || '|' || messaging_limit || '|' || status
	       || '|' || (limits_checked_at = '$first_b_read')
	       || '|' || (limits_due_at <= limits_checked_at + interval '1 minute')
	  FROM wasend.whatsapp_numbers WHERE id = 2;
	SELECT messaging_limit FROM wasend.portfolios WHERE portfolio = 'number:2';
	SELECT now();
	COMMIT;
});
my $wh_reason = "quality: messaging limit of number $pnid{B} lowered from TIER_10K to TIER_2K "
  . '(phone_number_quality_update DOWNGRADE)';
is($out[0], '1', 'the webhook changed one campaign');
is($out[1], "paused|quality|$wh_reason",
	'the webhook paused B\'s running marketing campaign at once, saying the tier was lowered');
is($out[2], $wh_reason, 'campaign_progress shows the reason');
is($out[3], 'TIER_2K|2000|active|true|true',
	'the webhook itself set TIER_2K / 2000 (B not read yet) and made a read due within the minute');
is($out[4], '2000', 'the portfolio\'s limit follows');
my $wh_at = $out[5];

$node->poll_query_until('postgres', qq{
	SELECT limits_checked_at > '$wh_at' FROM wasend.whatsapp_numbers WHERE phone_number_id = '$pnid{B}'})
  or die 'B was not read again: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', qq{
	SELECT count(*), count(*) FILTER (WHERE http_status = 200),
	       max(t_ms) > extract(epoch FROM timestamptz '$wh_at') * 1000,
	       max(t_ms) - min(t_ms) >= 59990
	  FROM mocklog_gets WHERE phone_number_id = '$pnid{B}'}),
	'2|2|t|t', 'B was read a second time, after the webhook, not within a minute of the first read');
is($node->safe_psql('postgres', q{
	SELECT messaging_tier, messaging_limit, limits_error IS NULL FROM wasend.whatsapp_numbers WHERE id = 2}),
	'TIER_2K|2000|t', 'the read confirms the tier');
is($node->safe_psql('postgres', q{SELECT status, pause_rule FROM wasend.campaigns WHERE id = 4}),
	'paused|quality', 'the read does not resume the campaign');
{
	my ($m, $r, $bad) = mock_vs_rows(4, $pnid{B});
	is($m, $r, "campaign 4: the mock saw as many requests ($m) as it has rows sent or failed");
	is($bad, 0, 'campaign 4: each request is a row sent or failed with its wamid, and each such row a request');
	cmp_ok($r, '<', 300, 'campaign 4 was paused before it had sent everything');
}
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_campaign(4)});
is($node->safe_psql('postgres', q{SELECT status, pause_rule, pause_reason FROM wasend.campaigns WHERE id = 4}),
	'running||', 'resumed by the user: the rule and reason are cleared');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4})
  or die 'campaign 4 did not complete: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is(all_once(4, $pnid{B}), '300|300|300|300|300|300',
	'campaign 4 completed: every recipient sent once, attempt 1, the mock saw each once');

# --- 3. health: BLOCKED pauses the number, AVAILABLE resumes it -----------
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('c marketing', 3, $msg);
	SELECT wasend.wasend_enqueue(5, } . recipients(5, 400) . q{);
	SELECT wasend.wasend_start_campaign(5);
});
wait_sending(5);
WasendTest::mock_account($mock, $pnid{C}, can_send_message => 'BLOCKED');
$node->safe_psql('postgres', qq{
	UPDATE wasend.whatsapp_numbers
	   SET limits_checked_at = limits_checked_at - interval '2 minutes', limits_due_at = now()
	 WHERE phone_number_id = '$pnid{C}'});
$node->poll_query_until('postgres', qq{
	SELECT status = 'paused' FROM wasend.whatsapp_numbers WHERE phone_number_id = '$pnid{C}'})
  or die 'number C was not paused: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, pause_rule, pause_reason, paused_until IS NULL, can_send_message
	  FROM wasend.whatsapp_numbers WHERE id = 3}),
	'paused|health|health: health_status.can_send_message is BLOCKED|t|BLOCKED',
	'BLOCKED: the number is paused by the health rule, until a read says otherwise');
is($node->safe_psql('postgres', q{
	SELECT c.status, c.pause_rule IS NULL, p.pause_reason
	  FROM wasend.campaigns c JOIN wasend.campaign_progress p ON p.campaign_id = c.id WHERE c.id = 5}),
	'running|t|number paused: health: health_status.can_send_message is BLOCKED',
	'its campaign stays running; campaign_progress says the number is paused and why');
ok($node->log_contains(qr/LOG:  wasend paused number $pnid{C}: health_status.can_send_message is BLOCKED/),
	'the server log says the number was paused');
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
WasendTest::load_mock_log($node, $mock);
my $c_sent;
{
	my ($m, $r, $bad) = mock_vs_rows(5, $pnid{C});
	is($m, $r, "campaign 5: the mock saw as many requests ($m) as it has rows sent or failed");
	is($bad, 0, 'campaign 5: each request is a row sent or failed with its wamid, and each such row a request');
	cmp_ok($r, '<', 400, 'the number was paused before its campaign had sent everything');
	$c_sent = $r;
}
# a read while still BLOCKED keeps it paused
$node->safe_psql('postgres', qq{
	UPDATE wasend.whatsapp_numbers
	   SET limits_checked_at = limits_checked_at - interval '2 minutes', limits_due_at = now()
	 WHERE phone_number_id = '$pnid{C}'});
my $blocked_read = $node->safe_psql('postgres', q{SELECT now()});
$node->poll_query_until('postgres', qq{
	SELECT limits_checked_at > '$blocked_read' FROM wasend.whatsapp_numbers WHERE id = 3})
  or die 'number C was not read again: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, pause_rule FROM wasend.whatsapp_numbers WHERE id = 3}),
	'paused|health', 'read again while BLOCKED: still paused');
WasendTest::load_mock_log($node, $mock);
{
	my ($m, $r, $bad) = mock_vs_rows(5, $pnid{C});
	is("$m|$r|$bad", "$c_sent|$c_sent|0", 'and nothing more of campaign 5 went out meanwhile');
}

WasendTest::mock_account($mock, $pnid{C}, can_send_message => 'AVAILABLE');
$node->safe_psql('postgres', qq{
	UPDATE wasend.whatsapp_numbers
	   SET limits_checked_at = limits_checked_at - interval '2 minutes', limits_due_at = now()
	 WHERE phone_number_id = '$pnid{C}'});
$node->poll_query_until('postgres', qq{
	SELECT status = 'active' FROM wasend.whatsapp_numbers WHERE phone_number_id = '$pnid{C}'})
  or die 'number C did not resume: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, pause_rule IS NULL, pause_reason IS NULL, can_send_message
	  FROM wasend.whatsapp_numbers WHERE id = 3}),
	'active|t|t|AVAILABLE', 'AVAILABLE again: the number is active, the rule and reason cleared');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 5})
  or die 'campaign 5 did not complete: ' . state_of();
WasendTest::wait_quiet($node) or die 'the senders did not settle: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is(all_once(5, $pnid{C}), '400|400|400|400|400|400',
	'campaign 5 completed: every recipient sent once, attempt 1, the mock saw each exactly once');

# --- in all -----------------------------------------------------------------
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM wasend.send_queue WHERE status = 'sent') - count(*),
	       count(*) - count(DISTINCT (phone_number_id, recipient)),
	       count(*) FILTER (WHERE http_status <> 200) FROM mocklog}),
	'0|0|0', 'in all, one accepted request per sent row, no recipient twice, no error');

done_testing();
