# 027_lanes.pl — wasend_send jumps the queue, campaign priority, fair share
# (issue 11, item 1).
#
#  1. wasend_send inside a transaction: nothing is sent while it is open
#     (proven while another campaign completes, so the senders are
#     claiming), nothing after a ROLLBACK, the message after the COMMIT;
#     wasend_send_status reads the row.
#  2. A number busy with a 400-row campaign at 20 msg/s: three wasend_send
#     of priority 0, 50 and 100 committed together reach the mock
#     consecutively, highest priority first, ahead of every campaign row
#     the sender held waiting for the rate when they were claimed (a
#     trigger on their claim notes how many; the scenario is run again,
#     at most three times, if there were none); the number's rate is never
#     exceeded.
#     2b. The same with wasend.max_inflight = 2, so that the lane gets one
#     row a claim: the rows are claimed one at a time, highest priority
#     first (the claim orders a lane by priority, not by id).
#  3. Campaign priority: a priority-10 and a priority-0 campaign started
#     together: no row of the lower one is claimed before the last row of
#     the higher one.
#  4. Equal priority: two campaigns of 150 rows share the rate: of the
#     first 100 messages, each has between 35 and 65.
#  5. Bad input: each refused with the error it should give, nothing
#     queued.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'27001' => { token => 'tok-27001', rate => 20 },
		'27002' => { token => 'tok-27002', rate => 20 },
		'27003' => { token => 'tok-27003', rate => 20 },
	},
});
my $node = WasendTest::new_node('lanes', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('27001', 'tok-27001', 20);
	SELECT wasend.wasend_add_number('27002', 'tok-27002', 20);
	SELECT wasend.wasend_add_number('27003', 'tok-27003', 20);
});

# --- 1. transactional: after commit, never after rollback
my $bg = $node->background_psql('postgres');
$bg->query_safe(q{BEGIN});
my $tx_id = $bg->query_safe(
	q{SELECT wasend.wasend_send(1, '15550270001', '{"type":"text","text":{"body":"otp 1"}}')});
like($tx_id, qr/^\d+$/, 'wasend_send returns the row id');
# the senders are busy meanwhile: a small campaign goes out and completes
# campaign ids come from the calls: the open transaction's wasend_send
# made the number's lane (an id this session does not see)
my $camp = sub {
	my ($name, $number, @opts) = @_;
	my $extra = join('', map { ", $_" } @opts);
	return $node->safe_psql('postgres', qq{
		SELECT wasend.wasend_create_campaign('$name', $number, '{"type":"text","text":{"body":"$name"}}'$extra)});
};
my $busy = $camp->('busy', 2);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_enqueue($busy, array_agg((15550272000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_start_campaign($busy);
});
ok($node->poll_query_until('postgres', qq{SELECT status = 'completed' FROM wasend.campaigns WHERE id = $busy}),
	'a campaign completed while the transaction was open');
WasendTest::load_mock_log($node, $mock, 'seen');
is($node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE recipient = '15550270001') || '/' || count(*) FROM seen}),
	'0/20', 'the uncommitted message was not sent (the 20 campaign rows were)');
$bg->query_safe(q{ROLLBACK; BEGIN});
$bg->query_safe(q{SELECT wasend.wasend_send(1, '15550270002', '{"type":"text","text":{"body":"rolled back"}}')});
$bg->query_safe(q{ROLLBACK});
$bg->query_safe(q{BEGIN});
$tx_id = $bg->query_safe(
	q{SELECT wasend.wasend_send(1, '15550270003', '{"type":"text","text":{"body":"otp 3"}}', priority => 5)});
$bg->query_safe(q{COMMIT});
$bg->quit;
ok($node->poll_query_until('postgres',
		"SELECT status = 'sent' FROM wasend.wasend_send_status($tx_id)"),
	'the committed message is sent');
is($node->safe_psql('postgres', qq{
	SELECT s.recipient, s.attempts, s.wa_message_id IS NOT NULL, s.error_code IS NULL
	  FROM wasend.wasend_send_status($tx_id) s}),
	'15550270003|1|t|t', 'wasend_send_status: recipient, one attempt, wamid, no error');
is($node->safe_psql('postgres', q{
	SELECT kind, status, name, category FROM wasend.campaigns WHERE kind = 'transactional'}),
	'transactional|running|transactional: 27001|utility',
	'the number got its transactional lane, running');

# busy_campaign(NAME, ROWS, FIRST): a campaign NAME of ROWS rows
# (recipients FIRST + 1...) on number 1, started.  Returns its id.
sub busy_campaign
{
	my ($name, $rows, $first) = @_;
	my $id = $camp->($name, 1);
	$node->safe_psql('postgres', qq{
		SELECT wasend.wasend_enqueue($id, array_agg(($first + g)::text)) FROM generate_series(1, $rows) g;
		SELECT wasend.wasend_start_campaign($id);
	});
	return $id;
}

# trio(ID, STARTED, PREFIX, WHAT): once STARTED rows of campaign ID are
# sent, three wasend_send of priority 0, 50 and 100 (recipients PREFIX000,
# PREFIX050, PREFIX100) committed together; waits until the three are
# sent.
sub trio
{
	my ($id, $started, $prefix, $what) = @_;
	$node->poll_query_until('postgres',
		qq{SELECT count(*) >= $started FROM wasend.send_queue WHERE campaign_id = $id AND status = 'sent'})
	  or die "campaign $id did not send $started rows";
	$node->safe_psql('postgres', qq{
		BEGIN;
		SELECT wasend.wasend_send(1, '${prefix}000', '{"type":"text","text":{"body":"p0"}}', 0);
		SELECT wasend.wasend_send(1, '${prefix}050', '{"type":"text","text":{"body":"p50"}}', 50);
		SELECT wasend.wasend_send(1, '${prefix}100', '{"type":"text","text":{"body":"p100"}}', 100);
		COMMIT;
	});
	ok($node->poll_query_until('postgres', qq{
		SELECT count(*) = 3 FROM wasend.send_queue
		 WHERE recipient IN ('${prefix}000', '${prefix}050', '${prefix}100') AND status = 'sent'}),
		$what);
	return;
}

# busy_then_trio(NAME, ROWS, FIRST, STARTED, PREFIX, WHAT): busy_campaign,
# then trio once STARTED of its rows are sent.  Returns the campaign's id.
sub busy_then_trio
{
	my ($name, $rows, $first, $started, $prefix, $what) = @_;
	my $id = busy_campaign($name, $rows, $first);
	trio($id, $started, $prefix, $what);
	return $id;
}

# --- 2. priority messages take the next slot of a busy number
# Whether there is a queue to jump depends on what the sender holds when
# the three are claimed: rows it claimed before, waiting in its queue for
# the number's rate.  A trigger on the claim of a wasend_send row runs in
# the sender, in the claim's statement, and notes that: the rows the
# sender holds that are not in flight (wasend_worker_stats), all of the
# campaign's (the trio's own rows are queued after the claim commits).
$node->safe_psql('postgres', q{
	CREATE TABLE lane_claims (recipient text, waiting int);
	CREATE FUNCTION note_lane_claim() RETURNS trigger LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp AS $$
	BEGIN
		INSERT INTO public.lane_claims
		SELECT NEW.recipient, s.held - s.in_flight
		  FROM wasend.wasend_worker_stats() s WHERE s.pid = pg_backend_pid();
		RETURN NULL;
	END $$;
	CREATE TRIGGER note_lane_claim AFTER UPDATE ON wasend.send_queue FOR EACH ROW
	 WHEN (NEW.priority IS NOT NULL AND NEW.status = 'sending' AND OLD.status <> 'sending')
	 EXECUTE FUNCTION note_lane_claim();
});
my $bulk = busy_campaign('bulk', 400, 15550273000);
my ($p, $waiting);
for my $try (1 .. 3)
{
	# a sender that claimed just in time holds nothing to jump: again,
	# with new recipients, further on in the same campaign
	$p = $try == 1 ? '15550279' : "1555029$try";
	trio($bulk, 60 * $try, $p, 'the three priority messages are sent');
	$waiting = $node->safe_psql('postgres',
		qq{SELECT coalesce(max(waiting), 0) FROM lane_claims WHERE recipient = '${p}100'});
	last if $waiting > 0;
	diag("try $try: the sender held no campaign row waiting when the three were claimed");
}
$node->safe_psql('postgres', q{DROP TRIGGER note_lane_claim ON wasend.send_queue});
cmp_ok($waiting, '>', 0,
	'the sender held campaign rows waiting for the rate when the three were claimed');
# every row claimed before them has reached the mock once it is recorded
# sent (the mock logs a request before it answers): only then is the
# mock's log read, or the rows that went after them would not be in it
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 0 FROM wasend.send_queue
	 WHERE campaign_id = $bulk AND status = 'sending'
	   AND claimed_at < (SELECT claimed_at FROM wasend.send_queue WHERE recipient = '${p}100')}),
	'the campaign rows claimed before them are all sent');
WasendTest::load_mock_log($node, $mock);
$node->safe_psql('postgres', q{
	CREATE TABLE arr AS
	SELECT m.recipient, m.t_ms, row_number() OVER (ORDER BY m.t_ms, m.recipient) AS k
	  FROM mocklog m WHERE m.phone_number_id = '27001' AND m.http_status = 200;
});
is($node->safe_psql('postgres', qq{
	SELECT string_agg(recipient, ',' ORDER BY k) FROM arr
	 WHERE recipient IN ('${p}000', '${p}050', '${p}100')}),
	"${p}100,${p}050,${p}000", 'they reached the API highest priority first');
is($node->safe_psql('postgres', qq{
	SELECT max(k) - min(k) FROM arr
	 WHERE recipient IN ('${p}000', '${p}050', '${p}100')}),
	'2', 'back to back: no campaign row between them');
# each row the sender held waiting went after them; rows in flight when
# they were claimed may arrive after them too
my $jumped = $node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.send_queue q JOIN arr a ON a.recipient = q.recipient
	 WHERE q.campaign_id = $bulk
	   AND q.claimed_at < (SELECT claimed_at FROM wasend.send_queue WHERE recipient = '${p}100')
	   AND a.k > (SELECT k FROM arr WHERE recipient = '${p}100')});
cmp_ok($jumped, '>=', $waiting,
	"every campaign row the sender held waiting when they were claimed was sent after them (they jumped the queue: $jumped rows, $waiting waiting)");

# --- 2b. a lane claim smaller than what was committed together still
# takes the highest priority first.  wasend.max_inflight = 2 leaves the
# lane at most one row a claim while a campaign asks too (half the budget),
# so the three rows are claimed one by one: the database's own claim times
# show the order, whatever the machine's speed.  (Seen under a busy CPU
# before the claim ordered a lane by priority: 0, 50, 100 in id order.)
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.max_inflight = 2});
$node->safe_psql('postgres', q{SELECT pg_reload_conf()});
my $bulk2 = busy_then_trio('bulk2', 100, 15550276000, 10, '15550278',
	'a tight budget: the three priority messages are sent');
is($node->safe_psql('postgres', q{
	SELECT count(DISTINCT claimed_at) || ' claims: ' || string_agg(recipient, ',' ORDER BY claimed_at, priority DESC)
	  FROM wasend.send_queue WHERE recipient IN ('15550278000', '15550278050', '15550278100')}),
	'3 claims: 15550278100,15550278050,15550278000',
	'a tight budget: claimed one at a time, highest priority first');
ok($node->poll_query_until('postgres',
	qq{SELECT status = 'completed' FROM wasend.campaigns WHERE id = $bulk2}),
	'a tight budget: the campaign completes');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET wasend.max_inflight});
$node->safe_psql('postgres', q{SELECT pg_reload_conf()});

# --- 3. a higher-priority campaign goes first
my $high = $camp->('high', 3, 'priority => 10');
my $low = $camp->('low', 3);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_enqueue($high, array_agg((15550274000 + g)::text)) FROM generate_series(1, 120) g;
	SELECT wasend.wasend_enqueue($low, array_agg((15550275000 + g)::text)) FROM generate_series(1, 60) g;
	BEGIN;
	SELECT wasend.wasend_start_campaign($low);
	SELECT wasend.wasend_start_campaign($high);
	COMMIT;
});
ok($node->poll_query_until('postgres',
		qq{SELECT bool_and(status = 'completed') FROM wasend.campaigns WHERE id IN ($high, $low)}),
	'both campaigns complete');
is($node->safe_psql('postgres', qq{
	SELECT (SELECT min(claimed_at) FROM wasend.send_queue WHERE campaign_id = $low)
	    >= (SELECT max(claimed_at) FROM wasend.send_queue WHERE campaign_id = $high)}),
	't', 'no row of the priority-0 campaign was claimed before the last of the priority-10 one');

# --- 4. equal priority shares the rate
my $sa = $camp->('share a', 2);
my $sb = $camp->('share b', 2);
$node->safe_psql('postgres', qq{
	SELECT wasend.wasend_enqueue($sa, array_agg((15550276000 + g)::text)) FROM generate_series(1, 150) g;
	SELECT wasend.wasend_enqueue($sb, array_agg((15550277000 + g)::text)) FROM generate_series(1, 150) g;
	BEGIN;
	SELECT wasend.wasend_start_campaign($sa);
	SELECT wasend.wasend_start_campaign($sb);
	COMMIT;
});
ok($node->poll_query_until('postgres',
		qq{SELECT bool_and(status = 'completed') FROM wasend.campaigns WHERE id IN ($sa, $sb)}),
	'both equal campaigns complete');
WasendTest::load_mock_log($node, $mock);
my ($na, $nb) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE recipient LIKE '15550276%'),
	       count(*) FILTER (WHERE recipient LIKE '15550277%')
	  FROM (SELECT recipient FROM mocklog
	         WHERE phone_number_id = '27002' AND http_status = 200
	           AND (recipient LIKE '15550276%' OR recipient LIKE '15550277%')
	         ORDER BY t_ms LIMIT 100) f});
ok($na >= 35 && $na <= 65 && $na + $nb == 100,
	"equal priorities share the rate: first 100 messages $na / $nb");

# --- every request once, and no number above its rate
my $a = WasendTest::account($node, 'mocklog');
is($a->{duplicates}, 0, 'no message was sent twice');
my $max = $node->safe_psql('postgres', WasendTest::max_window_sql('mocklog'));
for my $line (split /\n/, $max)
{
	my ($pnid, $n) = split /\|/, $line;
	cmp_ok($n, '<=', 20, "number $pnid never above 20 messages in any second ($n)");
}
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog WHERE recipient = '15550270002'}), '0',
	'the rolled-back message never reached the API');

# --- 5. bad input
my ($ret, $out, $err);
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wasend.wasend_send(1, '15550270009', '{"type":"text","text":{"body":"x"}}', 101)});
like($err, qr/priority must be between 0 and 100, not 101/, 'priority out of range refused');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wasend.wasend_send(99, '15550270009', '{"type":"text","text":{"body":"x"}}')});
like($err, qr/number 99 does not exist/, 'unknown number refused');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wasend.wasend_send(1, 'call me', '{"type":"text","text":{"body":"x"}}')});
like($err, qr/invalid recipient "call me"/, 'invalid recipient refused');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wasend.wasend_send(1, '15550270009', '{"text":"no type"}')});
like($err, qr/message/, 'a message without a type refused');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT wasend.wasend_cancel_campaign((SELECT id FROM wasend.campaigns WHERE kind = 'transactional' AND number_id = 1))});
like($err, qr/it is the transactional lane of its number/, 'the lane cannot be cancelled');
my $draft = $camp->('draft', 1);
($ret, $out, $err) = $node->psql('postgres',
	qq{INSERT INTO wasend.send_queue (campaign_id, recipient, priority) VALUES ($draft, '15550270010', 5)});
like($err, qr/only rows of a transactional campaign have a priority/, 'a campaign row with a priority refused');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE recipient IN ('15550270009', '15550270010')}),
	'0', 'nothing was queued by the refused calls');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
