# 010_token_expiry.pl — fault test 5: the access token expires (190)
# mid-campaign.  The number pauses with the reason stored and shown; the
# campaign waits without losing or failing a row; resuming the number with
# a new token finishes it, each recipient sent once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({ numbers => { '1101' => { token => 'old-token', rate => 100 } } });
my $node = WasendTest::new_node('token', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('1101', 'old-token', 100);
	SELECT wasend.wasend_create_campaign('expiry', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15510000000 + g)::text)) FROM generate_series(1, 500) g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 150 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'nothing sent';

# Meta rotates the token: the old one now gets 190
WasendTest::mock_post($mock, '/__mock/config',
	{ numbers => { '1101' => { token => 'new-token', rate => 100 } } });
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'paused' FROM wasend.whatsapp_numbers WHERE id = 1}),
	'the number pauses itself on 190');
ok(WasendTest::wait_quiet($node), 'senders hold nothing of the paused number');
like($node->safe_psql('postgres',
	q{SELECT status || ' | ' || pause_reason FROM wasend.campaign_progress WHERE campaign_id = 1}),
	qr/^running \| number paused: error 190: /, 'campaign_progress shows why the campaign waits');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') + count(*) FILTER (WHERE status = 'ready'),
	       count(*) FILTER (WHERE status NOT IN ('sent', 'ready'))
	  FROM wasend.send_queue}),
	'500|0', 'while paused: every row is sent or ready, none failed or stuck');

$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1, 'new-token')});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'resuming the number with the new token finishes the campaign');

WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, 'sent=500', 'all 500 rows sent');
is($a->{lost}, 0, '0 rows lost');
is($a->{duplicates}, 0, 'no recipient accepted twice');
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE code = '190'}),
	'>=', 1, 'the mock refused the old token');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE attempts <> 1}),
	'0', 'refused attempts did not count against the rows');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
