# 001_send.pl — the sending engine end to end against the mock Graph API.
#
# Two numbers, three campaigns (two share one number), per-recipient
# payloads.  Proves: workers are named in pg_stat_activity; every row is
# sent exactly once (mock log = rows); the wamid the mock returned is stored
# on the right row; each number's token and payload went out; no number
# exceeded its rate in any 1-second window (0 rate-limit errors); campaigns
# complete by themselves; connections are pooled (connections the mock saw
# = connections the senders report opening).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	strict_numbers => JSON::PP::true,
	numbers => {
		'1001' => { token => 'tok-a', rate => 100 },
		'1002' => { token => 'tok-b', rate => 50 },
	},
});
my $node = WasendTest::new_node('send', $mock);

$node->safe_psql('postgres', 'CREATE EXTENSION wasend');

ok( $node->poll_query_until('postgres', q{
		SELECT string_agg(backend_type, ',' ORDER BY backend_type)
		  FROM pg_stat_activity WHERE backend_type LIKE 'wasend%'},
		'wasend launcher,wasend sender 1,wasend sender 2,wasend supervisor'),
	'launcher, supervisor and two senders are named in pg_stat_activity');

$node->safe_psql('postgres', q{
	SELECT wasend.wasend_add_number('1001', 'tok-a', 100);
	SELECT wasend.wasend_add_number('1002', 'tok-b', 50);
	SELECT wasend.wasend_create_campaign('a-template', 1,
	  '{"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}');
	SELECT wasend.wasend_create_campaign('a-text', 1, '{"type":"text","text":{"body":"second campaign"}}');
	SELECT wasend.wasend_create_campaign('b', 2, '{"type":"text","text":{"body":"number b"}}');
	-- campaign 1: 600 recipients, every 100th with its own payload
	SELECT wasend.wasend_enqueue(1, array_agg((15551000000 + g)::text ORDER BY g),
	                         array_agg(CASE WHEN g % 100 = 0
	                                        THEN '{"type":"interactive","interactive":{"type":"button"}}'::jsonb
	                                   END ORDER BY g))
	  FROM generate_series(1, 600) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15552000000 + g)::text)) FROM generate_series(1, 300) g;
	-- campaign 3 through a plain INSERT ... SELECT
	CREATE TABLE contacts AS SELECT '+' || (15553000000 + g) AS phone FROM generate_series(1, 200) g;
	INSERT INTO wasend.send_queue (campaign_id, recipient) SELECT 3, phone FROM contacts;
});

$node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_start_campaign(2);
	SELECT wasend.wasend_start_campaign(3);
});

ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 3 FROM wasend.campaigns WHERE status = 'completed'}),
	'all three campaigns completed by themselves');

WasendTest::load_mock_log($node, $mock);

is($node->safe_psql('postgres', q{
	SELECT status, count(*) FROM wasend.send_queue GROUP BY 1 ORDER BY 1}),
	'sent|1100', 'every row is sent');

is($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog}),
	'1100', 'the mock received exactly one request per row');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT phone_number_id, recipient FROM mocklog
	                       GROUP BY 1, 2 HAVING count(*) > 1) d}),
	'0', 'no recipient was sent twice');

is($node->safe_psql('postgres', q{
	SELECT http_status, count(*) FROM mocklog GROUP BY 1 ORDER BY 1}),
	'200|1100', 'every request was accepted: no 130429, no token or body error');

is($node->safe_psql('postgres', q{
	SELECT count(*)
	  FROM wasend.send_queue q
	  JOIN wasend.campaigns c ON c.id = q.campaign_id
	  JOIN wasend.whatsapp_numbers n ON n.id = c.number_id
	  JOIN mocklog m ON m.phone_number_id = n.phone_number_id AND m.recipient = q.recipient
	 WHERE q.wa_message_id = m.wamid AND q.attempts = 1 AND q.sent_at IS NOT NULL}),
	'1100', 'each row stores the wamid the API returned for its recipient');

is($node->safe_psql('postgres', q{
	SELECT phone_number_id, type, count(*) FROM mocklog GROUP BY 1, 2 ORDER BY 1, 2}),
	"1001|interactive|6\n1001|template|594\n1001|text|300\n1002|text|200",
	'each row went out from its campaign\'s number with its own payload');

is($node->safe_psql('postgres', 'SELECT phone_number_id, max <= CASE phone_number_id WHEN \'1001\' THEN 100 ELSE 50 END FROM ('
			. WasendTest::max_window_sql() . ') w'),
	"1001|t\n1002|t",
	'no number exceeded its rate in any 1-second window');

is($node->safe_psql('postgres', q{
	SELECT campaign_id, status, total, sent, percent_done FROM wasend.campaign_progress ORDER BY 1}),
	"1|completed|600|600|100.0\n2|completed|300|300|100.0\n3|completed|200|200|100.0",
	'campaign_progress shows the finished campaigns');

my $stats = WasendTest::mock_stats($mock);
is($node->safe_psql('postgres', q{
	SELECT sum(sent), sum(failed), sum(connections_opened) + sum(connections_reused)
	  FROM wasend.wasend_worker_stats()}),
	'1100|0|1102', 'worker stats count every request (1,100 messages, 2 account reads)');
is($node->safe_psql('postgres', q{SELECT sum(connections_opened) FROM wasend.wasend_worker_stats()}),
	$stats->{connections},
	"senders opened exactly the connections the mock saw ($stats->{connections} for 1100 requests)");
cmp_ok($stats->{connections}, '<=', 20, 'connections are pooled and reused');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
