# 004_pg_cron.pl — a campaign started by a pg_cron job.
#
# The recipe from the README: cron.schedule() runs
# SELECT wasend.wasend_start_campaign(...) and the senders do the rest.  pg_cron
# 1.4 (Debian's postgresql-15-cron) schedules by the minute, so this test
# waits (bounded) for the next minute boundary.  Skipped where pg_cron is
# not installed for the PostgreSQL under test (the pg_config in PATH, whose
# binaries the nodes run): test/pg18.sh builds PostgreSQL 18 without it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my ($version, $pkglibdir, $sharedir) = map { chomp; $_ }
  map { `pg_config $_` } qw(--version --pkglibdir --sharedir);
plan skip_all => "pg_cron is not installed for $version ($pkglibdir/pg_cron.so)"
  unless -f "$pkglibdir/pg_cron.so" && -f "$sharedir/extension/pg_cron.control";

my $mock = WasendTest::start_mock({
	numbers => { '4001' => { token => 'tok', rate => 80 } },
});
my $node = WasendTest::new_node('cron', $mock,
	shared_preload_libraries => "'wasend,pg_cron'",
	'cron.database_name' => "'postgres'",
	'cron.use_background_workers' => 'on');

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('4001', 'tok');
	SELECT wasend.wasend_create_campaign('from cron', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15580000000 + g)::text)) FROM generate_series(1, 40) g;
	SELECT cron.schedule('wasend-campaign-1', '* * * * *', 'SELECT wasend.wasend_start_campaign(1)');
});
is($node->safe_psql('postgres', q{SELECT status FROM wasend.campaigns WHERE id = 1}),
	'draft', 'campaign waits for its cron job');

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the cron job started the campaign and it completed');
$node->safe_psql('postgres', q{SELECT cron.unschedule('wasend-campaign-1')});

is($node->safe_psql('postgres', q{
	SELECT status, command FROM cron.job_run_details ORDER BY start_time LIMIT 1}),
	'succeeded|SELECT wasend.wasend_start_campaign(1)', 'cron ran wasend_start_campaign');

my $stats = WasendTest::mock_stats($mock);
is($stats->{requests}, 40, 'the mock received the campaign\'s 40 messages');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent' AND wa_message_id IS NOT NULL}),
	'40', 'all 40 rows sent');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
