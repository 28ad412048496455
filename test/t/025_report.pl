# 025_report.pl — pricing and the campaign report (docs/account-limits.md,
# "Cost and the funnel"), with real senders against the mock Graph API.
#
# One number, one utility campaign of 6 recipients (two +44, four +1),
# sent by the senders.  Proves: the mock received exactly one request per
# recipient and each row stores the wamid the mock gave it; the senders
# read the number's account state (tier, quality, health, display number)
# from the mock, and the claims count the 6 recipients against its
# messaging limit; status webhooks for those wamids (delivered / read for
# some, billable utility pricing for four, a free customer-service one,
# one failed with 131026 and Meta's title) put their pricing on the rows;
# wasend.prices refuses a row without a category and, filled with a rate
# card (utility 0.01, utility to +44 0.02), prices the campaign: the
# exact wasend.campaign_report row (funnel, failures with the title,
# messages by pricing category, billable, unpriced, estimated cost).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	strict_numbers => JSON::PP::true,
	numbers => {
		'2501' => {
			token => 'tok-report', rate => 100,
			account => { tier => 'TIER_2K', quality_rating => 'GREEN',
				can_send_message => 'AVAILABLE', display_phone_number => '15550002501' },
		},
	},
});
my $node = WasendTest::new_node('report', $mock);

my @uk = ('447700900101', '447700900102');
my @us = ('15552500001', '15552500002', '15552500003', '15552500004');
my @all = (@uk, @us);
my $recipients = join(', ', map { "'$_'" } @all);

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('2501', 'tok-report', 100);
	SELECT wasend.wasend_create_campaign('order updates', 1,
	  '{"type":"template","template":{"name":"order_update","language":{"code":"en_US"}}}',
	  category => 'utility');
	SELECT wasend.wasend_enqueue(1, ARRAY[$recipients]);
	SELECT wasend.wasend_start_campaign(1);
});

# --- the senders send every row, once
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FILTER (WHERE status = 'sent') = 6 AND count(*) = 6 FROM wasend.send_queue}),
	'the senders sent all 6 rows');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'and the campaign completed');

WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog}),
	'6', 'the mock received exactly 6 message requests');
is($node->safe_psql('postgres', q{
	SELECT string_agg(recipient || ':' || n, ' ' ORDER BY recipient)
	  FROM (SELECT recipient, count(*) n FROM mocklog GROUP BY 1) m}),
	join(' ', map { "$_:1" } sort @all),
	'one request per recipient');
is($node->safe_psql('postgres', q{
	SELECT phone_number_id, type, http_status, count(*) FROM mocklog GROUP BY 1, 2, 3}),
	'2501|template|200|6', 'all from the number, the template, accepted');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	  JOIN mocklog m ON m.recipient = q.recipient AND m.wamid = q.wa_message_id
	 WHERE q.attempts = 1 AND q.sent_at IS NOT NULL}),
	'6', "each row stores the wamid the mock returned for its recipient");

# --- the senders read the number's account state from the mock
cmp_ok($node->safe_psql('postgres',
		q{SELECT count(*) FROM mocklog_gets WHERE phone_number_id = '2501' AND http_status = 200}),
	'>=', 1, 'a sender read the number\'s account fields (GET)');
is($node->safe_psql('postgres', q{
	SELECT messaging_tier, messaging_limit, quality_rating, can_send_message,
	       display_phone_number, coalesce(limits_error, 'no error')
	  FROM wasend.whatsapp_numbers WHERE id = 1}),
	'TIER_2K|2000|GREEN|AVAILABLE|15550002501|no error',
	'the number has the tier, limit, quality, health and display number the mock gave');
is($node->safe_psql('postgres', q{
	SELECT portfolio, count(*), bool_and(last_at > now() - interval '1 hour')
	  FROM wasend.recipient_window GROUP BY 1}),
	'number:1|6|t', 'the claims spent 6 slots of the portfolio\'s budget (2000)');

# --- status webhooks for the mock's wamids
my %wamid = map { split /\|/ } split /\n/,
	$node->safe_psql('postgres', q{SELECT recipient, wa_message_id FROM wasend.send_queue});
my $utility = { billable => 1, category => 'utility' };
my $free = { billable => 0, category => 'service', type => 'free_customer_service' };
sub ingest
{
	my (@statuses) = @_;
	my $body = WasendTest::webhook_body(WasendTest::wh_status(
		phone_number_id => '2501', display_phone_number => '15550002501',
		statuses => \@statuses));
	return $node->safe_psql('postgres', "SELECT wasend._ingest_verified(\$wh\$$body\$wh\$)");
}
sub st
{
	my ($recipient, $status, %more) = @_;
	return { id => $wamid{$recipient}, status => $status, recipient_id => $recipient, %more };
}
like(ingest(
		st($uk[0], 'delivered', pricing => $utility),
		st($uk[1], 'delivered', pricing => $utility),
		st($us[0], 'delivered', pricing => $utility),
		st($us[1], 'sent', pricing => $utility),
		st($us[2], 'read', pricing => $free),
		st($us[3], 'failed', errors => [ { code => 131026, title => 'Message undeliverable' } ])),
	qr/"statuses_applied": 6, "statuses_ignored": 0, "statuses_pending": 0/,
	'the first webhook applies 6 statuses');
like(ingest(st($uk[0], 'read'), st($us[0], 'read')),
	qr/"statuses_applied": 2, "statuses_ignored": 0, "statuses_pending": 0/,
	'the second (read, no pricing) applies 2');

is($node->safe_psql('postgres', q{
	SELECT recipient, status, delivered_at IS NOT NULL, read_at IS NOT NULL,
	       coalesce(last_error_code::text, ''), coalesce(pricing_billable::text, ''),
	       coalesce(pricing_model, ''), coalesce(pricing_category, ''), coalesce(pricing_type, '')
	  FROM wasend.send_queue ORDER BY recipient}),
	join("\n",
		'15552500001|read|t|t||true|PMP|utility|regular',
		'15552500002|sent|f|f||true|PMP|utility|regular',
		'15552500003|read|t|t||false|PMP|service|free_customer_service',
		'15552500004|failed|f|f|131026||||',
		'447700900101|read|t|t||true|PMP|utility|regular',
		'447700900102|delivered|t|f||true|PMP|utility|regular'),
	'every row: its status and the pricing of its webhook');
is($node->safe_psql('postgres', q{SELECT recipient, reason, scope FROM wasend.suppressions}),
	'15552500004|message failed with 131026|all', '131026 suppressed its recipient for all campaigns');

# --- prices
my ($stdout, $stderr);
$node->psql('postgres', q{INSERT INTO wasend.prices (country_prefix, price) VALUES ('', 0.01)},
	stdout => \$stdout, stderr => \$stderr);
like($stderr, qr/ERROR:  a price needs a category/, 'a price row without a category is refused');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.prices}), '0', 'and not stored');
is($node->safe_psql('postgres', q{SELECT campaign_id, billable, unpriced, estimated_cost IS NULL FROM wasend.campaign_report}),
	'1|4|4|t', 'without prices: 4 billable messages, all unpriced, no estimated cost');
$node->safe_psql('postgres', q{
	INSERT INTO wasend.prices (category, country_prefix, price)
	VALUES ('utility', '', 0.01), ('utility', '+44', 0.02), ('marketing', '', 0.05);
});
is($node->safe_psql('postgres', q{SELECT category, country_prefix, price FROM wasend.prices ORDER BY 1, 2}),
	"marketing||0.05\nutility||0.01\nutility|44|0.02", 'a rate card (the + of a prefix dropped)');

# --- the report: 6 sent, 4 delivered (a read one too), 3 read, 1 failed;
# 4 billable utility messages: 2 x 0.02 (+44) + 2 x 0.01
is($node->safe_psql('postgres', q{
	SELECT campaign_id, name, status, category, total, sent, delivered, read, failed, held,
	       delivered_pct, read_pct, failures, by_pricing_category, billable, unpriced, estimated_cost
	  FROM wasend.campaign_report}),
	'1|order updates|completed|utility|6|6|4|3|1|0|66.7|75.0|'
	  . '{"131026": {"count": 1, "title": "Message undeliverable"}}|'
	  . '{"service": {"free": 1, "billable": 0}, "utility": {"free": 0, "billable": 4}}|'
	  . '4|0|0.06',
	'campaign_report: funnel, failures with the title, pricing categories, billable, cost');
is($node->safe_psql('postgres', q{
	SELECT pg_typeof(estimated_cost), pg_typeof(failures), pg_typeof(by_pricing_category)
	  FROM wasend.campaign_report}),
	'numeric|jsonb|jsonb', 'the cost is numeric, failures and categories jsonb');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
