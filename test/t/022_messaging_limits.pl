# 022_messaging_limits.pl — the messaging limit (tier) of a business
# portfolio: the senders read it from the Graph API and never start a
# message to a new unique recipient beyond it.
#
#   1. The tier is read when a number appears (the mock logs one GET per
#      number) and the number sends only once it is known.  400 recipients
#      on a TIER_250 number: exactly 250 sent (the first 250 rows), 150 stay
#      ready, waiting for the limit, with the reason in campaign_progress;
#      0 failed; the mock saw 250 messages.
#   2. 400 recipients on another TIER_250 portfolio, 100 of whom wrote in in
#      the last 24 h: 350 sent (those 100 cost nothing), 50 wait.
#   3. A second number of the first portfolio: recipients the portfolio
#      already messaged go out, new ones wait (the budget is shared).
#   4. A business_capability_update webhook makes the senders read every
#      number again (the mock logs a second GET for each); the tier is now
#      TIER_2K and the waiting rows go out at once.  A second webhook right
#      after does not read again within a minute.
#   5. An unknown tier from the API is refused: the number keeps its limit,
#      limits_error says why, the server log has the warning.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

# what the queue looks like, for a failure message
sub state_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s %s: %s rows (ids %s-%s, next %s)', campaign_id, status,
		                         coalesce(waiting_for, '-'), n, lo, hi, nxt), E'\n')
		  FROM (SELECT campaign_id, status, waiting_for, count(*) n, min(id) lo, max(id) hi,
		               min(next_attempt_at) nxt
		          FROM wasend.send_queue GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) s})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('portfolio %s: %s in window', portfolio, n), E'\n')
		  FROM (SELECT portfolio, count(*) n FROM wasend.recipient_window GROUP BY 1) w});
}

my $mock = WasendTest::start_mock({
	numbers => {
		'22001' => { token => 'tok-22001', rate => 200,
			account => { tier => 'TIER_250', display_phone_number => '15550022001' } },
		'22002' => { token => 'tok-22002', rate => 200,
			account => { tier => 'TIER_250', display_phone_number => '15550022002' } },
		'22003' => { token => 'tok-22003', rate => 200,
			account => { tier => 'TIER_250', display_phone_number => '15550022003' } },
	},
});
my $node = WasendTest::new_node('limits', $mock);

# recipients 1555220xxxxx: campaign $c gets 155522<c><nnnnn>
sub recipients
{
	my ($prefix, $from, $to) = @_;
	return 'ARRAY[' . join(',', map { sprintf("'%s%05d'", $prefix, $_) } $from .. $to) . ']';
}

my $msg = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('22001', 'tok-22001', 200, business_id => '7001');
	SELECT wasend.wasend_add_number('22002', 'tok-22002', 200, business_id => '7002');
});

# --- 1. the tier is read, the budget holds ------------------------------
$node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM wasend.whatsapp_numbers
	 WHERE messaging_tier = 'TIER_250' AND messaging_limit = 250
	   AND quality_rating = 'GREEN' AND can_send_message = 'AVAILABLE'
	   AND limits_checked_at IS NOT NULL AND limits_error IS NULL})
  or die 'the tiers were not read';
is($node->safe_psql('postgres', q{
	SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1}),
	"7001|250\n7002|250", 'each portfolio has the limit of its numbers');
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, display_phone_number,
	       limits_due_at > now() + interval '14 minutes' FROM wasend.whatsapp_numbers ORDER BY 1}),
	"22001|15550022001|t\n22002|15550022002|t",
	'the display number is stored; the next read is due in 15 minutes');

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('a', 1, $msg);
	SELECT wasend.wasend_enqueue(1, } . recipients('1555221', 1, 400) . q{);
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 250
	   AND count(*) FILTER (WHERE status = 'ready' AND waiting_for = 'messaging_limit') = 150
	  FROM wasend.send_queue WHERE campaign_id = 1})
  or die 'campaign 1 did not reach its budget: ' . state_of($node);
WasendTest::wait_quiet($node);
is($node->safe_psql('postgres', q{
	SELECT status, waiting_for, count(*),
	       bool_and(next_attempt_at > now() + interval '23 hours') FILTER (WHERE status = 'ready')
	  FROM wasend.send_queue WHERE campaign_id = 1 GROUP BY 1, 2 ORDER BY 1}),
	"ready|messaging_limit|150|t\n"
	  . "sent||250|",
	'TIER_250: 250 recipients sent, the other 150 wait about 24 h, none failed');
like($node->safe_psql('postgres', q{
	SELECT status || ' / ' || waiting FROM wasend.campaign_progress WHERE campaign_id = 1}),
	qr{^running / messaging limit 250/24h, next slot at \d{4}-\d\d-\d\d [0-9:.+]+ \(150 rows\)$},
	'campaign_progress says why the campaign waits and when the next slot frees');
is($node->safe_psql('postgres', q{
	SELECT portfolio, count(*) FROM wasend.recipient_window GROUP BY 1}),
	'7001|250', 'the window holds the 250 recipients started');

WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT m.recipient), count(*) FILTER (WHERE m.http_status = 200),
	       count(*) FILTER (WHERE q.status = 'sent' AND q.wa_message_id = m.wamid)
	  FROM mocklog m LEFT JOIN wasend.send_queue q ON q.campaign_id = 1 AND q.recipient = m.recipient
	 WHERE m.phone_number_id = '22001'}),
	'250|250|250|250',
	'the mock saw exactly the 250 sent messages, once each');
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, count(*), min(http_status) FROM mocklog_gets GROUP BY 1 ORDER BY 1}),
	"22001|1|200\n22002|1|200", 'each number was read once');

# --- 2. recipients who wrote in cost nothing -----------------------------
# the last 100 of campaign 2's recipients messaged number 22002 an hour ago
$node->safe_psql('postgres', q{
	INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body,
	                                     received_at, raw)
	SELECT 'wamid.in' || g, '155522200' || lpad(g::text, 3, '0'), '22002', 'text', 'hi',
	       now() - interval '1 hour', '{}'
	  FROM generate_series(301, 400) g;
	-- and one wrote 25 hours ago: that window is closed
	INSERT INTO wasend.inbound_messages (wa_message_id, from_number, phone_number_id, type, body,
	                                     received_at, raw)
	VALUES ('wamid.old', '155522200001', '22002', 'text', 'hi', now() - interval '25 hours', '{}');
});
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('b', 2, $msg);
	SELECT wasend.wasend_enqueue(2, } . recipients('1555222', 1, 400) . q{);
	SELECT wasend.wasend_start_campaign(2);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 350
	   AND count(*) FILTER (WHERE status = 'ready' AND waiting_for = 'messaging_limit') = 50
	  FROM wasend.send_queue WHERE campaign_id = 2})
  or die 'campaign 2 did not reach its budget: ' . state_of($node);
WasendTest::wait_quiet($node);
is($node->safe_psql('postgres', q{
	SELECT status, count(*), count(*) FILTER (WHERE recipient >= '155522200301')
	  FROM wasend.send_queue WHERE campaign_id = 2 GROUP BY 1 ORDER BY 1}),
	"ready|50|0\n"
	  . "sent|350|100",
	'250 new recipients and all 100 who wrote in sent; 50 new ones wait; none failed');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(*) FILTER (WHERE recipient >= '155522200301')
	  FROM wasend.recipient_window WHERE portfolio = '7002'}),
	'250|0', 'recipients inside a customer service window are not counted');

# --- 3. the budget is the portfolio's ------------------------------------
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_add_number('22003', 'tok-22003', 200, business_id => '7001');
});
$node->poll_query_until('postgres', q{
	SELECT messaging_limit = 250 FROM wasend.whatsapp_numbers WHERE phone_number_id = '22003'})
  or die 'number 22003 was not read';
# 10 recipients campaign 1 reached, 5 new ones
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('c', 3, $msg);
	SELECT wasend.wasend_enqueue(3, (SELECT array_agg(recipient) FROM (
	    SELECT recipient FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'
	     ORDER BY id LIMIT 10) x));
	SELECT wasend.wasend_enqueue(3, } . recipients('1555223', 1, 5) . q{);
	SELECT wasend.wasend_start_campaign(3);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 10
	   AND count(*) FILTER (WHERE status = 'ready' AND waiting_for = 'messaging_limit') = 5
	  FROM wasend.send_queue WHERE campaign_id = 3})
  or die 'campaign 3 did not settle: ' . state_of($node);
is($node->safe_psql('postgres', q{
	SELECT status, count(*), min(recipient), max(recipient)
	  FROM wasend.send_queue WHERE campaign_id = 3 GROUP BY 1 ORDER BY 1}),
	"ready|5|155522300001|155522300005\nsent|10|" . $node->safe_psql('postgres', q{
		SELECT min(recipient) || '|' || max(recipient) FROM (
		    SELECT recipient FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'
		     ORDER BY id LIMIT 10) x}),
	'another number of the portfolio: recipients already messaged go out, new ones wait');

# --- 4. a webhook makes the senders read the tier again -------------------
WasendTest::mock_account($mock, $_, tier => 'TIER_2K') for qw(22001 22003);
# the numbers were read more than a minute ago (a webhook reads again at
# most once a minute per number)
$node->safe_psql('postgres', q{
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = limits_checked_at - interval '2 minutes';
	SELECT wasend._ingest_verified('}
	  . WasendTest::webhook_body(WasendTest::wh_capability_update(max_daily_conversations_per_business => 2000))
	  . q{');
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') = 415 FROM wasend.send_queue
	 WHERE campaign_id IN (1, 3)})
  or die 'the waiting rows did not go out after the tier rose: ' . state_of($node);
WasendTest::wait_quiet($node);
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, messaging_tier, messaging_limit FROM wasend.whatsapp_numbers ORDER BY 1}),
	"22001|TIER_2K|2000\n22002|TIER_250|250\n22003|TIER_2K|2000",
	'the tiers were read again');
is($node->safe_psql('postgres', q{
	SELECT campaign_id, status, count(*) FROM wasend.send_queue GROUP BY 1, 2 ORDER BY 1, 2}),
	"1|sent|400\n2|ready|50\n2|sent|350\n3|sent|15",
	'portfolio 7001 (now 2,000) sent its waiting rows; portfolio 7002 still waits');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, count(*) FROM mocklog_gets GROUP BY 1 ORDER BY 1}),
	"22001|2\n22002|2\n22003|2", 'the webhook made every number be read once more');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT (phone_number_id, recipient)) FROM mocklog}),
	'765|765', 'the mock saw 765 messages, no recipient twice on a number');

# a second webhook right after: no new read within the minute
$node->safe_psql('postgres', q{SELECT wasend._ingest_verified('}
	  . WasendTest::webhook_body(WasendTest::wh_capability_update(max_daily_conversations_per_business => 2000))
	  . q{')});
is($node->safe_psql('postgres', q{
	SELECT bool_and(limits_due_at >= limits_checked_at + interval '1 minute') FROM wasend.whatsapp_numbers}),
	't', 'a second webhook within a minute does not read again before the minute is up');

# --- 5. an unknown tier is refused ---------------------------------------
WasendTest::mock_account($mock, '22002', tier => 'TIER_5K');
$node->safe_psql('postgres', q{
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = limits_checked_at - interval '2 minutes',
	       limits_due_at = now() WHERE phone_number_id = '22002'});
$node->poll_query_until('postgres', q{
	SELECT limits_error IS NOT NULL FROM wasend.whatsapp_numbers WHERE phone_number_id = '22002'})
  or die 'the unknown tier was not noted';
is($node->safe_psql('postgres', q{
	SELECT messaging_tier, messaging_limit, limits_error FROM wasend.whatsapp_numbers
	 WHERE phone_number_id = '22002'}),
	'TIER_250|250|unknown messaging limit tier "TIER_5K"',
	'an unknown tier keeps the old limit and says why');
ok($node->log_contains(qr/WARNING:.*storing a number's messaging limit skipped: unknown messaging limit tier "TIER_5K"/),
	'the server log has the warning');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'ready') FROM wasend.send_queue WHERE campaign_id = 2}),
	'50', 'its waiting rows still wait');

done_testing();
