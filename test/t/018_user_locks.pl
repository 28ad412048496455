# 018_user_locks.pl — a user's open transaction never makes a sender wait,
# and never strands a row.
#
# 1. A campaign is completed only when nothing is left, also while a
# session is adding rows to it.  wasend.wasend_enqueue() holds a share lock
# on the campaign until its transaction ends; the window is made
# deterministic: the session holds the lock, uncommitted, while the senders
# drain the campaign and try to complete it.  The senders must skip the
# locked campaign (never wait on it, never complete it blindly); once the
# session commits, its rows are sent and the campaign completes: 0 rows
# stranded.  Three rounds.
#
# 2. An answer that pauses the number (131048) arrives while a user holds
# the number's row locked (FOR UPDATE) for longer than
# wasend.request_timeout_ms.  The pause is skipped (the next such answer
# pauses the number) and the sender goes on, driving curl meanwhile: a
# record statement that waited on the lock would leave the answers that
# had arrived to fail as timeouts and be sent again.  0 timeouts, 0
# duplicate sends, every row sent once.
#
# 3. A user holds a row that is 'sending' (its answer is held back by the
# mock until the lock is taken): the other 199 rows of the campaign are
# recorded meanwhile (one locked row does not keep its whole batch, nor
# the answers after it, from being recorded), and the held row is
# recorded once the user commits.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'18001' => { token => 'tok-18001', rate => 200 },
		'18002' => { token => 'tok-18002', rate => 100 },
		'18003' => { token => 'tok-18003', rate => 100 },
	},
	latency_ms => 300,
	rules => [
		{ to => '^15591000150$', code => 131048, times => 1 },
		{ to => '^15592000010$', action => 'hold', times => 1 },
	],
});
my $node = WasendTest::new_node('locks', $mock,
	'wasend.request_timeout_ms' => 1000);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('18001', 'tok-18001', 200);
	SELECT wasend.wasend_add_number('18002', 'tok-18002', 100);
	SELECT wasend.wasend_add_number('18003', 'tok-18003', 100);
	UPDATE wasend.error_policy SET pause_for = '1 second' WHERE code = '131048';
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';

# a sender waiting on a heavyweight lock, as pg_stat_activity shows it
my $sender_waits = q{
	EXISTS (SELECT 1 FROM pg_stat_activity
	         WHERE backend_type LIKE 'wasend sender%' AND wait_event_type = 'Lock')};

# --- 1. completion while rows are being added
for my $round (1 .. 3)
{
	$node->safe_psql('postgres', q{SELECT wasend.wasend_pause_number(1, 'test: hold')});
	my $c = $node->safe_psql('postgres', qq{
		SELECT wasend.wasend_create_campaign('round $round', 1, '{"type":"text","text":{"body":"x"}}')});
	my $base = 15590000000 + $round * 1000;
	$node->safe_psql('postgres', qq{
		SELECT wasend.wasend_enqueue($c, array_agg(($base + g)::text)) FROM generate_series(1, 20) g;
		SELECT wasend.wasend_start_campaign($c);});

	# a session adds 5 rows and keeps its transaction open
	my $log_offset = -s $node->logfile;
	my $s = $node->background_psql('postgres');
	$s->query_safe(qq{BEGIN; SELECT wasend.wasend_enqueue($c, array_agg(($base + 100 + g)::text)) FROM generate_series(1, 5) g;});

	# the number sends the 20 committed rows; the campaign runs dry and a
	# sender tries to complete it while the session holds it
	$node->safe_psql('postgres', 'SELECT wasend.wasend_resume_number(1)');
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(*) = 20 FROM wasend.send_queue WHERE campaign_id = $c AND status = 'sent'}),
		"round $round: the 20 committed rows are sent");
	my $seen = 0;
	for (1 .. 1800)
	{
		my $log = substr(slurp_file($node->logfile), $log_offset);
		if ($log =~ /campaign $c has nothing left to send but is locked by another session/
			|| $node->safe_psql('postgres', "SELECT $sender_waits") eq 't')
		{
			$seen = 1;
			last;
		}
		usleep(100_000);
	}
	ok($seen, "round $round: a sender tried to complete the campaign while the session held it");
	is($node->safe_psql('postgres', "SELECT $sender_waits"), 'f',
		"round $round: no sender waits on the session's lock");
	is($node->safe_psql('postgres', "SELECT status FROM wasend.campaigns WHERE id = $c"),
		'running', "round $round: the campaign is not completed under the session's feet");

	$s->query_safe('COMMIT');
	$s->quit;
	ok( $node->poll_query_until('postgres',
			"SELECT status = 'completed' FROM wasend.campaigns WHERE id = $c"),
		"round $round: the campaign completes after the session commits");
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status IN ('ready', 'sending'))
		  FROM wasend.send_queue WHERE campaign_id = $c}),
		'25|0', "round $round: all 25 rows sent, 0 stranded");
}

# --- 2. a pause from an answer while a user holds the number locked
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('locked number', 2, '{"type":"text","text":{"body":"y"}}');
	SELECT wasend.wasend_enqueue(4, array_agg((15591000000 + g)::text)) FROM generate_series(1, 300) g;});
my $u = $node->background_psql('postgres');
$u->query_safe('BEGIN; SELECT 1 FROM wasend.whatsapp_numbers WHERE id = 2 FOR UPDATE;');
$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(4)');

# hold the lock until the 131048 answer was handled and 100 more rows
# went out, or until a sender has waited on it for 3 s (3 request
# timeouts: the failure this test catches)
ok( $node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 4 AND status = 'sent') >= 250
		    OR EXISTS (SELECT 1 FROM pg_stat_activity
		                WHERE backend_type LIKE 'wasend sender%' AND wait_event_type = 'Lock'
		                  AND now() - query_start > interval '3 seconds')}),
	'the campaign goes on while the number is locked');
is($node->safe_psql('postgres', "SELECT $sender_waits"), 'f', 'no sender waits on the lock');
$u->query_safe('COMMIT');
$u->quit;
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4}),
	'the campaign completes');

# --- 3. a user holds a row that is being sent: only that row's record waits
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('locked row', 3, '{"type":"text","text":{"body":"z"}}');
	SELECT wasend.wasend_enqueue(5, array_agg((15592000000 + g)::text)) FROM generate_series(1, 200) g;
	ALTER SYSTEM SET wasend.request_timeout_ms = '60s';
	SELECT pg_reload_conf();
	SELECT wasend.wasend_start_campaign(5);});
# the mock holds the answer to 15592000010 until told; meanwhile the row is
# 'sending', and a user locks it
my $held = 0;
for (1 .. 1800)
{
	$held = 1, last if WasendTest::mock_get($mock, '/__mock/held') =~ /"held":1/;
	usleep(100_000);
}
ok($held && $node->safe_psql('postgres', q{
		SELECT status FROM wasend.send_queue WHERE recipient = '15592000010'}) eq 'sending',
	'the held row is sending, its request held by the mock');
my $r = $node->background_psql('postgres');
$r->query_safe(q{BEGIN; SELECT 1 FROM wasend.send_queue WHERE recipient = '15592000010' FOR UPDATE;});
WasendTest::mock_post($mock, '/__mock/release');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 199 FROM wasend.send_queue
		 WHERE campaign_id = 5 AND status = 'sent' AND recipient <> '15592000010'}),
	'while the user holds one sending row, the 199 others are recorded sent');
is($node->safe_psql('postgres', q{
	SELECT status FROM wasend.send_queue WHERE recipient = '15592000010'}),
	'sending', 'the held row waits for the user, still sending');
$r->query_safe('COMMIT');
$r->quit;
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 5}),
	'once the user commits, its answer is recorded and the campaign completes');
is($node->safe_psql('postgres', q{
	SELECT status || ':' || attempts FROM wasend.send_queue WHERE recipient = '15592000010'}),
	'sent:1', 'the held row is sent, at its first attempt');

WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE http_status = 200), count(DISTINCT recipient) FILTER (WHERE http_status = 200),
	       count(*) FILTER (WHERE code = '131048')
	  FROM mocklog WHERE recipient LIKE '1559100%'}),
	'300|300|1', '300 recipients accepted once each; the 131048 answered once');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue
	 WHERE campaign_id = 4 AND (status <> 'sent' OR last_error_class = 'timeout' OR attempts <> 1)}),
	'0', 'no row timed out or was sent twice: every row sent at its first attempt');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient) FROM mocklog WHERE recipient LIKE '1559200%' AND http_status = 200}),
	'200|200', 'the locked-row campaign: 200 recipients accepted once each');
my $a = WasendTest::account($node, 'mocklog');
is($a->{duplicates}, 0, '0 duplicate sends in the whole run');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
