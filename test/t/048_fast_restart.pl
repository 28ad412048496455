# 048_fast_restart.pl — PostgreSQL restarts in fast mode (pg_ctl restart,
# the default of a package's restart) mid-campaign.  The senders finish
# the requests in flight, record their answers and give back the rows they
# held before they exit: after the restart the campaign continues, and no
# row is uncertain, lost or sent twice.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({ latency_ms => 100, jitter_ms => 50,
	numbers => { '9001' => { token => 'tok', rate => 100 } } });
my $node = WasendTest::new_node('fast', $mock, 'wasend.workers' => 2);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('9001', 'tok', 100);
	SELECT wasend.wasend_create_campaign('restart', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15590000000 + g)::text)) FROM generate_series(1, 600) g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 150 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'nothing sent';
my $offset = -s $node->logfile;
$node->restart;		# fast mode
ok($node->log_contains(qr/wasend sender \d stopping \(0 requests abandoned, 0 answers unrecorded, 0 rows held\)/, $offset),
	'each sender stopped with nothing abandoned, unrecorded or held');
unlike(slurp_file($node->logfile, $offset), qr/wasend sender \d stopping \((?!0 requests abandoned, 0 answers unrecorded, 0 rows held)/,
	'no sender stopped with anything in hand');

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'after the fast restart the campaign continues and completes by itself');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, 'sent=600', 'all 600 rows sent');
is($a->{lost}, 0, '0 rows lost');
is($a->{uncertain}, 0, 'no row uncertain');
is($a->{duplicates}, 0, 'no recipient got the message twice');
is($a->{requests}, 600, 'exactly one request per row');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
