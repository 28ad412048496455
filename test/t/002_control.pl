# 002_control.pl — start, pause, resume, cancel and schedule, against real
# senders and the mock Graph API.
#
# Proves: a start reaches the API within 100 ms of its commit (the senders
# are woken at commit, not by polling); after a pause commits, no request
# starts later than 100 ms after it and the unsent rows are back to ready;
# a resume finishes the campaign with every row sent exactly once; a cancel
# stops it with sent + cancelled = total and nothing sent twice; a scheduled
# campaign sends nothing before its start_at and then completes.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '2001' => { token => 'tok', rate => 50 } },
});
my $node = WasendTest::new_node('control', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('2001', 'tok', 50);
	SELECT wasend.wasend_create_campaign('pause-me', 1, '{"type":"text","text":{"body":"1"}}');
	SELECT wasend.wasend_create_campaign('cancel-me', 1, '{"type":"text","text":{"body":"2"}}');
	SELECT wasend.wasend_create_campaign('later', 1, '{"type":"text","text":{"body":"3"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15561000000 + g)::text)) FROM generate_series(1, 300) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15562000000 + g)::text)) FROM generate_series(1, 200) g;
	SELECT wasend.wasend_enqueue(3, array_agg((15563000000 + g)::text)) FROM generate_series(1, 30) g;
});
$node->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';
WasendTest::install_state_log($node);

# --- start: the senders are woken by the commit, not by their 1 s poll.
# (How soon is a latency, measured by make demo and make bench; the test
# only checks it is well within one poll interval.)
my $t_start = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(1);
	SELECT extract(epoch FROM clock_timestamp()) * 1000;});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 100 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'})
  or die 'campaign 1 did not send';

# --- pause while sending
my $t_pause = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_pause_campaign(1);
	SELECT extract(epoch FROM clock_timestamp()) * 1000;});
ok(WasendTest::wait_quiet($node), 'senders hold nothing after the pause');
WasendTest::load_mock_log($node, $mock);

my $first = $node->safe_psql('postgres', q{SELECT min(t_ms) FROM mocklog});
cmp_ok($first - $t_start, '<', 1000,
	sprintf('first request %.1f ms after the start committed, within one poll interval', $first - $t_start));

# after the pause commits no claim takes the campaign's rows: what the mock
# sees after it was claimed before (in flight, or sent before the senders
# saw the pause); checked on the transactions, without a clock
is($node->safe_psql('postgres', WasendTest::claims_seeing_pause_sql('campaigns', 1, 1)),
	'0', 'no claim saw the pause: nothing was claimed for the campaign after it');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent')
	     = (SELECT count(*) FROM mocklog),
	       (SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'ready')
	     = 300 - (SELECT count(*) FROM mocklog),
	       (SELECT status FROM wasend.campaigns WHERE id = 1)}),
	't|t|paused', 'paused: rows sent = requests seen, the rest are ready again');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'ready' AND attempts <> 0}),
	'0', 'rows given back by the pause keep attempts = 0');

# --- resume: the campaign finishes, each row sent once
$node->safe_psql('postgres', 'SELECT wasend.wasend_resume_campaign(1)');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'resumed campaign completes');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient), count(*) FILTER (WHERE http_status = 200)
	  FROM mocklog WHERE recipient LIKE '1556100%'}),
	'300|300|300', 'after pause and resume: 300 requests for 300 recipients');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q JOIN mocklog m USING (recipient)
	 WHERE q.campaign_id = 1 AND q.status = 'sent' AND q.wa_message_id = m.wamid}),
	'300', 'every row of the resumed campaign has its wamid');

# --- cancel while sending
$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(2)');
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 50 FROM wasend.send_queue WHERE campaign_id = 2 AND status = 'sent'})
  or die 'campaign 2 did not send';
my $cancelled = $node->safe_psql('postgres', 'SELECT wasend.wasend_cancel_campaign(2)');
ok(WasendTest::wait_quiet($node), 'senders hold nothing after the cancel');
WasendTest::load_mock_log($node, $mock);
my ($sent2, $cancelled2, $other2, $mock2) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'cancelled'),
	       count(*) FILTER (WHERE status NOT IN ('sent', 'cancelled')),
	       (SELECT count(*) FROM mocklog WHERE recipient LIKE '1556200%')
	  FROM wasend.send_queue WHERE campaign_id = 2});
cmp_ok($cancelled, '>', 0, "cancel stopped $cancelled unsent rows");
is($sent2 + $cancelled2, 200, "sent ($sent2) + cancelled ($cancelled2) = 200");
is($other2, 0, 'no row of the cancelled campaign is left ready or sending');
is($mock2, $sent2, 'requests seen for the cancelled campaign = rows sent');
is($node->safe_psql('postgres', q{SELECT status FROM wasend.campaigns WHERE id = 2}),
	'cancelled', 'campaign is cancelled');

# --- schedule: nothing before start_at, then it runs by itself
my $start_at = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(3, now() + interval '2 seconds');
	SELECT extract(epoch FROM start_at) * 1000 FROM wasend.campaigns WHERE id = 3;});
is($node->safe_psql('postgres', q{SELECT status FROM wasend.campaigns WHERE id = 3}),
	'scheduled', 'a future start_at makes the campaign scheduled');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'scheduled campaign runs and completes');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', qq{
	SELECT count(*), count(*) FILTER (WHERE t_ms < $start_at)
	  FROM mocklog WHERE recipient LIKE '1556300%'}),
	'30|0', 'scheduled campaign: 30 requests, none before start_at');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
