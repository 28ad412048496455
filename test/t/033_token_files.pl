# 033_token_files.pl — access tokens from files (wasend.token_directory):
# a number registered the documented way never has its token in any
# query text a pg_monitor member reads, nor in the server log (every
# statement logged); the senders, the limits read and a test send use the
# file's token; a file with a bad mode is refused by path and the number
# pauses with the reason; a rotated file is picked up; a database whose
# name cannot be a directory gets no file.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $tok_a = 'EAAGfiletokenAlpha0123456789abcdef';
my $tok_a2 = 'EAAGfiletokenRotated9876543210fedcba';
my $tok_literal = 'EAAGliteraltokenInTheQueryText42424242';

my $mock = WasendTest::start_mock({
	numbers => {
		'3201' => { token => $tok_a, rate => 50 },
		'3203' => { token => $tok_literal, rate => 50 } },
	rules => [ { to => '^15532009999$', action => 'echo_token' } ] });

my $dir = abs_path(PostgreSQL::Test::Utils::tempdir()) . '/tokens';
make_path("$dir/postgres");
chmod 0700, $dir, "$dir/postgres";

# write a token file the way the README says: mode 0600, renamed into place
sub write_token
{
	my ($path, $token, $mode) = @_;
	open my $fh, '>', "$path.new" or die "$path.new: $!";
	print $fh "$token\n";
	close $fh;
	chmod $mode // 0600, "$path.new";
	rename "$path.new", $path or die "rename $path: $!";
	return;
}
write_token("$dir/postgres/3201", $tok_a);

my $node = WasendTest::new_node('tokfiles', $mock,
	'wasend.token_directory' => "'$dir'",
	log_statement => "'all'",
	log_min_messages => 'info');

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	CREATE ROLE tok_admin LOGIN;
	SELECT wasend.wasend_grant_access('tok_admin', 'admin');
	CREATE ROLE tok_monitor LOGIN IN ROLE pg_monitor;
});

# the admin registers the number the documented way and then sits idle
my $admin = $node->background_psql('postgres', extra_params => [ '-U', 'tok_admin' ]);
is($admin->query_safe(q{SELECT wasend.wasend_add_number('3201', max_send_rate_per_sec => 50)}),
	'1', 'the number is registered without a token in the call');
# for comparison: a token given in the call stays in the session's query
my $other = $node->background_psql('postgres', extra_params => [ '-U', 'tok_admin' ]);
$other->query_safe(qq{SELECT wasend.wasend_add_number('3203', '$tok_literal', 50)});

my $activity = q{SELECT query FROM pg_stat_activity WHERE usename = 'tok_admin' AND state = 'idle'};
my $seen = $node->safe_psql('postgres', $activity, extra_params => [ '-U', 'tok_monitor' ]);
like($seen, qr/wasend_add_number\('3201'/,
	'a pg_monitor member reads the idle session\'s query text');
like($seen, qr/\Q$tok_literal\E/, 'it would see a token given in the call');
unlike($seen, qr/\Q$tok_a\E/, 'it never sees the token of the file');
is($node->safe_psql('postgres',
	q{SELECT access_token IS NULL FROM wasend.whatsapp_numbers WHERE phone_number_id = '3201'}),
	't', 'the number has no token in its row: the file is its token');

# the senders send with the file's token (the mock answers 190 to any other)
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('from file', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15532000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend.wasend_start_campaign(1);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign of the number whose token is a file completes');
unlike($node->safe_psql('postgres', q{SELECT string_agg(query, ' ') FROM pg_stat_activity},
		extra_params => [ '-U', 'tok_monitor' ]),
	qr/\Q$tok_a\E/, 'no session\'s query text holds the token, the senders\' included');
is($node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FROM wasend.send_queue WHERE campaign_id = 1}),
	'100/100', 'every row sent');
WasendTest::load_mock_log($node, $mock, 'log1');
is($node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE http_status = 200) || '/' || count(*) FROM log1 WHERE phone_number_id = '3201'}),
	'100/100', 'the mock, which checks the bearer, accepted every send');
is($node->safe_psql('postgres',
	q{SELECT count(*) > 0 FROM log1_gets WHERE phone_number_id = '3201' AND http_status = 200}),
	't', 'the limits read used the file\'s token too');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM log1_gets WHERE phone_number_id = '3201' AND http_status <> 200}),
	'0', 'no limits read was refused');

# a test send takes the file's token; an answer quoting it is redacted
my $ans = $node->safe_psql('postgres', q{SELECT wasend.wasend_test_send(1, '15532000001')});
like($ans, qr/"wamid\./, 'a test send goes out with the file\'s token');
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_test_send(1, '15532009999')});
like($out, qr/\[redacted token\]/, 'a test send answer quoting the token shows it redacted');
unlike($out . $err, qr/\Q$tok_a\E/, 'and never the token');

# rotation: a new file renamed over the old one is used from then on
write_token("$dir/postgres/3201", $tok_a2);
WasendTest::mock_post($mock, '/__mock/config', { numbers => {
	'3201' => { token => $tok_a2, rate => 50 },
	'3203' => { token => $tok_literal, rate => 50 } } });
WasendTest::mock_post($mock, '/__mock/reset');
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('after rotation', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15532100000 + g)::text)) FROM generate_series(1, 50) g;
	SELECT wasend.wasend_start_campaign(2);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'after the file was rotated, the next campaign completes');
WasendTest::load_mock_log($node, $mock, 'log2');
is($node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE http_status = 200) || '/' || count(*) FROM log2 WHERE phone_number_id = '3201'}),
	'50/50', 'every send carried the new token (no 190)');
is($node->safe_psql('postgres', q{SELECT status FROM wasend.whatsapp_numbers WHERE id = 1}),
	'active', 'the number stayed active');

# a file others can read is refused by path: the number pauses, nothing goes
chmod 0644, "$dir/postgres/3201";
WasendTest::mock_post($mock, '/__mock/reset');
my $logpos = -s $node->logfile;
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('bad mode', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(3, array_agg((15532200000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_start_campaign(3);
});
ok($node->poll_query_until('postgres', q{SELECT status = 'paused' FROM wasend.whatsapp_numbers WHERE id = 1}),
	'a token file others can read pauses its number');
like($node->safe_psql('postgres', q{SELECT pause_reason FROM wasend.campaign_progress WHERE campaign_id = 3}),
	qr/access token file "\Q$dir\E\/postgres\/3201" gives others access/,
	'campaign_progress names the file and what is wrong with it');
ok($node->wait_for_log(qr/WARNING: .*access token file "\Q$dir\E\/postgres\/3201" gives others access/, $logpos),
	'the log says so with a WARNING');
ok(WasendTest::wait_quiet($node), 'senders hold nothing of the paused number');
WasendTest::load_mock_log($node, $mock, 'log3');
is($node->safe_psql('postgres', q{SELECT count(*) FROM log3 WHERE phone_number_id = '3201'}),
	'0', 'nothing was sent with the refused file');
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_resume_number(1)});
like($err, qr/ERROR: .*access token file ".*3201" gives others access.*\n.*HINT: /,
	'resuming while the file is still refused is an ERROR with a hint');
chmod 0600, "$dir/postgres/3201";
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1)});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3}),
	'with the mode fixed and the number resumed, the campaign completes');

# registering a number whose file is missing is an ERROR that names it
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_add_number('3299')});
like($err, qr/ERROR: .*access token file "\Q$dir\E\/postgres\/3299": No such file/,
	'a number without its file is refused, by path');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.whatsapp_numbers WHERE phone_number_id = '3299'}),
	'0', 'and not registered');

# a database uses the files of its own directory only
$node->safe_psql('postgres', q{CREATE DATABASE other});
$node->safe_psql('other', q{CREATE EXTENSION wasend});
($ret, $out, $err) = $node->psql('other', q{SELECT wasend.wasend_add_number('3201')});
like($err, qr/ERROR: .*could not open access token file "\Q$dir\E\/other\/3201": No such file/,
	'another database cannot use the file of a number of database postgres');

# a token file with a space in it is refused (the token goes into a header)
write_token("$dir/postgres/3205", "EAAGwith space");
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_add_number('3205')});
like($err, qr/ERROR: .*access token file ".*3205" holds spaces or control characters/,
	'a token file holding a space is refused');

# a database whose name is not a plain directory name has no token files
$node->safe_psql('postgres', q{CREATE DATABASE ".."});
$node->safe_psql('..', q{CREATE EXTENSION wasend});
write_token("$dir/3204", 'EAAGoutsideTheDatabaseDirectory000000');
($ret, $out, $err) = $node->psql('..', q{SELECT wasend.wasend_add_number('3204')});
like($err, qr/ERROR: .*database name "\.\." cannot name a directory/,
	'a database named ".." cannot reach files outside its directory');
make_path("$dir/x");
write_token("$dir/x/y", 'EAAGotherDatabaseDirectory00000000000');
$node->safe_psql('postgres', q{CREATE DATABASE "x/y"});
$node->safe_psql('x/y', q{CREATE EXTENSION wasend});
($ret, $out, $err) = $node->psql('x/y', q{SELECT wasend.wasend_add_number('3204')});
like($err, qr{ERROR: .*database name "x/y" cannot name a directory},
	'nor can a database whose name holds a "/"');

# nothing above wrote a file's token into the server log, though every
# statement was logged
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$tok_a\E/, 'the first token is nowhere in the server log');
unlike($log, qr/\Q$tok_a2\E/, 'the rotated token is nowhere in the server log');
like($log, qr/\Q$tok_literal\E/, 'while the token given in a call is (log_statement = all)');

$admin->quit;
$other->quit;
WasendTest::stop_mock($mock);
$node->stop;
done_testing();
