# 016_many_numbers.pl — the rate gate paces any number of phone numbers.
#
# The gate has 256 entries in shared memory.  An entry whose number has not
# used it for a while, with no send pending, is given to a new number, and
# when every entry is busy a number waits for one, never an error (entries
# that were never freed would make every sender fail and restart in a loop
# from the 257th number used since the server started); whether an entry
# is in use is kept apart from its number id, so a number with id 0 is not
# taken for an empty entry.  300 numbers (one of them id 0) with 3 rows
# each: all 900 sent, each recipient once, number 0's rows among them, the
# senders never restarted, and no gate error in the log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({ default_rate => 80 });
my $node = WasendTest::new_node('numbers', $mock);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	INSERT INTO wasend.whatsapp_numbers (id, phone_number_id, access_token, max_send_rate_per_sec)
	VALUES (0, '16000', 'tok', 80);
	SELECT wasend.wasend_add_number((16000 + g)::text, 'tok', 80) FROM generate_series(1, 299) g;
	SELECT wasend.wasend_create_campaign('n' || n.id, n.id, '{"type":"text","text":{"body":"x"}}')
	  FROM wasend.whatsapp_numbers n ORDER BY n.id;
	INSERT INTO wasend.send_queue (campaign_id, recipient)
	SELECT c.id, (15516000000 + c.id * 10 + k)::text
	  FROM wasend.campaigns c CROSS JOIN generate_series(1, 3) k;
});
is($node->safe_psql('postgres', q{SELECT count(*), count(DISTINCT number_id) FROM wasend.campaigns}),
	'300|300', '300 campaigns on 300 numbers, one with id 0');
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';
my $pids_sql = q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type LIKE 'wasend sender%'};
my $pids = $node->safe_psql('postgres', $pids_sql);

$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(id) FROM wasend.campaigns});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 300 FROM wasend.campaigns WHERE status = 'completed'}),
	'all 300 campaigns complete');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}),
	'900', 'all 900 rows sent');
is($node->safe_psql('postgres', $pids_sql), $pids, 'the senders never restarted');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient), count(DISTINCT phone_number_id) FROM mocklog WHERE http_status = 200}),
	'900|900|300', '900 requests for 900 recipients from 300 numbers');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog m JOIN wasend.send_queue q USING (recipient)
	  JOIN wasend.campaigns c ON c.id = q.campaign_id
	 WHERE c.number_id = 0 AND m.phone_number_id = '16000'}),
	'3', 'number id 0 sent its 3 rows');
unlike(slurp_file($node->logfile), qr/rate gate is full/, 'no gate error');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
