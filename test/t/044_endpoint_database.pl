# 044_endpoint_database.pl — which database the webhook endpoint stores
# into, with wasend.database left at its default (empty) and set.
#
# Proves: with the extension only in "shop" (not "postgres"), a signed POST
# is stored in shop and answered 200, and the log says where it stores;
# CREATE DATABASE shop_copy TEMPLATE shop and ALTER DATABASE shop RENAME
# succeed while the endpoint stores into shop (it lets go of the database
# and comes back), and it stores into shop again afterwards; the copy
# (which may not send) is not counted as a second database with the
# extension, also after a restart; once the extension is in postgres too,
# the connected endpoint keeps storing into shop and warns once; after a
# restart signed POSTs are answered 503 and the log names the setting and
# both databases; an explicitly set wasend.database stores there although two
# databases have the extension; when the extension is dropped from the
# database the setting names, POSTs are answered 503 and the log says
# `wasend is not installed in database "postgres" (wasend.database)` once
# for several POSTs; with the extension in no database, 503 and a warning
# naming the setting.  With one worker slot too few, a database whose
# supervisor never starts does not keep the endpoint waiting: it stores
# into the one database that was found with the extension.  No POST that
# was not stored is ever answered 200.
use strict;
use warnings;

use Cwd;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

use lib "$ENV{WASEND_ROOT}/test/lib";
use WasendTest;

my $secret = 'test-app-secret-' . int(rand(1e9));
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
sysopen(my $fh, "$sdir/app_secret", O_WRONLY | O_CREAT | O_TRUNC, 0600) or die $!;
print $fh "$secret\n";
close $fh;

my $mock = WasendTest::start_mock({ numbers => {} });
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('endpoint_db', $mock,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_port' => $port,
	'wasend.limits_refresh_interval' => 0);
my $url = "http://127.0.0.1:$port/webhook";
my $body_file = "$sdir/body.json";

# a signed POST of one inbound message with this text; returns "body code"
my $stored_200 = 0;
sub post
{
	my ($text) = @_;
	my $body = WasendTest::webhook_body(
		WasendTest::wh_inbound(from => '15550440001', phone_number_id => '4401', body => $text));
	open my $bf, '>', $body_file or die;
	print $bf $body;
	close $bf;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-s', '-o', '-', '-w', ' %{http_code}', '-X', 'POST',
		'-H', 'Content-Type: application/json',
		'-H', 'X-Hub-Signature-256: sha256=' . hmac_sha256_hex($body, $secret),
		'--data-binary', "\@$body_file", $url ], '>', \$out, '2>', \$err);
	return $out // '';
}

# post until the answer matches $re (the endpoint may still be starting);
# returns the last answer
sub post_until
{
	my ($text, $re) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	my $answer;
	while (time < $deadline)
	{
		$answer = post($text);
		return $answer if $answer =~ $re;
		usleep(200_000);
	}
	return $answer;
}

# how many messages with this text a database holds
sub stored
{
	my ($db, $text) = @_;
	return $node->safe_psql($db,
		"SELECT count(*) FROM wasend.inbound_messages WHERE body = '$text'");
}

sub count_log
{
	my ($re) = @_;
	my @m = (slurp_file($node->logfile) =~ /$re/g);
	return scalar @m;
}

# --- 1. the extension only in "shop", wasend.database left at its default
is($node->safe_psql('postgres', q{SHOW wasend.database}), '', 'wasend.database is empty by default');
$node->safe_psql('postgres', q{CREATE DATABASE shop});
$node->safe_psql('shop', q{CREATE EXTENSION wasend});
like(post_until('one', qr/ 200$/), qr/"messages_stored": 1.* 200$/,
	'a signed POST is answered 200 with the extension only in shop');
is(stored('shop', 'one'), '1', 'it is stored in shop');
ok($node->log_contains(
		qr/wasend webhook stores notifications in database "shop", the one that has the extension \(wasend.database is empty\)/),
	'the log says the endpoint stores into shop');

# --- 1b. commands that need shop to themselves work while the endpoint
# stores into it, and a copy of shop is not counted
my $offset = -s $node->logfile;
my ($rc, $out, $err) = $node->psql('postgres', q{CREATE DATABASE shop_copy TEMPLATE shop});
is($rc, 0, 'CREATE DATABASE shop_copy TEMPLATE shop succeeds while the endpoint stores into shop')
	or diag($err);
like(post_until('copied', qr/ 200$|databases have the extension/), qr/ 200$/,
	'afterwards a signed POST is answered 200');
is(stored('shop', 'copied'), '1', 'it is stored in shop');
($rc, $out, $err) = $node->psql('postgres', q{ALTER DATABASE shop RENAME TO shop_renamed});
is($rc, 0, 'ALTER DATABASE shop RENAME succeeds while the endpoint stores into shop') or diag($err);
($rc, $out, $err) = $node->psql('postgres', q{ALTER DATABASE shop_renamed RENAME TO shop});
is($rc, 0, 'and renaming it back succeeds') or diag($err);
like(post_until('renamed', qr/ 200$|databases have the extension/), qr/ 200$/,
	'afterwards a signed POST is answered 200');
is(stored('shop', 'renamed'), '1', 'it is stored in shop');
ok($node->wait_for_log(qr/wasend sends nothing in database "shop_copy": it is a copy/, $offset),
	'the copy sends nothing');
$offset = -s $node->logfile;
$node->restart;
like(post_until('copy-restart', qr/ 200$|databases have the extension/), qr/ 200$/,
	'after a restart, with shop and its copy, a signed POST is answered 200');
is(stored('shop', 'copy-restart'), '1', 'it is stored in shop');
ok(!$node->log_contains(qr/databases have the extension/, $offset),
	'the copy is not counted as a second database with the extension');

# --- 2. the extension in a second database: the connected endpoint keeps
# storing and warns once; after a restart, refused, the log names them
my $two_re = qr/WARNING:  wasend webhook stores nothing: 2 databases have the extension: set wasend.database to one of: postgres, shop/;
my $keep_re = qr/WARNING:  wasend webhook keeps storing notifications in database "shop", but 2 databases have the extension now: postgres, shop/;
$offset = -s $node->logfile;
$node->safe_psql('postgres', q{CREATE EXTENSION wasend});
ok($node->wait_for_log($keep_re, $offset), 'the log names both databases and the one it stores into');
my @answers = map { post("two-$_") } 1 .. 3;
is_deeply([ map { / (\d+)$/ ? $1 : $_ } @answers ], [ 200, 200, 200 ],
	'signed POSTs are still answered 200 once a second database has the extension');
is(stored('shop', 'two-1') . stored('shop', 'two-3') . stored('postgres', 'two-1'), '110',
	'they are stored in shop');
is(count_log($keep_re), 1, 'said once for three POSTs');
ok(!$node->log_contains($two_re, $offset), 'nothing is refused');

# --- at start-up, refused
$offset = -s $node->logfile;
$node->restart;
ok($node->wait_for_log($two_re, $offset), 'after a restart, the log names the setting and both databases');
like(post_until('three', qr/ 503$/), qr/set wasend.database to one of: postgres, shop 503$/,
	'after a restart, a signed POST is answered 503 with the reason');
is(stored('shop', 'three') + stored('postgres', 'three'), 0, 'nothing was stored');

# --- 3. an explicit wasend.database stores there, whatever the others have
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.database = 'shop'});
$node->restart;
like(post_until('four', qr/ 200$/), qr/ 200$/, 'with wasend.database = shop, a signed POST is answered 200');
is(stored('shop', 'four'), '1', 'it is stored in shop');

# --- 4. the extension dropped from the database the setting names
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.database = 'postgres'});
$node->restart;
like(post_until('five', qr/ 200$/), qr/ 200$/, 'with wasend.database = postgres, a signed POST is answered 200');
is(stored('postgres', 'five'), '1', 'it is stored in postgres');
$node->safe_psql('postgres', q{DROP EXTENSION wasend CASCADE});
my $absent_re = qr/WARNING:  wasend webhook stores nothing: wasend is not installed in database "postgres" \(wasend.database\)/;
@answers = map { post("six-$_") } 1 .. 3;
is_deeply([ map { / (\d+)$/ ? $1 : $_ } @answers ], [ 503, 503, 503 ],
	'once the extension is dropped there, signed POSTs are answered 503');
like($answers[0], qr/wasend is not installed in database "postgres" \(wasend.database\) 503$/, 'the answer says why');
is(count_log($absent_re), 1, 'the log says so once for three POSTs');

# --- 4b. wasend.database names no database (a typo): refused, said once,
# no FATAL loop; once the database exists with the extension, stored there
$node->safe_psql('postgres', q{ALTER SYSTEM SET wasend.database = 'shopp'});
$offset = -s $node->logfile;
$node->restart;
my $typo_re = qr/WARNING:  wasend webhook stores nothing: database "shopp" does not exist or allows no connections \(wasend.database\)/;
ok($node->wait_for_log($typo_re, $offset), 'a wasend.database that names no database is said in the log');
like(post_until('typo', qr/ 503$/), qr/database "shopp" does not exist.* 503$/,
	'a signed POST is answered 503 with the reason');
is(count_log($typo_re), 1, 'said once');
unlike(slurp_file($node->logfile, $offset), qr/FATAL:  database "shopp" does not exist/,
	'the webhook worker does not try to connect to it (no FATAL, no restarts)');
$node->safe_psql('postgres', q{CREATE DATABASE shopp});
$node->safe_psql('shopp', q{CREATE EXTENSION wasend});
like(post_until('typo2', qr/ 200$/), qr/ 200$/, 'once it exists, a signed POST is answered 200');
is(stored('shopp', 'typo2'), '1', 'it is stored in shopp');
$node->safe_psql('shopp', q{BEGIN; SET LOCAL wasend.drop_suppressions = on; DROP EXTENSION wasend; COMMIT;});
$node->safe_psql('postgres', q{DROP DATABASE shopp WITH (FORCE)});

# --- 5. the extension in no database, wasend.database empty
$node->safe_psql('shop', q{DROP EXTENSION wasend CASCADE});
$node->safe_psql('postgres', q{ALTER SYSTEM RESET wasend.database});
$offset = -s $node->logfile;
$node->restart;
my $none_re = qr/WARNING:  wasend webhook stores nothing: no database has the extension \(wasend.database is empty/;
ok($node->wait_for_log($none_re, $offset), 'with no database that has the extension, the log names the setting');
like(post_until('seven', qr/ 503$/), qr/no database has the extension.* 503$/,
	'a signed POST is answered 503 with the reason');

$node->stop;

# --- 6. a database whose supervisor finds no worker slot: the census
# settles on the databases that could be looked at.  The launcher and the
# webhook take two of the three slots; postgres (lowest oid, no extension)
# is looked at first, then shop takes the slot for good (its sender never
# starts), and "later" is never looked at.
my $short = WasendTest::new_node('endpoint_short', $mock,
	max_worker_processes => 3,
	max_logical_replication_workers => 0,
	'wasend.workers' => 1,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_port' => $port,
	'wasend.limits_refresh_interval' => 0);
$short->safe_psql('postgres', q{CREATE DATABASE shop});
$short->safe_psql('shop', q{CREATE EXTENSION wasend});
$short->safe_psql('postgres', q{CREATE DATABASE later});
$offset = -s $short->logfile;
$short->restart;
ok($short->wait_for_log(qr/wasend could not start a supervisor for database "(?:shop|later)"/, $offset),
	'a supervisor finds no worker slot');
like(post_until('short', qr/ 200$/), qr/ 200$/,
	'a signed POST is answered 200 although "later" was never looked at');
is($short->safe_psql('shop', q{SELECT count(*) FROM wasend.inbound_messages WHERE body = 'short'}),
	'1', 'it is stored in shop');
$short->stop;
WasendTest::stop_mock($mock);
done_testing();
