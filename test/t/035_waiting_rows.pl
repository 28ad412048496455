# 035_waiting_rows.pl — rows that may go now do not wait behind rows that
# wait, and rows that wait cost the senders nothing until they are due.
#
#  1. Send windows per recipient, 10 msg/s: 1,200 rows whose window is
#     closed, then 10 rows whose window is open.  The dry run says 10 go
#     now and 1,200 wait; the 10 are sent within 20 s of the start (one
#     decision per claim at the rate would take two minutes), every other
#     row waits, ready and untried, until its window opens.
#  2. The messaging limit, 10 msg/s: the portfolio's 250 slots are spent,
#     1,200 new recipients, then 10 recipients already in the 24 h window
#     (they cost nothing).  Same: the dry run says so, the 10 are sent
#     within 20 s, the 1,200 wait for the limit.
#  3. With those 2,400 rows waiting and nothing else to do, 15 s of polling
#     read fewer than 300 index entries of wasend.send_queue (the senders
#     do not walk waiting rows again at each poll), once what the senders
#     read deciding them has reached the statistics.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'32001' => { token => 'tok-32001', rate => 10 },
		'32002' => { token => 'tok-32002', rate => 10,
			account => { tier => 'TIER_250', display_phone_number => '15550032002' } },
	},
});
my $node = WasendTest::new_node('waiting', $mock);

# a zone whose local hour is $h now (Etc/GMT covers every hour)
sub zone_at_hour
{
	my ($h) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT name FROM pg_timezone_names
		 WHERE name ~ '^Etc/GMT[-+][0-9]+\$' AND extract(hour FROM now() AT TIME ZONE name) = $h
		 ORDER BY name LIMIT 1});
}

# what the queue looks like, for a failure message
sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s %s: %s rows (ids %s-%s, next %s)', campaign_id, status,
		                         coalesce(waiting_for, '-'), n, lo, hi, nxt), E'\n')
		  FROM (SELECT campaign_id, status, waiting_for, count(*) n, min(id) lo, max(id) hi,
		               min(next_attempt_at) nxt
		          FROM wasend.send_queue GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) s});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('32001', 'tok-32001', 10);
	SELECT wasend.wasend_add_number('32002', 'tok-32002', 10);
});
$node->poll_query_until('postgres', q{
	SELECT messaging_limit = 250 FROM wasend.whatsapp_numbers WHERE id = 2})
  or die 'the tier of number 2 was not read';
my $closed_zone = zone_at_hour(20);
my $open_zone = zone_at_hour(12);
note("closed zone $closed_zone, open zone $open_zone");

# --- 1. send windows per recipient
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_create_campaign('windows', 1, '{"type":"text","text":{"body":"w"}}',
	       send_window_start => '08:00', send_window_end => '16:00');
	INSERT INTO wasend.send_queue (campaign_id, recipient, timezone)
	SELECT 1, (15550321000 + g)::text, '$closed_zone' FROM generate_series(1, 1200) g ORDER BY g;
	INSERT INTO wasend.send_queue (campaign_id, recipient, timezone)
	SELECT 1, (15550329000 + g)::text, '$open_zone' FROM generate_series(1, 10) g ORDER BY g;
});
is($node->safe_psql('postgres', q{
	SELECT would_send_now, waiting_send_window, estimated_duration FROM wasend.wasend_dry_run(1)}),
	'10|1200|00:00:02', 'dry run: 10 go now (about 2 s at 10 msg/s), 1,200 wait for their window');
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 10 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'}),
	'the 10 rows inside their window are sent')
  or diag(state_of());
my $took = $node->safe_psql('postgres', q{
	SELECT round(extract(epoch FROM max(q.sent_at) - c.started_at))
	  FROM wasend.send_queue q JOIN wasend.campaigns c ON c.id = q.campaign_id
	 WHERE c.id = 1 AND q.status = 'sent' GROUP BY c.started_at});
cmp_ok($took, '<=', 20, "they were sent within 20 s of the start, behind 1,200 waiting rows (took $took s)");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1200 FROM wasend.send_queue
	 WHERE campaign_id = 1 AND status = 'ready' AND waiting_for = 'send_window'
	   AND attempts = 0 AND next_attempt_at > now()}),
	'the 1,200 others wait for their window, ready and untried')
  or diag(state_of());
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue q
	 WHERE q.campaign_id = 1 AND q.status = 'ready'
	   AND abs(extract(epoch FROM q.next_attempt_at
	           - wasend._window_opens('08:00', '16:00', q.timezone))) > 5}),
	'0', 'each waits until its window opens');

# --- 2. the messaging limit: 250 slots spent, 10 recipients cost nothing
$node->safe_psql('postgres', q{
	INSERT INTO wasend.recipient_window (portfolio, recipient, last_at)
	SELECT 'number:2', (15550325000 + g)::text, now() - interval '1 hour' FROM generate_series(1, 250) g;
	SELECT wasend.wasend_create_campaign('limit', 2, '{"type":"text","text":{"body":"l"}}');
	INSERT INTO wasend.send_queue (campaign_id, recipient)
	SELECT 2, (15550322000 + g)::text FROM generate_series(1, 1200) g ORDER BY g;
	INSERT INTO wasend.send_queue (campaign_id, recipient)
	SELECT 2, (15550325000 + g)::text FROM generate_series(1, 10) g ORDER BY g;
});
is($node->safe_psql('postgres', q{
	SELECT would_send_now, waiting_messaging_limit, estimated_duration FROM wasend.wasend_dry_run(2)}),
	'10|1200|00:00:02', 'dry run: 10 go now (they cost nothing), 1,200 wait for the messaging limit');
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(2)});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 10 FROM wasend.send_queue WHERE campaign_id = 2 AND status = 'sent'}),
	'the 10 recipients already in the window are sent')
  or diag(state_of());
$took = $node->safe_psql('postgres', q{
	SELECT round(extract(epoch FROM max(q.sent_at) - c.started_at))
	  FROM wasend.send_queue q JOIN wasend.campaigns c ON c.id = q.campaign_id
	 WHERE c.id = 2 AND q.status = 'sent' GROUP BY c.started_at});
cmp_ok($took, '<=', 20, "they were sent within 20 s of the start, behind 1,200 waiting rows (took $took s)");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1200 FROM wasend.send_queue
	 WHERE campaign_id = 2 AND status = 'ready' AND waiting_for = 'messaging_limit'
	   AND attempts = 0 AND next_attempt_at > now() + interval '22 hours'}),
	'the 1,200 new recipients wait for the limit, ready and untried')
  or diag(state_of());
WasendTest::load_mock_log($node, $mock, 'seen');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient),
	       count(*) FILTER (WHERE recipient BETWEEN '15550329001' AND '15550329010'
	                           OR recipient BETWEEN '15550325001' AND '15550325010')
	  FROM seen}),
	'20|20|20', 'the mock saw exactly the 20 rows that may go');

# --- 3. waiting rows cost nothing
my $read_sql = q{
	SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE schemaname = 'wasend' AND relname = 'send_queue'};
# the senders flush their statistics about once a second: let what they
# read deciding the rows reach the view first (bounded)
my $before = $node->safe_psql('postgres', $read_sql);
for (1 .. 20)
{
	sleep 3;
	my $now = $node->safe_psql('postgres', $read_sql);
	note('index entries read in 3 s: ' . ($now - $before));
	last if $now - $before < 100;
	$before = $now;
}
$before = $node->safe_psql('postgres', $read_sql);
my $t0 = time;
sleep 0.5 while time - $t0 < 15;
my $after = $node->safe_psql('postgres', $read_sql);
cmp_ok($after - $before, '<', 300,
	'15 s of polling with 2,400 waiting rows read fewer than 300 index entries of send_queue ('
	  . ($after - $before) . ')');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE status <> 'ready' AND status <> 'sent'}),
	'0', 'no row failed or is held');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
