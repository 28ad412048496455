# 019_clock_step.pl — a step of the wall clock neither stalls the senders
# nor makes a live sender's rows look orphaned.
#
# The server runs under libfaketime (Debian's faketime), which fakes the
# wall clock only (FAKETIME_DONT_FAKE_MONOTONIC=1) and reads its offset from
# a file on every call, so the test can step the clock of every server
# process at once.  Mid-campaign the wall clock steps back one hour; then
# a sender is made to exit, so that the database's supervisor settles
# orphans while the other sender still has rows in flight.
#
# Pacing and deadlines use CLOCK_MONOTONIC (a rate gate paced by the wall
# clock would find its next slot an hour ahead and stall every number),
# and a row belongs to a live sender by the random claim token drawn at
# that sender's start (were ownership "claimed after the sender started",
# the rows the living sender claimed after the step would be taken for
# orphans and sent again).  Expected: the campaign completes; no recipient
# is accepted twice; no row became uncertain; the number's rate held.
use strict;
use warnings;

use Cwd;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $lib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
plan skip_all => "libfaketime not installed ($lib)" unless -f $lib;

my $rate = 100;
my $mock = WasendTest::start_mock({ numbers => { '19001' => { token => 'tok-19001', rate => $rate } } });

my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
my $offset_file = "$dir/faketime";
sub set_offset
{
	open my $fh, '>', $offset_file or die $!;
	print $fh "$_[0]\n";
	close $fh;
}
set_offset('+0');
{
	# only the server gets the fake clock (psql inherits it too: harmless)
	local $ENV{LD_PRELOAD} = $lib;
	local $ENV{FAKETIME_TIMESTAMP_FILE} = $offset_file;
	local $ENV{FAKETIME_NO_CACHE} = '1';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = '1';
	local $ENV{FAKETIME_DONT_RESET} = '1';
	our $node = WasendTest::new_node('clock', $mock);
}
our $node;

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('19001', 'tok-19001', 100);
	SELECT wasend.wasend_create_campaign('clock', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15519000000 + g)::text)) FROM generate_series(1, 800) g;
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';
$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(1)');
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 200 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'campaign did not send';

# the wall clock of every server process steps back one hour
my $before = $node->safe_psql('postgres', q{SELECT extract(epoch FROM clock_timestamp())::bigint});
set_offset('-1h');
my $after = $node->safe_psql('postgres', q{SELECT extract(epoch FROM clock_timestamp())::bigint});
cmp_ok($before - $after, '>=', 3500, 'the server\'s wall clock stepped back an hour');

# progress after the step: the gate is not stalled
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 400 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'the senders stalled after the clock step';
# a sender exits while the other sends: the supervisor settles orphans now
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'wasend sender 2'});
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes after the clock step');

WasendTest::load_mock_log($node, $mock);
my $a = WasendTest::account($node, 'mocklog');
is($a->{by_status}, 'sent=800', 'all 800 rows sent');
is($a->{duplicates}, 0, 'no recipient accepted twice');
is($a->{uncertain}, 0, 'no row of a live sender was taken for an orphan');
# the mock stamps with the real clock: the rate held across the step
my (undef, $peak) = split /\|/, $node->safe_psql('postgres', WasendTest::max_window_sql('mocklog'));
cmp_ok($peak, '<=', $rate, "at most $rate requests in any second of the mock's clock ($peak)");

set_offset('+0');
WasendTest::stop_mock($mock);
$node->stop;
done_testing();
