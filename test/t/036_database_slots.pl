# 036_database_slots.pl — the launcher's database slots (shared memory,
# WASEND_MAX_DATABASES = 256) cannot be filled by a role that may create
# databases.
#
# A role with CREATEDB (no superuser, no wasend role) creates 300 empty
# databases, more than there are slots, and then a superuser creates a
# database with the extension.  Proves: only databases that have the
# extension (and those being looked at) hold a slot, so the real database
# gets its supervisor and senders and its campaign completes; the log never
# says that it was not looked at; and the empty databases got no sender.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $fillers = 300;

my $mock = WasendTest::start_mock({
	numbers => { '36001' => { token => 'tok-36001', rate => 50 } },
});
my $node = WasendTest::new_node('slots', $mock,
	'wasend.limits_refresh_interval' => 0);

$node->safe_psql('postgres', q{CREATE ROLE creator LOGIN CREATEDB});
my $t0 = time;
# FILE_COPY: a copy of template0's files, not its WAL, so 300 are quick
$node->safe_psql('postgres', "SET ROLE creator;\n" . join('',
	map { "CREATE DATABASE filler_$_ TEMPLATE template0 STRATEGY FILE_COPY;\n" } 1 .. $fillers));
note(sprintf('%d databases created by a CREATEDB role in %.1f s', $fillers, time - $t0));
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname LIKE 'filler\_%'}),
	$fillers, "a CREATEDB role made $fillers empty databases");

# the real database, after them
$node->safe_psql('postgres', q{CREATE DATABASE real_app});
$node->safe_psql('real_app', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('36001', 'tok-36001', 50);
	SELECT wasend.wasend_create_campaign('real', 1, '{"type":"text","text":{"body":"r"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15550360000 + g)::text)) FROM generate_series(1, 5) g;
	SELECT wasend.wasend_start_campaign(1);
});
ok($node->poll_query_until('real_app', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the database with the extension gets its senders and its campaign completes');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%' AND datname = 'real_app'}),
	'it has its two senders');
ok(!$node->log_contains(qr/"real_app" is not looked at/), 'the log never says it was not looked at');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE (backend_type LIKE 'wasend sender%' OR backend_type = 'wasend supervisor') AND datname LIKE 'filler\_%'}),
	'0', 'no empty database has a supervisor or a sender');

# immediate: a clean shutdown's checkpoint of 300 databases' files takes
# minutes on a busy machine, and proves nothing here
$node->stop('immediate');
done_testing();
