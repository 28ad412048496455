# 032_campaign_isolation.pl — one bad campaign row holds up only itself.
#
# Three campaigns and the transactional lane on one number.  A superuser,
# with the validation triggers switched off (session_replication_role =
# replica), plants in campaign A a send_timezone that is no time zone
# (a typo: 'America/Sao Paulo') and in campaign B, which has a send
# window in each recipient's zone, rows whose zone is no time zone: the
# first makes the senders' read of the running set fail, the second every
# claim that asks B for rows.
#
# Expected: campaign C on the same number completes and a wasend_send on
# the number's lane is sent, promptly; A and B send nothing, and
# campaign_progress.waiting says why for each; every sender logs the
# fault of A and of B at most once per back-off (5 s, doubling); once the
# rows are fixed, A and B resume and complete, and every recipient got
# exactly one message.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '32001' => { token => 'tok-32001', rate => 20 } },
});
my $node = WasendTest::new_node('isolation', $mock);

# poll($sql, $seconds): true once $sql returns 't', false after $seconds
# (errors count as not yet: the planted rows may break a query)
sub poll
{
	my ($sql, $seconds) = @_;
	my $until = time + $seconds;
	while (time < $until)
	{
		my ($ret, $out, $err) = $node->psql('postgres', $sql);
		return 1 if $ret == 0 && $out eq 't';
		select(undef, undef, undef, 0.2);
	}
	return 0;
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('32001', 'tok-32001', 20);
});
my %id;
for my $c (qw(a b c))
{
	my $window = $c eq 'a'
	  ? q{, send_window_start => '00:00', send_window_end => '23:59:59.999999', send_timezone => 'UTC'}
	  : '';
	$id{$c} = $node->safe_psql('postgres', qq{
		SELECT wasend.wasend_create_campaign('$c', 1, '{"type":"text","text":{"body":"$c"}}'$window)});
}
my %base = (a => 15553200100, b => 15553200200, c => 15553200300);
for my $c (qw(a b c))
{
	my $n = $c eq 'c' ? 10 : 5;
	$node->safe_psql('postgres', qq{
		SELECT wasend.wasend_enqueue($id{$c}, array_agg(($base{$c} + g)::text))
		  FROM generate_series(1, $n) g});
}

# start all three and plant the bad values in the same transaction, so
# that no sender sees A or B running with good values
$node->safe_psql('postgres', qq{
	BEGIN;
	SELECT wasend.wasend_start_campaign($id{a});
	SELECT wasend.wasend_start_campaign($id{b});
	SELECT wasend.wasend_start_campaign($id{c});
	SET LOCAL session_replication_role = replica;
	UPDATE wasend.campaigns SET send_timezone = 'America/Sao Paulo' WHERE id = $id{a};
	UPDATE wasend.campaigns SET send_window_start = '00:00', send_window_end = '23:59:59' WHERE id = $id{b};
	UPDATE wasend.send_queue SET timezone = 'Mars/Olympus_Mons' WHERE campaign_id = $id{b};
	COMMIT;
});
my $t0 = time;
my $lane_row = $node->safe_psql('postgres', q{
	SELECT wasend.wasend_send(1, '15553200901', '{"type":"text","text":{"body":"otp"}}')});

ok(poll(qq{SELECT status = 'completed' FROM wasend.campaigns WHERE id = $id{c}}, 60),
	'campaign C on the same number completes');
ok(poll(qq{SELECT status = 'sent' FROM wasend.send_queue WHERE id = $lane_row}, 30),
	'the wasend_send on the number\'s lane is sent');
is($node->safe_psql('postgres', qq{
	SELECT string_agg(c.name || ':' || (SELECT count(*) FROM wasend.send_queue q
	                                      WHERE q.campaign_id = c.id AND q.status = 'ready'), ',' ORDER BY c.name)
	  FROM wasend.campaigns c WHERE c.id IN ($id{a}, $id{b})}),
	'a:5,b:5', 'A and B sent nothing: all their rows are ready');

ok(poll(qq{SELECT waiting LIKE '%time zone%America/Sao Paulo%'
             FROM wasend.campaign_progress WHERE campaign_id = $id{a}}, 30),
	'campaign_progress.waiting says why A waits');
ok(poll(qq{SELECT waiting LIKE '%Mars/Olympus_Mons%'
             FROM wasend.campaign_progress WHERE campaign_id = $id{b}}, 30),
	'campaign_progress.waiting says why B waits');
note(($node->psql('postgres', q{SELECT campaign_id, status, waiting FROM wasend.campaign_progress ORDER BY 1}))[1]);

# watch the log for a while: each sender says it at most once a back-off
# (5 s, then 10 s, 20 s, ...), not at every refresh
ok(poll(sprintf(q{SELECT clock_timestamp() > to_timestamp(%f) + interval '16 seconds'}, $t0), 60),
	'16 s passed');
my $log = slurp_file($node->logfile);
my (%warn_a, %warn_b);
for my $line (split /\n/, $log)
{
	next unless $line =~ /\[(\d+)\].*WARNING/;
	my $pid = $1;
	$warn_a{$pid}++ if $line =~ m{America/Sao Paulo};
	$warn_b{$pid}++ if $line =~ m{Mars/Olympus_Mons};
}
note('warnings about A by pid: ' . join(', ', map { "$_=$warn_a{$_}" } sort keys %warn_a));
note('warnings about B by pid: ' . join(', ', map { "$_=$warn_b{$_}" } sort keys %warn_b));
ok(scalar(keys %warn_a) >= 1, 'the fault of A is logged');
ok(scalar(keys %warn_b) >= 1, 'the fault of B is logged');
# in about 16 s: tried at 0, 5 and 15 s
ok(!grep({ $_ > 3 } values %warn_a), 'each sender logs A at most once per back-off (at most 3 times in 16 s)');
ok(!grep({ $_ > 3 } values %warn_b), 'each sender logs B at most once per back-off (at most 3 times in 16 s)');

# fix both rows: they resume by themselves
$node->safe_psql('postgres', qq{
	UPDATE wasend.campaigns SET send_timezone = 'America/Sao_Paulo' WHERE id = $id{a};
	UPDATE wasend.send_queue SET timezone = NULL WHERE campaign_id = $id{b};
});
ok(poll(qq{SELECT bool_and(status = 'completed') FROM wasend.campaigns WHERE id IN ($id{a}, $id{b})}, 120),
	'once fixed, A and B resume and complete');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM wasend.campaign_progress
	 WHERE campaign_id IN ($id{a}, $id{b}) AND waiting <> ''}),
	'0', 'nothing says they wait any more');

WasendTest::wait_quiet($node);
WasendTest::load_mock_log($node, $mock, 'seen');
is($node->safe_psql('postgres', q{
	SELECT count(*) || '/' || count(DISTINCT recipient) FROM seen WHERE http_status = 200}),
	'21/21', 'every recipient got exactly one message (5 + 5 + 10 + the lane)');
is($node->safe_psql('postgres', q{
	SELECT string_agg(status || ':' || n, ',' ORDER BY status)
	  FROM (SELECT status, count(*) AS n FROM wasend.send_queue GROUP BY 1) s}),
	'sent:21', 'every row is sent');

$node->stop;
WasendTest::stop_mock($mock);
done_testing();
