# 005_standby.pl — senders run only on a primary.
#
# A streaming standby of a primary with a running campaign starts no wasend
# worker (the launcher is registered to start only once recovery has
# finished) and sends nothing; once promoted, it starts its launcher and
# senders by itself and finishes the campaign.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '5001' => { token => 'tok', rate => 50 } },
});
# the primary points at a closed port: it must not send either, so that
# only the promoted standby's requests reach the mock
my $dead = { url => 'http://127.0.0.1:9/v21.0' };
my $primary = WasendTest::new_node('primary', $dead,
	init => { allows_streaming => 1 }, 'wasend.workers' => 0);
$primary->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('5001', 'tok', 50);
	SELECT wasend.wasend_create_campaign('failover', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15590000000 + g)::text)) FROM generate_series(1, 60) g;
	SELECT wasend.wasend_start_campaign(1);
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf',
	"wasend.workers = 2\nwasend.api_base_url = '$mock->{url}'\n");
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', q{SELECT pg_is_in_recovery()}), 't', 'standby is in recovery');
is($standby->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'wasend%'}),
	'0', 'no wasend worker runs on the standby');
is($standby->safe_psql('postgres', q{SELECT status FROM wasend.campaigns WHERE id = 1}),
	'running', 'the standby sees the running campaign');

$standby->promote;
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type LIKE 'wasend%'}),
	'after promotion the launcher, the supervisor and two senders start');
ok( $standby->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the promoted standby finishes the campaign');
is(WasendTest::mock_stats($mock)->{requests}, 60, 'exactly the campaign\'s 60 messages were sent');
is(WasendTest::mock_stats($mock)->{by_status}{200}, 60, 'all accepted');

WasendTest::stop_mock($mock);
$standby->stop;
$primary->stop;
done_testing();
