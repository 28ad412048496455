# 041_api_2026.pl — Meta's 2026 API changes, with real senders against the
# mock Graph API.
#
#   1. Tiers.  A number whose account read says TIER_50 gets a limit of 50.
#      A phone_number_quality_update that carries only
#      max_daily_conversations_per_business (no current_limit, as since
#      February 2026) sets the number's tier and, lowered, pauses its
#      running marketing campaign; a number given as a number of recipients
#      is taken too.  A business_capability_update of a WhatsApp Business
#      Account whose numbers wasend learned from a status webhook (entry.id
#      with metadata.phone_number_id) sets the tier of that account's
#      portfolio at once (a number of the same business_id included), pauses
#      the lowered numbers' marketing campaigns, and leaves the numbers of
#      other accounts alone; an account no number knows makes every number
#      be read again, as before.
#   2. Throughput.  The account read stores throughput.level.  A number
#      with follow_throughput (wasend_add_number or wasend_update_number)
#      sends at 1000 a second when the level is HIGH and at 80 when it is
#      STANDARD again; a number without it keeps the rate it was given.  A
#      131057 (throughput upgrade in progress) is retried: the row is sent
#      on its second attempt.
#   3. API version.  An answer with X-Ad-Api-Version-Warning is logged as a
#      WARNING naming the header's text, once per number however many
#      answers carry it (one sender: wasend.workers = 1).
#   4. A row's own error fails the row.  A campaign of 20 rows where the
#      mock answers one recipient 132000 (parameter count mismatch): 19
#      sent, that row failed with 132000, the campaign completed.  A
#      campaign whose every row gets 132000 is paused by its circuit
#      breaker (error_window 10), with the breaker's reason.  The template's
#      own errors (132001, 132015, 132016) still pause the campaign, and the
#      new codes 131062 and 131055 have their policies.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'41001' => { token => 'tok-41001', rate => 200,
			account => { tier => 'TIER_50', display_phone_number => '15550041001' } },
		'41002' => { token => 'tok-41002', rate => 200,
			account => { tier => 'TIER_2K', display_phone_number => '15550041002' } },
		'41003' => { token => 'tok-41003', rate => 200,
			account => { tier => 'TIER_2K', display_phone_number => '15550041003' } },
		'41004' => { token => 'tok-41004', rate => 200,
			account => { tier => 'TIER_2K', display_phone_number => '15550041004' } },
		map { ("4100$_" => { token => "tok-4100$_", rate => 1000,
			account => { tier => 'TIER_UNLIMITED', throughput => 'HIGH' } }) } 5 .. 7,
	},
	rules => [ { to => '^15554150000001$', code => 131057, times => 1 } ],
});
my $node = WasendTest::new_node('api2026', $mock, 'wasend.workers' => 1);

my $msg = q{'{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}'};

# the numbers, campaigns and queue, for a failure message
sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('number %s: %s %s %s %s; waba %s; error %s', phone_number_id, status,
		                         messaging_tier, messaging_limit, max_send_rate_per_sec,
		                         coalesce(waba_id, '-'), coalesce(limits_error, '-')), E'\n' ORDER BY id)
		  FROM wasend.whatsapp_numbers})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s: %s %s', id, status, coalesce(pause_reason, '-')),
		                  E'\n' ORDER BY id) FROM wasend.campaigns})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s %s: %s rows', campaign_id, status,
		                         coalesce(last_error_code::text, '-'), n), E'\n')
		  FROM (SELECT campaign_id, status, last_error_code, count(*) n FROM wasend.send_queue
		         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) s});
}

# webhook_body with the entry id $waba instead of the builders' "WABA1"
sub webhook_for
{
	my ($waba, @changes) = @_;
	my $body = WasendTest::webhook_body(@changes);
	$body =~ s/"id":"WABA1"/"id":"$waba"/ or die 'no entry id in the webhook body';
	return $body;
}

# recipients $prefix<nnnnn>
sub recipients
{
	my ($prefix, $from, $to) = @_;
	return 'ARRAY[' . join(',', map { sprintf("'%s%05d'", $prefix, $_) } $from .. $to) . ']';
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('41001', 'tok-41001', 200, business_id => '4101');
	SELECT wasend.wasend_add_number('41002', 'tok-41002', 200, business_id => '4102');
	SELECT wasend.wasend_add_number('41003', 'tok-41003', 200, business_id => '4102');
	SELECT wasend.wasend_add_number('41004', 'tok-41004', 200, business_id => '4104');
});

# --- 1. tiers ---------------------------------------------------------------
$node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM wasend.whatsapp_numbers WHERE limits_checked_at IS NOT NULL})
  or die 'the numbers were not read: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, messaging_tier, messaging_limit, coalesce(limits_error, '-')
	  FROM wasend.whatsapp_numbers ORDER BY id}),
	"41001|TIER_50|50|-\n41002|TIER_2K|2000|-\n41003|TIER_2K|2000|-\n41004|TIER_2K|2000|-",
	'an account read of TIER_50 gives a limit of 50');
is($node->safe_psql('postgres', q{SELECT messaging_limit FROM wasend.portfolios WHERE portfolio = '4101'}),
	'50', 'the portfolio of the TIER_50 number has a limit of 50');

# running marketing campaigns that send nothing (their numbers are paused),
# so that a lowered tier has something to pause
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_pause_number(n, 'held by the test') FROM generate_series(2, 4) n;
	SELECT wasend.wasend_create_campaign('c' || n, n, $msg) FROM generate_series(2, 4) n;
	SELECT wasend.wasend_enqueue(c, ARRAY['1555410000' || c]) FROM generate_series(1, 3) c;
	SELECT wasend.wasend_start_campaign(c) FROM generate_series(1, 3) c;
});

# a quality update with only max_daily_conversations_per_business, in one
# transaction: what the webhook itself did, before a sender reads again
# (the mock says the same from now on, so that a later read agrees)
WasendTest::mock_account($mock, '41004', tier => 'TIER_250');
my $wh = WasendTest::webhook_body({ field => 'phone_number_quality_update', value => {
	display_phone_number => '15550041004', event => 'DOWNGRADE',
	max_daily_conversations_per_business => 'TIER_250' } });
is($node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend._ingest_verified('$wh') ->> 'campaigns_changed';
	SELECT messaging_tier || '|' || messaging_limit FROM wasend.whatsapp_numbers WHERE id = 4;
	SELECT status || '|' || pause_reason FROM wasend.campaigns WHERE id = 3;
	COMMIT;
}), "1\nTIER_250|250\npaused|quality: messaging limit of number 41004 lowered from TIER_2K to TIER_250 (phone_number_quality_update DOWNGRADE)",
	'phone_number_quality_update without current_limit: max_daily_conversations_per_business sets the tier and pauses');
WasendTest::mock_account($mock, '41004', tier => 'TIER_10K');
$wh = WasendTest::webhook_body({ field => 'phone_number_quality_update', value => {
	display_phone_number => '15550041004', event => 'UPGRADE',
	max_daily_conversations_per_business => 10000, current_limit => 'TIER_2K' } });
is($node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend._ingest_verified('$wh') ->> 'account_updates';
	SELECT messaging_tier || '|' || messaging_limit FROM wasend.whatsapp_numbers WHERE id = 4;
	COMMIT;
}), "1\nTIER_10K|10000",
	'max_daily_conversations_per_business as a number is taken, before current_limit');

# the accounts are learned from a status webhook's entry.id and metadata
$node->safe_psql('postgres', q{SELECT wasend._ingest_verified('}
	. webhook_for('9410002', WasendTest::wh_status(phone_number_id => '41002',
		display_phone_number => '15550041002', id => 'wamid.unknown41', status => 'sent',
		recipient_id => '15554100001'))
	. q{')});
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, coalesce(waba_id, '-') FROM wasend.whatsapp_numbers ORDER BY id}),
	"41001|-\n41002|9410002\n41003|-\n41004|-",
	'a webhook about a number teaches its WhatsApp Business Account');

# the checks of the numbers more than a minute ago, so that "read again
# soon" shows as limits_due_at = now()
$node->safe_psql('postgres', q{
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = now() - interval '2 minutes',
	       limits_due_at = now() + interval '1 hour'});
WasendTest::mock_account($mock, $_, tier => 'TIER_250') for qw(41002 41003);
$wh = webhook_for('9410002', WasendTest::wh_capability_update(max_daily_conversations_per_business => 250));
is($node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend._ingest_verified('$wh') ->> 'campaigns_changed';
	SELECT string_agg(phone_number_id || '|' || messaging_tier || '|' || messaging_limit
	                  || '|' || (limits_due_at <= now()), ' ' ORDER BY id) FROM wasend.whatsapp_numbers;
	SELECT string_agg(id || '|' || status, ' ' ORDER BY id) FROM wasend.campaigns;
	SELECT pause_reason FROM wasend.campaigns WHERE id = 1;
	SELECT messaging_limit FROM wasend.portfolios WHERE portfolio = '4102';
	COMMIT;
}), "2\n41001|TIER_50|50|false 41002|TIER_250|250|true 41003|TIER_250|250|true 41004|TIER_10K|10000|false\n"
  . "1|paused 2|paused 3|paused\n"
  . "quality: messaging limit of number 41002 lowered from TIER_2K to TIER_250 (business_capability_update of WhatsApp Business Account 9410002)\n250",
	'business_capability_update of a known account: its portfolio (41002, and 41003 by business_id) gets the tier at once, the lowered campaigns pause, other numbers are untouched');

$node->safe_psql('postgres', q{
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = now() - interval '2 minutes',
	       limits_due_at = now() + interval '1 hour'});
$wh = webhook_for('9419999', WasendTest::wh_capability_update(max_daily_conversations_per_business => -1));
is($node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend._ingest_verified('$wh') ->> 'account_updates';
	SELECT string_agg(phone_number_id || '|' || coalesce(messaging_tier, '-') || '|' || (limits_due_at <= now()),
	                  ' ' ORDER BY id)
	  FROM wasend.whatsapp_numbers WHERE messaging_tier IS DISTINCT FROM 'TIER_UNLIMITED';
	ROLLBACK;
}), "1\n41001|TIER_50|true 41002|TIER_250|true 41003|TIER_250|true 41004|TIER_10K|true",
	'business_capability_update of an account no number knows: every number is read again, no tier is guessed');

# --- 2. throughput ----------------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_add_number('41005', 'tok-41005', follow_throughput => true);
	SELECT wasend.wasend_add_number('41006', 'tok-41006', 50);
	SELECT wasend.wasend_add_number('41007', 'tok-41007', 60);
	SELECT wasend.wasend_update_number(7, follow_throughput => true);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM wasend.whatsapp_numbers WHERE id >= 5 AND throughput_level IS NOT NULL})
  or die 'the throughput levels were not read: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, throughput_level, follow_throughput, max_send_rate_per_sec
	  FROM wasend.whatsapp_numbers WHERE id >= 5 ORDER BY id}),
	"41005|HIGH|t|1000\n41006|HIGH|f|50\n41007|HIGH|t|1000",
	'level HIGH: the numbers that follow it send at 1000 a second, the other keeps its rate');
ok($node->log_contains(qr/number 41005 now sends at most 1000 messages a second \(throughput level HIGH\)/),
	'the server log says the rate followed the level');

WasendTest::mock_account($mock, $_, throughput => 'STANDARD') for qw(41005 41006);
$node->safe_psql('postgres', q{
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = now() - interval '2 minutes',
	       limits_due_at = now() WHERE id IN (5, 6)});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM wasend.whatsapp_numbers WHERE id IN (5, 6) AND throughput_level = 'STANDARD'})
  or die 'the throughput levels were not read again: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, throughput_level, max_send_rate_per_sec
	  FROM wasend.whatsapp_numbers WHERE id >= 5 ORDER BY id}),
	"41005|STANDARD|80\n41006|STANDARD|50\n41007|HIGH|1000",
	'level STANDARD again: the following number is back at 80, the other still at its own rate');

# 131057 for the first attempt of one recipient
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('upgrade', 5, $msg, category => 'utility');
	SELECT wasend.wasend_enqueue(4, } . recipients('155541500', 1, 5) . q{);
	SELECT wasend.wasend_start_campaign(4);
});
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4})
  or die 'the campaign with a 131057 did not complete: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT recipient, status, attempts, coalesce(last_error_code::text, '-') FROM wasend.send_queue
	 WHERE campaign_id = 4 AND attempts > 1}),
	'15554150000001|sent|2|-',
	'131057 (throughput upgrade in progress): the row waits and is sent on its second attempt');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT string_agg(http_status || ':' || coalesce(nullif(code, ''), '-'), ' ' ORDER BY t_ms)
	  FROM mocklog WHERE recipient = '15554150000001'}),
	'400:131057 200:-', 'the mock saw the 131057, then the accepted send');

# --- 3. API version warning --------------------------------------------------
WasendTest::mock_post($mock, '/__mock/config',
	{ version_warning => 'The call was upgraded to v24.0: v21.0 is deprecated (token EAAB0123456789abcdefghijkl)' });
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('versions', 6, $msg, category => 'utility');
	SELECT wasend.wasend_enqueue(5, } . recipients('155541600', 1, 30) . q{);
	SELECT wasend.wasend_start_campaign(5);
	UPDATE wasend.whatsapp_numbers SET limits_checked_at = now() - interval '2 minutes',
	       limits_due_at = now() WHERE id = 6;
});
$node->poll_query_until('postgres', q{
	SELECT status = 'completed' FROM wasend.campaigns WHERE id = 5
	   AND (SELECT limits_checked_at > now() - interval '1 minute' FROM wasend.whatsapp_numbers WHERE id = 6)})
  or die 'the campaign under the version warning did not complete: ' . state_of();
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my @warnings = $log =~ /(WARNING:  wasend: the Graph API upgraded a call of number id 6 to another API version: [^\n]*)/g;
is(scalar(@warnings), 1, 'the version warning is logged once for the number, for 30 sends and a read')
  or diag(join("\n", @warnings));
like($warnings[0] // '', qr/: The call was upgraded to v24\.0: v21\.0 is deprecated \(token \[redacted token\]\)$/,
	"the warning names the header's text, with a token redacted");

# --- 4. a row's own error fails the row -------------------------------------
WasendTest::mock_post($mock, '/__mock/config', { rules => [
	{ to => '^15554170000007$', code => 132000 },
	{ to => '^1555418', code => 132000 } ] });
# at 20 a second, so that the breaker trips with rows left
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_update_number(7, max_send_rate_per_sec => 20, follow_throughput => false);
	SELECT wasend.wasend_create_campaign('one bad row', 7, $msg, category => 'utility');
	SELECT wasend.wasend_enqueue(6, } . recipients('155541700', 1, 20) . q{);
	SELECT wasend.wasend_start_campaign(6);
});
$node->poll_query_until('postgres', q{
	SELECT status IN ('completed', 'paused') FROM wasend.campaigns WHERE id = 6})
  or die 'the campaign with one bad row did not end: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT c.status || '|' || coalesce(c.pause_reason, '-') FROM wasend.campaigns c WHERE id = 6}),
	'completed|-', 'a campaign with one row answered 132000 completes');
is($node->safe_psql('postgres', q{
	SELECT status, count(*), string_agg(DISTINCT coalesce(last_error_code::text, '-'), ','),
	       CASE WHEN status = 'failed' THEN min(recipient) END
	  FROM wasend.send_queue WHERE campaign_id = 6 GROUP BY status ORDER BY status}),
	"failed|1|132000|15554170000007\nsent|19|-|",
	'the other 19 rows are sent, the row answered 132000 failed with its code');

$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('all bad', 7, $msg, category => 'utility');
	UPDATE wasend.campaigns SET error_window = 10 WHERE id = 7;
	SELECT wasend.wasend_enqueue(7, } . recipients('155541800', 1, 60) . q{);
	SELECT wasend.wasend_start_campaign(7);
});
$node->poll_query_until('postgres', q{
	SELECT status = 'paused' FROM wasend.campaigns WHERE id = 7})
  or die 'the campaign whose rows all fail was not paused: ' . state_of();
like($node->safe_psql('postgres', q{SELECT pause_reason FROM wasend.campaigns WHERE id = 7}),
	qr/^circuit breaker: [0-9]+ of the last 10 results failed/,
	'a campaign whose every row gets 132000 is paused by its circuit breaker, saying so');
WasendTest::wait_quiet($node);
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'failed' AND last_error_code = 132000) >= 10,
	       count(*) FILTER (WHERE status = 'sent'),
	       count(*) FILTER (WHERE status = 'ready') > 0
	  FROM wasend.send_queue WHERE campaign_id = 7}),
	't|0|t', 'its failed rows have 132000; rows are left for after the fix');

is($node->safe_psql('postgres', q{
	SELECT string_agg(code || ':' || action, ' ' ORDER BY code) FROM wasend.error_policy
	 WHERE code IN ('100', '131051', '135000', '132000', '132012', '132001', '132015', '132016',
	                '131062', '131055')}),
	'100:fail 131051:fail 131055:pause_number 131062:fail 132000:fail 132001:pause_campaign '
	  . '132012:fail 132015:pause_campaign 132016:pause_campaign 135000:fail',
	"a row's own errors fail the row, the template's pause the campaign, the new codes have policies");

done_testing();
