# 034_webhook_statuses.pl — status webhooks with real senders: hostile
# timestamps cannot stop the claims, and a status that comes before its
# wamid is recorded is applied when it is.
#
#   1. Two marketing messages are held by Meta (held_quality), so their
#      rows have no sent_at.  A signed payload then says one of them was
#      sent at "9224318012399" (year 294,275) and the other at
#      "Infinity", and delivers a third row.  The third row is delivered;
#      the timestamps cannot reach the frequency cap: a capped marketing
#      campaign to the two recipients and five others sends the five, and
#      the two wait a finite 7 days (the huge time is clamped to now, the
#      Infinity status is refused and the held row counts from its claim).
#   2. A status whose wamid is not recorded yet waits in
#      wasend.pending_statuses and is applied when the send is recorded,
#      in both orders: (a) the status committed long before the answer is
#      recorded (the record finds it), (b) the status's transaction is
#      still open while the answer is recorded and commits after (the
#      senders' refresh finds it).  The mock holds each answer, with a
#      wamid the test knows, until the status is in.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $pnid = '32001';
my $r_huge = '155532100001';	# held, then "sent" at 9224318012399
my $r_inf = '155532100002';	# held, then "sent" at Infinity
my $r_ok = '155532100003';	# sent, then delivered
my $r_a = '155532300001';	# status before the answer, committed
my $r_b = '155532300002';	# status in a transaction open across the record

my $mock = WasendTest::start_mock({
	numbers => { $pnid => { token => "tok-$pnid", rate => 100,
		account => { tier => 'TIER_UNLIMITED', display_phone_number => "155500$pnid" } } },
	rules => [
		{ to => "^$r_huge\$", action => 'held_quality', times => 1 },
		{ to => "^$r_inf\$", action => 'held_quality', times => 1 },
		{ to => "^$r_a\$", action => 'hold', wamid => 'wamid.test-a' },
		{ to => "^$r_b\$", action => 'hold', wamid => 'wamid.test-b' },
	],
});
# the mock holds answers while the test works: no request timeout meanwhile
my $node = WasendTest::new_node('statuses', $mock, 'wasend.request_timeout_ms' => 300000);

sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s: %s %s', id, status, coalesce(pause_reason, '')), E'\n' ORDER BY id)
		  FROM wasend.campaigns})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('row %s campaign %s %s: %s wamid %s sent %s next %s %s', id, campaign_id,
		                         recipient, status, wa_message_id, sent_at, next_attempt_at,
		                         coalesce(waiting_for, '-')), E'\n' ORDER BY id)
		  FROM wasend.send_queue})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('pending %s %s %s', wa_message_id, status, received_at), E'\n')
		  FROM wasend.pending_statuses});
}

sub ingest
{
	my (@changes) = @_;
	return $node->safe_psql('postgres',
		q{SELECT wasend._ingest_verified('} . WasendTest::webhook_body(@changes) . q{')});
}

my $msg = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok-$pnid', 50);
});

# --- 1. hostile timestamps ---------------------------------------------------
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('held', 1, $msg, pacing => 'off');
	SELECT wasend.wasend_enqueue(1, ARRAY['$r_huge', '$r_inf', '$r_ok']);
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1})
  or die 'campaign 1 did not complete: ' . state_of();
my %w = split /[|\n]/, $node->safe_psql('postgres', q{
	SELECT recipient, wa_message_id FROM wasend.send_queue WHERE campaign_id = 1});
is($node->safe_psql('postgres', q{
	SELECT string_agg(status || ':' || (sent_at IS NULL), ',' ORDER BY recipient)
	  FROM wasend.send_queue WHERE campaign_id = 1}),
	'held:true,held:true,sent:false', 'two rows held by Meta (no sent_at), one sent');

my $answer = ingest(WasendTest::wh_status(statuses => [
	{ id => $w{$r_huge}, status => 'sent', recipient_id => $r_huge, timestamp => '9224318012399' },
	{ id => $w{$r_inf}, status => 'sent', recipient_id => $r_inf, timestamp => 'Infinity' },
	{ id => $w{$r_ok}, status => 'delivered', recipient_id => $r_ok } ]));
note("ingest: $answer");
is($node->safe_psql('postgres', qq{
	SELECT status FROM wasend.send_queue WHERE recipient = '$r_ok'}),
	'delivered', 'the ordinary status of the payload is applied');
is($node->safe_psql('postgres', qq{
	SELECT status || '|' || (sent_at BETWEEN now() - interval '10 minutes' AND now())
	  FROM wasend.send_queue WHERE recipient = '$r_huge'}),
	'sent|true', 'a sent status in the year 294,275 settles its held row, sent now (clamped)');
is($node->safe_psql('postgres', qq{
	SELECT status || '|' || (sent_at IS NULL) FROM wasend.send_queue WHERE recipient = '$r_inf'}),
	'held|true', 'a sent status at Infinity is refused: its row stays held, without a sent_at');

# campaign 2: marketing, 1 message per recipient per 7 days
my @fresh = map { sprintf('15553220%04d', $_) } 1 .. 5;
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('capped', 1, $msg, frequency_cap => 1,
	                                     frequency_window => '7 days');
	SELECT wasend.wasend_enqueue(2, ARRAY['$r_huge', '$r_inf', '} . join("', '", @fresh) . q{']);
	SELECT wasend.wasend_start_campaign(2);
});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'sent') = 5
		   AND count(*) FILTER (WHERE waiting_for = 'frequency_cap') = 2
		  FROM wasend.send_queue WHERE campaign_id = 2}),
	'the capped campaign sends the five other recipients; the two wait for the cap')
  or diag(state_of());
is($node->safe_psql('postgres', q{
	SELECT string_agg(recipient || ':' || status || ':'
	                  || (next_attempt_at BETWEEN now() + interval '6 days 23 hours'
	                                          AND now() + interval '7 days 1 minute'),
	                  ',' ORDER BY recipient)
	  FROM wasend.send_queue WHERE campaign_id = 2 AND waiting_for IS NOT NULL}),
	"$r_huge:ready:true,$r_inf:ready:true",
	'both wait 7 days from their message, not until the end of time');
unlike(slurp_file($node->logfile), qr/claiming rows skipped|database cycle failed/,
	'no claim and no database cycle of a sender failed');

# --- 2. a status before its wamid is recorded ----------------------------------
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('pending-a', 1, '{"type":"text","text":{"body":"a"}}');
	SELECT wasend.wasend_enqueue(3, ARRAY['$r_a']);
	SELECT wasend.wasend_start_campaign(3);
});
sub wait_held
{
	for (1 .. 1800)
	{
		return 1 if WasendTest::mock_get($mock, '/__mock/held') =~ /"held":1/;
		usleep(100_000);
	}
	return 0;
}
ok(wait_held(), 'order a: the mock holds the answer, the row is sending') or diag(state_of());
like(ingest(WasendTest::wh_status(id => 'wamid.test-a', status => 'delivered', recipient_id => $r_a)),
	qr/"statuses_pending": 1/, 'order a: the status for the unrecorded wamid waits');
# the senders' refresh has looked at it and let it be: only the record can find it now
ok( $node->poll_query_until('postgres', q{
		SELECT bool_and(settled) FROM wasend.pending_statuses WHERE wa_message_id = 'wamid.test-a'}),
	'order a: the senders\' refresh has checked the waiting status') or diag(state_of());
WasendTest::mock_post($mock, '/__mock/release');
ok( $node->poll_query_until('postgres', qq{
		SELECT status = 'delivered' AND wa_message_id = 'wamid.test-a' AND delivered_at IS NOT NULL
		  FROM wasend.send_queue WHERE recipient = '$r_a'}),
	'order a: recorded later, the row is delivered') or diag(state_of());
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.pending_statuses WHERE wa_message_id = 'wamid.test-a'}),
	'0', 'order a: the waiting status is gone');

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('pending-b', 1, '{"type":"text","text":{"body":"b"}}');
	SELECT wasend.wasend_enqueue(4, ARRAY['$r_b']);
	SELECT wasend.wasend_start_campaign(4);
});
ok(wait_held(), 'order b: the mock holds the answer, the row is sending') or diag(state_of());
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
like($bg->query_safe(q{SELECT wasend._ingest_verified('}
		. WasendTest::webhook_body(WasendTest::wh_status(id => 'wamid.test-b', status => 'read',
			recipient_id => $r_b)) . q{')}),
	qr/"statuses_pending": 1/, 'order b: the status is kept aside, its transaction still open');
WasendTest::mock_post($mock, '/__mock/release');
ok( $node->poll_query_until('postgres', qq{
		SELECT status = 'sent' AND wa_message_id = 'wamid.test-b'
		  FROM wasend.send_queue WHERE recipient = '$r_b'}),
	'order b: the answer is recorded (sent) while the status is uncommitted') or diag(state_of());
$bg->query_safe('COMMIT');
$bg->quit;
ok( $node->poll_query_until('postgres', qq{
		SELECT status = 'read' AND read_at IS NOT NULL FROM wasend.send_queue WHERE recipient = '$r_b'}),
	'order b: committed after the record, the status is applied by the refresh') or diag(state_of());
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.pending_statuses}),
	'0', 'no status waits any more');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
