# 042_bsuid.pl — users who hide their phone number: business-scoped user
# IDs (BSUIDs) through webhooks, rules and sends, with Meta's own example
# payloads (test/fixtures/meta/, placeholders replaced).  Meta's example
# user: BSUID US.13491208655302741918 (parent US.ENT.11815799212886844830),
# phone 16505551234; after a number change BSUID US.24817305912873645029,
# phone 12195555358.
#
#   1. A STOP from a user with a username and no phone number (Meta's
#      example, text changed to STOP), posted to the endpoint: stored under
#      the BSUID, the BSUID suppressed.  Once a message names the user both
#      ways, their phone number is suppressed too: enqueue skips it,
#      wasend_send refuses it, and a row queued before the pair was known
#      fails "suppressed" at its claim; the mock never sees it.
#   2. A campaign to a mix of phone numbers, BSUIDs and a parent BSUID: all
#      sent, each once, a BSUID in "recipient", never both fields.
#      Statuses naming the recipient by BSUID only (Meta's example) are
#      applied by wamid and keep the BSUID on the row; a status naming
#      both pairs them.
#   3. A user_preferences stop with only a user_id (through
#      wasend_ingest_webhook): a marketing campaign to the paired phone
#      number skips it, a utility one sends.  The frequency cap counts a
#      marketing message sent by phone number against the BSUID.
#   4. A user_id_update and a user_changed_user_id system message: the new
#      BSUIDs and the new phone number inherit the STOP; the old phone
#      number, no longer the user's, is free again.
#   5. The messaging limit counts a person once: a TIER_250 portfolio
#      whose 250 slots are taken sends to the BSUID of a person it reached
#      by phone, and a new phone number waits.
#   6. Two transactions pairing names of one person at the same moment
#      take turns, and the person is whole after both.
use strict;
use warnings;

use Cwd;
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $pnid = '42001';
my $b1 = 'US.13491208655302741918';
my $parent = 'US.ENT.11815799212886844830';
my $p1 = '16505551234';
my $b1new = 'US.24817305912873645029';
my $p1new = '12195555358';

my $secret = 'bsuid-secret-' . int(rand(1e9));
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
sysopen(my $fh, "$sdir/app_secret", O_WRONLY | O_CREAT | O_TRUNC, 0600) or die $!;
print $fh "$secret\n";
close $fh;

my $mock = WasendTest::start_mock({
	numbers => { $pnid => { token => "tok-$pnid", rate => 200,
		account => { tier => 'TIER_250', display_phone_number => "155500$pnid" } } },
});
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('bsuid', $mock,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_port' => $port);
my $url = "http://127.0.0.1:$port/webhook";

# Meta's example payload $name, with our number and the replacements
# given (old => new pairs, made in this order)
sub fixture
{
	my ($name, @replace) = @_;
	my $text = slurp_file("$ENV{WASEND_ROOT}/test/fixtures/meta/$name.json");
	$text =~ s/106540352242922/$pnid/g;
	while (my ($k, $v) = splice(@replace, 0, 2))
	{
		$text =~ s/\Q$k\E/$v/g;
	}
	return $text;
}

# POST a payload to the webhook endpoint, signed; returns "body code"
my $body_file = "$sdir/body.json";
sub post
{
	my ($body) = @_;
	open my $bf, '>', $body_file or die;
	print $bf $body;
	close $bf;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-s', '-o', '-', '-w', ' %{http_code}', '-X', 'POST',
		'-H', 'Content-Type: application/json',
		'-H', 'X-Hub-Signature-256: sha256=' . hmac_sha256_hex($body, $secret),
		'--data-binary', "\@$body_file", $url ], '>', \$out, '2>', \$err);
	return $out;
}

sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('row %s campaign %s %s: %s %s %s', id, campaign_id, recipient, status,
		                         coalesce(waiting_for, ''), coalesce(last_error, '')), E'\n' ORDER BY id)
		  FROM wasend.send_queue WHERE status <> 'sent' OR campaign_id <> 7});
}

my $utility = q{'{"type":"template","template":{"name":"order","language":{"code":"en_US"}}}'};
my $marketing = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok-$pnid', 200, business_id => '7042');
	SELECT wasend.wasend_create_campaign('before the pair', 1, $utility, category => 'utility');
	SELECT wasend.wasend_enqueue(1, ARRAY['$p1']);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'wasend webhook'})
  or die 'the webhook worker did not start';
$node->poll_query_until('postgres', q{
	SELECT messaging_limit = 250 FROM wasend.portfolios WHERE portfolio = '7042'})
  or die 'the tier was not read';

# --- 1. a STOP without a phone number ----------------------------------------
my $stop = fixture('message_username_only', 'Does it come in another color?' => 'STOP');
like(post($stop), qr/"messages_stored": 1.*"identities_learned": 1.*"recipients_suppressed": 1\}? 200$/,
	'a STOP from a user who hid their number: stored, one identity learned, one name suppressed');
is($node->safe_psql('postgres', q{
	SELECT from_number, from_user_id, body FROM wasend.inbound_messages}),
	"$b1|$b1|STOP", 'the message is stored under the BSUID');
is($node->safe_psql('postgres', q{
	SELECT recipient, scope, reason FROM wasend.suppressions ORDER BY 1}),
	"$b1|all|replied STOP", 'the BSUID is suppressed');
is($node->safe_psql('postgres', q{
	SELECT user_id, coalesce(phone, '-'), parent_user_id, username FROM wasend.identities}),
	"$b1|-|$parent|\@realsheenanelson", 'the BSUID, its parent and the username are kept');
is($node->safe_psql('postgres', qq{
	SELECT wasend.wasend_enqueue(1, ARRAY['15554201000'])}), '1',
	'the phone number is not known to be theirs yet: a row for it is queued (row 1 before)');

like(post(fixture('message_with_phone', 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA='
		=> 'wamid.second')), qr/"messages_stored": 1.* 200$/,
	'a later message names the user by phone number and BSUID');
is($node->safe_psql('postgres', qq{SELECT phone FROM wasend.identities WHERE user_id = '$b1'}),
	$p1, 'the pair is learned');
is($node->safe_psql('postgres', qq{SELECT array_to_string(wasend._recipient_names('$p1'), ',')}),
	"$p1,$b1,$parent", "the phone number's names: itself, the BSUID, the parent BSUID (in C order)");

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('after the pair', 1, $utility, category => 'utility');});
is($node->safe_psql('postgres', qq{SELECT wasend.wasend_enqueue(2, ARRAY['$p1', '15554201001'])}),
	'1', 'enqueue skips the phone number of the user who said STOP under their BSUID');
my ($ret, $out, $err) = $node->psql('postgres', qq{
	SELECT wasend.wasend_send(1, '+$p1', '{"type":"text","text":{"body":"hi"}}')});
like($err, qr/ERROR:  recipient "$p1" is suppressed\nDETAIL:  replied STOP \(suppressed as \Q$b1\E\)/,
	'wasend_send refuses the phone number, saying under which name the user stopped');

$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1})
  or die 'campaign 1 did not complete: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT recipient, status, last_error_class FROM wasend.send_queue WHERE campaign_id = 1 ORDER BY id}),
	"$p1|failed|suppressed\n15554201000|sent|",
	'the row queued before the pair was known fails "suppressed" at its claim; the other is sent');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', qq{SELECT count(*) FROM mocklog WHERE recipient = '$p1'}),
	'0', 'the mock never saw the suppressed phone number');

# --- 2. a campaign to phone numbers and BSUIDs -------------------------------
my @mix = ('155542000001', '155542000002', '155542000003', 'DE.4200000001', 'BR.42abcDEF0002',
	'US.ENT.4200000003');
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('mix', 1, $utility, category => 'utility');
	SELECT wasend.wasend_enqueue(3, ARRAY[} . join(',', map { "'$_'" } @mix) . q{]);
	SELECT wasend.wasend_start_campaign(3);
});
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3})
  or die 'campaign 3 did not complete: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent' AND wa_message_id IS NOT NULL) FROM wasend.send_queue
	 WHERE campaign_id = 3}), scalar(@mix), 'every row of the mix is sent');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT string_agg(m.recipient || ':' || m.http_status, ',' ORDER BY m.recipient)
	  FROM mocklog m JOIN wasend.send_queue q ON q.wa_message_id = m.wamid WHERE q.campaign_id = 3}),
	join(',', map { "$_:200" } sort @mix),
	'the mock accepted each recipient once: phone numbers in "to", BSUIDs in "recipient"');
is(WasendTest::mock_stats($mock)->{both_to_and_recipient}, 0, 'no send named both "to" and "recipient"');

my %w = split /[|\n]/, $node->safe_psql('postgres', q{
	SELECT recipient, wa_message_id FROM wasend.send_queue WHERE campaign_id = 3});
my $delivered = fixture('status_delivered_bsuid',
	'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=' => $w{'DE.4200000001'},
	$b1 => 'DE.4200000001', $parent => 'DE.ENT.4200000009');
like(post($delivered), qr/"statuses_applied": 1.* 200$/, 'a status naming the recipient by BSUID only');
my $paired = fixture('status_delivered_phone',
	'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=' => $w{'155542000001'},
	$b1 => 'US.4200000011', $p1 => '155542000001', $parent => 'US.ENT.4200000019');
like(post($paired), qr/"statuses_applied": 1.* 200$/, 'a status naming the recipient both ways');
is($node->safe_psql('postgres', q{
	SELECT recipient, status, user_id FROM wasend.send_queue
	 WHERE campaign_id = 3 AND status = 'delivered' ORDER BY recipient}),
	"155542000001|delivered|US.4200000011\nDE.4200000001|delivered|DE.4200000001",
	'both are applied by wamid; the rows keep the BSUID');
is($node->safe_psql('postgres', q{
	SELECT phone FROM wasend.identities WHERE user_id = 'US.4200000011'}),
	'155542000001', "the status pairs the phone number with the BSUID");

is($node->safe_psql('postgres', q{
	SELECT wasend.wasend_test_send(3, 'DE.4200000001') #>> '{contacts,0,user_id}'}),
	'DE.4200000001', 'a test send to a BSUID goes in "recipient" too (Meta answers with its user_id)');
is(WasendTest::mock_stats($mock)->{both_to_and_recipient}, 0, 'still no send named both fields');

# --- 3. user_preferences with only a user_id --------------------------------
# (155542000002 is paired with US.4200000012 by a status first)
post(fixture('status_delivered_phone',
	'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=' => $w{'155542000002'},
	$b1 => 'US.4200000012', $p1 => '155542000002', $parent => 'US.ENT.4200000029'));
my $pref = fixture('user_preferences_bsuid', $b1 => 'US.4200000012', $parent => 'US.ENT.4200000029');
my $sig = 'sha256=' . hmac_sha256_hex($pref, $secret);
like($node->safe_psql('postgres', qq{SELECT wasend.wasend_ingest_webhook('$pref', '$sig')}),
	qr/"preferences_applied": 1/, 'SQL: a marketing stop with only a user_id is applied');
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('promo', 1, $marketing, category => 'marketing');
	SELECT wasend.wasend_enqueue(4, ARRAY['155542000002', '155542000003']);
	SELECT wasend.wasend_create_campaign('notice', 1, $utility, category => 'utility');
	SELECT wasend.wasend_enqueue(5, ARRAY['155542000002']);
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 4}), '1',
	'the marketing campaign skips the phone number of the user who stopped marketing by BSUID');
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(4);
	SELECT wasend.wasend_start_campaign(5);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM wasend.campaigns WHERE id IN (4, 5) AND status = 'completed'})
  or die 'campaigns 4 and 5 did not complete: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT campaign_id, recipient, status FROM wasend.send_queue WHERE campaign_id IN (4, 5) ORDER BY 1, 2}),
	"4|155542000003|sent\n5|155542000002|sent", 'a utility message still reaches them');

# the frequency cap counts the person's marketing messages under every
# name: 155542000003 got campaign 4's; paired with US.4200000013, a capped
# marketing campaign to the BSUID waits
post(fixture('status_delivered_phone',
	'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=' => $w{'155542000003'},
	$b1 => 'US.4200000013', $p1 => '155542000003', $parent => 'US.ENT.4200000039'));
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('capped', 1, $marketing, category => 'marketing', frequency_cap => 1);
	SELECT wasend.wasend_enqueue(6, ARRAY['US.4200000013']);
	SELECT wasend.wasend_start_campaign(6);
});
$node->poll_query_until('postgres', q{
	SELECT waiting_for = 'frequency_cap' FROM wasend.send_queue WHERE campaign_id = 6})
  or die 'the capped row did not wait: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, waiting_for, next_attempt_at > now() + interval '6 days' FROM wasend.send_queue
	 WHERE campaign_id = 6}),
	'ready|frequency_cap|t', "the frequency cap counts the message the person got by phone number");

# --- 4. a new BSUID inherits the STOP ---------------------------------------
like(post(fixture('user_id_update')), qr/"identities_learned": 1.* 200$/,
	'user_id_update: the new BSUID is learned');
is($node->safe_psql('postgres', q{
	SELECT user_id, coalesce(phone, '-'), coalesce(previous_user_id, '-') FROM wasend.identities
	 WHERE user_id IN ('US.13491208655302741918', 'US.24817305912873645029') ORDER BY 1}),
	"$b1|-|-\n$b1new|$p1new|$b1", 'the new BSUID has the new phone number and the old BSUID; the old lost its phone');
for my $r ($b1new, $p1new)
{
	($ret, $out, $err) = $node->psql('postgres', qq{
		SELECT wasend.wasend_send(1, '$r', '{"type":"text","text":{"body":"hi"}}')});
	like($err, qr/ERROR:  recipient "\Q$r\E" is suppressed/, "$r inherits the STOP");
}
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.suppressions WHERE recipient = ANY (wasend._recipient_names('$p1'))}),
	'0', 'the old phone number is no longer theirs: nothing suppresses it');
like(post(fixture('system_user_changed_user_id', $b1new => 'US.3000000001', $b1 => $b1new,
		'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=' => 'wamid.system')),
	qr/"identities_learned": 2.* 200$/,
	'a user_changed_user_id system message is learned too (the new BSUID with its parent, then its link to the old)');
($ret, $out, $err) = $node->psql('postgres', q{
	SELECT wasend.wasend_send(1, 'US.3000000001', '{"type":"text","text":{"body":"hi"}}')});
like($err, qr/ERROR:  recipient "US.3000000001" is suppressed/, 'its new BSUID inherits the STOP as well');

# --- 5. the messaging limit counts a person once ----------------------------
my $used = $node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.recipient_window WHERE portfolio = '7042'});
my $fill = 250 - $used;
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('fill', 1, $utility, category => 'utility');
	SELECT wasend.wasend_enqueue(7, array_agg((155543000000 + g)::text ORDER BY g))
	  FROM generate_series(1, $fill) g;
	SELECT wasend.wasend_enqueue(7, ARRAY['US.4200000011', '155549999999']);
	SELECT wasend.wasend_start_campaign(7);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'ready' AND waiting_for = 'messaging_limit') = 1
	   AND count(*) FILTER (WHERE status = 'sent') = count(*) - 1
	  FROM wasend.send_queue WHERE campaign_id = 7})
  or die 'campaign 7 did not reach its budget: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT recipient, status, coalesce(waiting_for, '-') FROM wasend.send_queue
	 WHERE campaign_id = 7 AND recipient IN ('US.4200000011', '155549999999') ORDER BY 1}),
	"155549999999|ready|messaging_limit\nUS.4200000011|sent|-",
	'with the 250 slots taken, the BSUID of a person reached by phone is sent; a new number waits');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.recipient_window WHERE portfolio = '7042'}),
	'250', 'the window holds 250 people');

# --- 6. two writers pairing names of one person at once ---------------------
# The first holds its transaction open; the second, linking another
# BSUID through the same parent, waits for it, then sees its pair: the
# person is whole, not split in two.
my $s1 = $node->background_psql('postgres');
$s1->query_safe(q{BEGIN; INSERT INTO wasend.identities (user_id, parent_user_id) VALUES ('JP.1', 'JP.ENT.9');});
my $s2 = $node->background_psql('postgres');
$s2->query_until(qr/sent/, q{\echo sent
INSERT INTO wasend.identities (user_id, parent_user_id) VALUES ('JP.2', 'JP.ENT.9');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO wasend.identities%JP.2%'}),
	'the second writer of a pair waits for the first');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type LIKE 'wasend%' AND wait_event_type = 'Lock'}), '0', 'no wasend worker waits');
$s1->query_safe('COMMIT');
$s2->query_safe('SELECT 1');
$s1->quit;
$s2->quit;
is($node->safe_psql('postgres', q{
	SELECT array_to_string(wasend._recipient_names('JP.1'), ',') || ' ' || array_to_string(wasend._recipient_names('JP.2'), ',')}),
	'JP.1,JP.2,JP.ENT.9 JP.1,JP.2,JP.ENT.9', 'both BSUIDs are one person');

done_testing();
