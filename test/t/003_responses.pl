# 003_responses.pl — what a sender records for each kind of answer.
#
# The mock answers scripted errors for chosen recipients: 131026 and 131050
# (error bodies), an HTTP 500 without a JSON body, a 130429 for the first
# try of one recipient, and a wrong token for a second number.  Proves: a
# 200 stores its wamid and 'sent'; an error body stores error.code and
# error.message on a 'failed' row; a body that is not JSON fails the row
# with a clear text and does not disturb the rest of the batch; a 130429 is
# retried and then sent; nothing is sent twice otherwise.
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
	},
	rules => [
		{ to => '^15570000013$', code => 131026 },
		{ to => '^15570000027$', code => 131050 },
		{ to => '^15570000042$', action => 'http500' },
		{ to => '^15570000077$', code => 130429, times => 1 },
	],
});
my $node = WasendTest::new_node('responses', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend_add_number('3001', 'good', 100);
	SELECT wasend_add_number('3002', 'wrong-token', 100);
	SELECT wasend_create_campaign('mixed', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend_create_campaign('bad-token', 2, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend_enqueue(1, array_agg((15570000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend_enqueue(2, ARRAY['15579000001', '15579000002']);
	SELECT wasend_start_campaign(1);
	SELECT wasend_start_campaign(2);
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM wasend.campaigns WHERE status = 'completed'}),
	'both campaigns complete');
WasendTest::load_mock_log($node, $mock);

is($node->safe_psql('postgres', q{
	SELECT recipient, status, last_error_code, last_error, attempts
	  FROM wasend.send_queue WHERE status <> 'sent' OR attempts <> 1 ORDER BY recipient}),
	join("\n",
		'15570000013|failed|131026|(#131026) Message undeliverable|1',
		'15570000027|failed|131050|(#131050) User has opted out of marketing messages|1',
		'15570000042|failed||response is not JSON|1',
		'15570000077|sent|||2',
		'15579000001|failed|190|(#190) Error validating access token: Session has expired|1',
		'15579000002|failed|190|(#190) Error validating access token: Session has expired|1'),
	'each failed row carries the API error code and message; the 130429 was retried');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.status = 'sent' AND m.http_status = 200 AND q.wa_message_id = m.wamid}),
	'97', 'the 97 sent rows store the wamid the mock returned');

is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient),
	       count(*) FILTER (WHERE code = '130429')
	  FROM mocklog}),
	'103|102|1', '103 requests for 102 rows: only the 130429 was sent again');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
