# 052_stale_pause.pl — a number paused by 190 (its token expired) is
# resumed with a new token while answers to requests sent with the old one
# are still on their way.  Those late 190s must not pause it again: the
# rows they answer go back to ready and are sent with the new token.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

# answers take 1.5 s, so at the first 190 about 1.5 s of requests sent
# with the old token are still in flight
my $mock = WasendTest::start_mock({ latency_ms => 1500, jitter_ms => 0,
	numbers => { '5201' => { token => 'new-token', rate => 50 } } });
my $node = WasendTest::new_node('stale', $mock, 'wasend.workers' => 1);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('5201', 'old-token', 50);
	SELECT wasend.wasend_create_campaign('stale', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15552010000 + g)::text)) FROM generate_series(1, 200) g;
});
my $off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
ok($node->poll_query_until('postgres',
		q{SELECT status = 'paused' FROM wasend.whatsapp_numbers WHERE id = 1}, 't'),
	'the first 190 pauses the number');
# resume at once: requests sent with the old token are still in flight
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1, 'new-token')});
my $resumed_at = -s $node->logfile;

ok( $node->poll_query_until('postgres',
		q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes with the new token');
my $after = slurp_file($node->logfile, $resumed_at);
my $late = () = $after =~ /wasend number 5201 paused by error 190/g;
is($late, 0, 'no late 190 paused the number again after the resume');
is($node->safe_psql('postgres', q{SELECT status FROM wasend.whatsapp_numbers WHERE id = 1}),
	'active', 'the number is active');
is($node->safe_psql('postgres',
		q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
		    FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s}),
	'sent=200', 'every row sent, none failed');
WasendTest::load_mock_log($node, $mock, 'mocklog', from_file => 1);
cmp_ok($node->safe_psql('postgres',
		q{SELECT count(*) FROM mocklog WHERE http_status <> 200}), '>=', 2,
	'more than one request was answered 190 (some arrived after the resume)');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
