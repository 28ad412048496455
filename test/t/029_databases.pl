# 029_databases.pl — senders run in every database that has the extension,
# not only in wasend.database (the webhook endpoint's database): a
# campaign started in another database must not stay 'running', 0%,
# forever, without a word in the log.
#
#  1. The extension created in a new database "app" (wasend.database left
#     at its default): a supervisor and senders start there without a
#     restart, and a campaign completes, every row sent once.
#  2. Both databases send from the same phone number at once: the rate
#     gate is shared per phone number, so the number's 20 msg/s holds
#     across the two (mock log), and every row goes once.
#  3. A database without the extension has no sender.
#  4. wasend.databases = 'postgres' stops app's senders (its campaign
#     waits, nothing lost); '*' brings them back and it completes.
#  5. A copy of app (CREATE DATABASE ... TEMPLATE app) has no sender
#     until wasend.wasend_enable_sending(): a staging copy must not message
#     app's recipients again, not even by wasend_test_send (an ERROR with
#     a hint, no request reaches the API); an extension of an older version has none
#     until it is updated; a role that does not own app cannot stop its
#     senders by trying to drop or rename it.
#  6. DROP DATABASE app works while its senders run (they are stopped
#     first), and DROP EXTENSION stops the senders of postgres.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '29001' => { token => 'tok-29001', rate => 20 } },
});
my $node = WasendTest::new_node('databases', $mock);
my $senders_in = sub {
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%' AND datname = '$db'});
};

my ($ret, $out, $err);

# --- 1. a new database, as a new user would
$node->safe_psql('postgres', q{CREATE DATABASE app; CREATE DATABASE other});
$node->safe_psql('app', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('29001', 'tok-29001', 20);
	SELECT wasend.wasend_create_campaign('in app', 1, '{"type":"text","text":{"body":"app"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15550291000 + g)::text)) FROM generate_series(1, 60) g;
	SELECT wasend.wasend_start_campaign(1);
});
is($node->safe_psql('postgres', q{SHOW wasend.database}), '', 'wasend.database is left at its default');
ok($node->poll_query_until('app', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign in app completes');
is($node->safe_psql('app', q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent'}), '60', 'all 60 sent');
is($senders_in->('app'), '2', 'app has its two senders');
like(slurp_file($node->logfile), qr/wasend supervisor started: 2 sender\(s\) in database "app"/,
	'the log says where senders run');

# --- 2. both databases, one phone number
$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('29001', 'tok-29001', 20);
	SELECT wasend.wasend_create_campaign('in postgres', 1, '{"type":"text","text":{"body":"pg"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15550292000 + g)::text)) FROM generate_series(1, 150) g;
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'no senders in postgres';
$node->safe_psql('app', q{
	SELECT wasend.wasend_create_campaign('in app 2', 1, '{"type":"text","text":{"body":"app"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15550293000 + g)::text)) FROM generate_series(1, 150) g;
});
# started as close together as two sessions allow
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
$node->safe_psql('app', q{SELECT wasend.wasend_start_campaign(2)});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign in postgres completes');
ok($node->poll_query_until('app', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'the second campaign in app completes');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient) FROM mocklog
	 WHERE http_status = 200 AND (recipient LIKE '15550292%' OR recipient LIKE '15550293%')}),
	'300|300', 'the mock saw each of the 300 rows once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE http_status <> 200}), '0',
	'no request was refused (no 130429)');
my ($pnid, $max) = split /\|/, $node->safe_psql('postgres', WasendTest::max_window_sql('mocklog'));
cmp_ok($max, '<=', 20, "the number never got more than 20 messages in a second from both databases ($max)");
# overlap: the two campaigns really sent at the same time
cmp_ok($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog a
	 WHERE a.recipient LIKE '15550292%'
	   AND a.t_ms BETWEEN (SELECT min(t_ms) FROM mocklog WHERE recipient LIKE '15550293%')
	                  AND (SELECT max(t_ms) FROM mocklog WHERE recipient LIKE '15550293%')}),
	'>', 20, 'the two databases sent at the same time');

# --- 3. no extension, no sender
is($senders_in->('other'), '0', 'a database without the extension has no sender');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE datname = 'other'}), '0', 'nor any wasend process');

# --- 4. wasend.databases
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.databases = 'postgres'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = 'app' AND backend_type LIKE 'wasend%'}),
	'app\'s supervisor and senders stop once it is not listed');
$node->safe_psql('app', q{
	SELECT wasend.wasend_create_campaign('waits', 1, '{"type":"text","text":{"body":"w"}}');
	SELECT wasend.wasend_enqueue(3, array_agg((15550294000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_start_campaign(3);
});
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('goes', 1, '{"type":"text","text":{"body":"g"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15550295000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_start_campaign(2);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'postgres still sends');
is($node->safe_psql('app', q{SELECT status, ready FROM wasend.campaign_progress WHERE campaign_id = 3}),
	'running|20', 'app\'s campaign waits, all 20 rows ready');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET wasend.databases; SELECT pg_reload_conf()});
ok($node->poll_query_until('app', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'listed again, app\'s campaign completes');

# --- 5. a copy of app sends nothing until an admin says so; nor does an
# extension of another version; a role that may not drop app cannot stop
# its senders by trying
my $app_supervisor = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend supervisor' AND datname = 'app'};
my $sup1 = $node->safe_psql('postgres', $app_supervisor);
$node->safe_psql('postgres', q{CREATE ROLE nobody LOGIN});
($ret, $out, $err) = $node->psql('postgres', q{SET ROLE nobody; DROP DATABASE app});
like($err, qr/must be owner of database app/, 'a role that does not own app cannot drop it');
($ret, $out, $err) = $node->psql('postgres', q{SET ROLE nobody; ALTER DATABASE app RENAME TO app_x});
like($err, qr/must be owner of database app/, 'nor rename it');
is($node->safe_psql('postgres', $app_supervisor), $sup1, 'and the attempts left app\'s supervisor alone');

$node->safe_psql('postgres', q{CREATE DATABASE app_copy TEMPLATE app});
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'wasend supervisor' AND datname = 'app'}),
	'app\'s supervisor is back after the copy');
$node->wait_for_log(qr/wasend sends nothing in database "app_copy": it is a copy of the database the extension was created in/);
is($senders_in->('app_copy'), '0', 'the copy has no sender');
is($node->safe_psql('app_copy', q{SELECT status, ready FROM wasend.campaign_progress WHERE campaign_id = 3}),
	'completed|0', 'the copy holds app\'s campaigns as they were');
$node->safe_psql('app_copy', q{
	SELECT wasend.wasend_create_campaign('copy', 1, '{"type":"text","text":{"body":"c"}}');
	SELECT wasend.wasend_enqueue(4, array_agg((15550297000 + g)::text)) FROM generate_series(1, 10) g;
	SELECT wasend.wasend_start_campaign(4);
});
my $requests = WasendTest::mock_stats($mock)->{requests};
($ret, $out, $err) = $node->psql('app_copy', q{SELECT wasend.wasend_test_send(4, '15550297099')});
like($err, qr/ERROR:  wasend sends nothing from database "app_copy": it is a copy of the database the extension was created in/,
	'a test send in the copy is an ERROR');
like($err, qr/HINT:  .*SELECT wasend\.wasend_enable_sending\(\)/, 'whose hint names wasend_enable_sending');
is(WasendTest::mock_stats($mock)->{requests}, $requests, 'and no request reached the API');
is($node->safe_psql('app_copy', q{SELECT wasend.wasend_enable_sending()}), 't', 'wasend_enable_sending: the copy may send now');
is($node->safe_psql('app_copy', q{
	SELECT wasend.wasend_test_send(4, '15550297099') #>> '{messages,0,id}' LIKE 'wamid.%'}),
	't', 'and a test send goes from it');
ok($node->poll_query_until('app_copy', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4}),
	'and its own campaign completes');
$node->safe_psql('postgres', q{DROP DATABASE app_copy});

$node->safe_psql('postgres', q{CREATE DATABASE old_version});
$node->safe_psql('old_version', q{CREATE EXTENSION wasend VERSION '0.3.0'});
$node->wait_for_log(qr/wasend sends nothing in database "old_version": the extension is version 0\.3\.0, the library 0\.6\.0/);
is($senders_in->('old_version'), '0', 'an extension of an older version has no sender (and no error loop)');
$node->safe_psql('old_version', q{ALTER EXTENSION wasend UPDATE});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%' AND datname = 'old_version'}),
	'updated, it gets its senders');
$node->safe_psql('postgres', q{DROP DATABASE old_version});

# --- 6. DROP DATABASE while it sends, DROP EXTENSION
$node->safe_psql('app', q{
	SELECT wasend.wasend_create_campaign('dropped', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(4, array_agg((15550296000 + g)::text)) FROM generate_series(1, 400) g;
	SELECT wasend.wasend_start_campaign(4);
});
$node->poll_query_until('app', q{SELECT count(*) > 0 FROM wasend.send_queue WHERE campaign_id = 4 AND status = 'sent'})
  or die 'app did not start sending';
($ret, $out, $err) = $node->psql('postgres', q{DROP DATABASE app});
is($ret, 0, 'DROP DATABASE app succeeds while its senders run') or diag($err);
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'app'}), '0', 'app is gone');
$node->safe_psql('postgres', q{DROP EXTENSION wasend CASCADE});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%' OR backend_type = 'wasend supervisor'}),
	'after DROP EXTENSION no supervisor or sender is left');
like(slurp_file($node->logfile), qr/the extension was dropped from database "postgres", its senders stop/,
	'the log says why they stopped');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
