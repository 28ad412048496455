# 040_record_cost.pl — what a sender reads after each record does not grow
# with the rows sent before.
#
# After recording a batch, a sender looks up waiting statuses for the
# wamids it just stored (the statement pending_recorded of src/queue.sql).
# It must read the batch's rows by their ids, whatever the statistics say:
# statistics taken when the rows were queued (no row had a wamid yet) once
# made the planner read every row sent so far through the wamid index, for
# every record, so that a sender's work per message grew with the
# campaign.  Here 10,000 rows are sent with the table's statistics taken
# before the sends (and autovacuum off for it, so that they stay), then the
# statement is planned as the senders plan it (a generic plan of a
# prepared statement) and run for a batch of 20 sent rows: it reads fewer
# than 300 buffers (the batch's rows and their index pages; reading the
# rows sent so far through the wamid index takes over 1,000).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '40001' => { token => 'tok-40001', rate => 1000 } },
});
my $node = WasendTest::new_node('record_cost', $mock);
$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('40001', 'tok-40001', 1000);
	SELECT wasend.wasend_create_campaign('cost', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15540000000 + g)::text)) FROM generate_series(1, 10000) g;
	ALTER TABLE wasend.send_queue SET (autovacuum_enabled = off);
	ANALYZE wasend.send_queue;
	SELECT wasend.wasend_start_campaign(1);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completed');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent' AND wa_message_id IS NOT NULL) FROM wasend.send_queue}),
	'10000', '10,000 rows sent, each with its wamid');

# the statement as the senders run it (src/queue_sql.awk makes their C
# strings from src/queue.sql)
my $root = $ENV{WASEND_ROOT};
my $stmt = `awk -v name=pending_recorded -f $root/src/queue_sql.awk $root/src/queue.sql`;
like($stmt, qr/_apply_pending_statuses/, 'the statement pending_recorded was read');
my $batch = $node->safe_psql('postgres', q{
	SELECT array_agg(id)::text FROM (SELECT id FROM wasend.send_queue ORDER BY id DESC LIMIT 20) b});
my $plan = $node->safe_psql('postgres', qq{
	SET plan_cache_mode = force_generic_plan;
	PREPARE pending_recorded(bigint[]) AS $stmt;
	EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE pending_recorded('$batch');
});
my $top = decode_json($plan)->[0]{Plan};
my $buffers = ($top->{'Shared Hit Blocks'} // 0) + ($top->{'Shared Read Blocks'} // 0);
cmp_ok($buffers, '<', 300,
	"after a batch of 20, the lookup of waiting statuses read $buffers buffers (under 300), not the rows sent before");

$node->stop;
done_testing();
