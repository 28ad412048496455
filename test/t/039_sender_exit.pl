# 039_sender_exit.pl — a sender that exits gives its shared slot back, and
# the senders that follow share the numbers as before.
#
# A sender ends for ordinary reasons (pg_terminate_backend, a lower
# wasend.workers, a database going idle).  Its supervisor then frees the
# sender's slot and starts a new sender in a free one; the claim token of
# the dead sender stops being live, so that rows it left 'sending' are
# settled.  Here sender 2 is terminated three times: each time a new
# sender 2 starts, the senders stay in slots 1 and 2 (a leaked slot would
# put it in slot 3, 4, 5 — and 64 exits would leave no slot for any
# database), and afterwards campaigns on three numbers all complete (the
# senders split numbers by their ordinal among the database's live slots:
# a leaked slot counted there leaves some numbers to no sender).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'39001' => { token => 'tok-39001', rate => 100 },
		'39002' => { token => 'tok-39002', rate => 100 },
		'39003' => { token => 'tok-39003', rate => 100 },
	},
});
my $node = WasendTest::new_node('sender_exit', $mock);
$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('39001', 'tok-39001', 100);
	SELECT wasend.wasend_add_number('39002', 'tok-39002', 100);
	SELECT wasend.wasend_add_number('39003', 'tok-39003', 100);
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';

my $slots = q{SELECT string_agg(sender::text, ',' ORDER BY sender) FROM wasend.wasend_worker_stats()};
is($node->safe_psql('postgres', $slots), '1,2', 'two senders, in slots 1 and 2');

for my $round (1 .. 3)
{
	my $old = $node->safe_psql('postgres',
		q{SELECT pid FROM wasend.wasend_worker_stats() ORDER BY sender DESC LIMIT 1});
	$node->safe_psql('postgres', qq{SELECT pg_terminate_backend($old)});
	ok($node->poll_query_until('postgres', qq{
		SELECT count(*) = 2 AND bool_and(pid <> $old) FROM wasend.wasend_worker_stats()}),
		"round $round: a new sender replaced the terminated one");
	is($node->safe_psql('postgres', $slots), '1,2',
		"round $round: the senders are still in slots 1 and 2");
}

# every number is some sender's: campaigns on all three complete
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('c' || n, n, '{"type":"text","text":{"body":"x"}}')
	  FROM generate_series(1, 3) n;
	SELECT wasend.wasend_enqueue(c.id, array_agg((15539000000 + c.id * 1000 + g)::text))
	  FROM wasend.campaigns c, generate_series(1, 50) g WHERE c.kind = 'campaign' GROUP BY c.id;
	SELECT wasend.wasend_start_campaign(id) FROM wasend.campaigns WHERE kind = 'campaign';
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'completed') = 3 FROM wasend.campaigns WHERE kind = 'campaign'}),
	'campaigns on all three numbers completed');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FROM wasend.send_queue}),
	'150/150', 'every row sent');

$node->stop;
done_testing();
