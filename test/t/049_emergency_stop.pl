# 049_emergency_stop.pl — the emergency stop of every sender of the server:
# ALTER SYSTEM SET wasend.workers = 0 and a reload.  The senders finish the
# requests in flight, record them and give back what they held, then exit;
# the rows not sent wait as ready (none stranded in sending, none
# uncertain).  Setting the workers back sends the rest, each row once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({ latency_ms => 100, jitter_ms => 50,
	numbers => { '9001' => { token => 'tok', rate => 50 } } });
my $node = WasendTest::new_node('estop', $mock, 'wasend.workers' => 2);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('9001', 'tok', 50);
	SELECT wasend.wasend_create_campaign('stop', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15590000000 + g)::text)) FROM generate_series(1, 600) g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 50 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'nothing sent';

$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.workers = 0; SELECT pg_reload_conf();});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type ~ '^wasend sender'}),
	'after workers = 0 and a reload no sender runs');
is($node->safe_psql('postgres',
		q{SELECT count(*) FILTER (WHERE status = 'sending') || ' sending, '
		      || count(*) FILTER (WHERE uncertain) || ' uncertain, '
		      || (count(*) FILTER (WHERE status = 'ready') > 0)::text || ' some ready'
		    FROM wasend.send_queue}),
	'0 sending, 0 uncertain, true some ready',
	'the rows not sent wait as ready: none left sending, none uncertain');
WasendTest::load_mock_log($node, $mock, 'stoplog', from_file => 1);
is($node->safe_psql('postgres', q{SELECT count(*) FROM stoplog}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}),
	'every request the mock answered is recorded as sent');
is($node->safe_psql('postgres',
		q{SELECT status FROM wasend.campaigns WHERE id = 1}),
	'running', 'the campaign itself is still running');

$node->safe_psql('postgres', q{ALTER SYSTEM RESET wasend.workers; SELECT pg_reload_conf();});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'with the workers back the campaign completes');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, 'sent=600', 'all 600 rows sent');
is($a->{uncertain}, 0, 'no row uncertain');
is($a->{duplicates}, 0, 'no recipient got the message twice');
is($a->{requests}, 600, 'exactly one request per row');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
