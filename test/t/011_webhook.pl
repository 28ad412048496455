# 011_webhook.pl — delivery statuses and inbound messages, through the
# wasend webhook endpoint (real HTTP POSTs with curl) and the SQL function.
#
# Proves: the GET handshake; a signed POST is applied and answered 200
# after commit; missing, wrong signatures, malformed and oversize bodies
# are refused (401, 403, 400, 413) without touching the queue; duplicates
# and read-before-delivered are harmless; a failed status records its code
# and suppresses the recipient; a status for a wamid not yet committed is
# kept aside and applied once the wamid appears; an inbound STOP is stored
# once and suppresses its sender, who is then skipped by wasend_enqueue;
# a load run of 3 statuses per message, posted concurrently, leaves every
# row read.  The app secret and the verify token come from files
# (wasend.app_secret_file, wasend.webhook_verify_token_file): a file that
# others may read, or that the server's user does not own, is refused with
# a log line and an ERROR that name the path; a reload that points the
# settings at new files rotates both; and the server log never contains
# a secret or a token.
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
use WasendTest;

# distinctive values, so that finding them in the server log means a leak
my $secret = 'test-app-secret-' . int(rand(1e9));
my $token = 'verify-me-' . int(rand(1e9));
# absolute: the server resolves the files' paths from its data directory
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());

# a secret file as the server wants it: owned by us (the server's user), 0600
sub write_secret
{
	my ($path, $value) = @_;
	sysopen(my $fh, $path, O_WRONLY | O_CREAT | O_TRUNC, 0600) or die "$path: $!";
	print $fh "$value\n";
	close $fh;
	chmod 0600, $path or die "chmod $path: $!";
	return $path;
}
write_secret("$sdir/app_secret", $secret);
write_secret("$sdir/verify_token", $token);

my $mock = WasendTest::start_mock({ numbers => { '1201' => { token => 'tok', rate => 1000 } } });
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('webhook', $mock,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.webhook_port' => $port,
	'wasend.webhook_verify_token_file' => "'$sdir/verify_token'");
my $url = "http://127.0.0.1:$port/webhook";

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('1201', 'tok', 1000);
	SELECT wasend.wasend_create_campaign('statuses', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15512000000 + g)::text)) FROM generate_series(1, 1000) g;
	SELECT wasend.wasend_start_campaign(1);
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'wasend webhook'}),
	'the wasend webhook worker runs');
$node->poll_query_until('postgres',
	q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1})
  or die 'campaign did not complete';

# curl helper: returns "code body"
sub http
{
	my (@args) = @_;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-s', '-o', '-', '-w', ' %{http_code}', @args ], '>', \$out, '2>', \$err);
	return $out;
}
sub payload
{
	my ($statuses, $messages) = @_;
	return JSON::PP->new->canonical->encode({
		object => 'whatsapp_business_account',
		entry => [ { id => '1', changes => [ { field => 'messages', value => {
			messaging_product => 'whatsapp',
			metadata => { phone_number_id => '1201' },
			($statuses ? (statuses => $statuses) : ()),
			($messages ? (messages => $messages) : ()) } } ] } ] });
}
my $body_file = "$mock->{dir}/body.json";
sub post
{
	my ($body, $sig) = @_;
	$sig //= 'sha256=' . hmac_sha256_hex($body, $secret);
	open my $bf, '>', $body_file or die;
	print $bf $body;
	close $bf;
	return http('-X', 'POST', '-H', 'Content-Type: application/json',
		($sig eq 'none' ? () : ('-H', "X-Hub-Signature-256: $sig")),
		'--data-binary', "\@$body_file", $url);
}
sub row
{
	my ($n) = @_;
	return $node->safe_psql('postgres',
		"SELECT status, delivered_at IS NOT NULL, read_at IS NOT NULL, coalesce(last_error_code::text, '')
		   FROM wasend.send_queue WHERE recipient = '" . (15512000000 + $n) . "'");
}
my %wamid = map { my ($r, $w) = split /\|/; ($r => $w) } split /\n/,
	$node->safe_psql('postgres', q{SELECT recipient::bigint - 15512000000, wa_message_id FROM wasend.send_queue});

# --- handshake
sub handshake
{
	my ($t, $challenge) = @_;
	return http("http://127.0.0.1:$port/webhook?hub.mode=subscribe&hub.verify_token=$t&hub.challenge=$challenge");
}
is(handshake($token, 1158201444), '1158201444 200', 'GET handshake answers the challenge');
like(handshake('wrong', 1), qr/ 403$/, 'a wrong verify token gets 403');
like(handshake(substr($token, 0, -1), 1), qr/ 403$/, 'so does the token less its last character');
like(handshake($token . 'x', 1), qr/ 403$/, 'and the token with one more');

# --- refusals change nothing
my $before = $node->safe_psql('postgres', q{SELECT md5(string_agg(status, ',' ORDER BY id)) FROM wasend.send_queue});
my $p1 = payload([ { id => $wamid{1}, status => 'delivered', timestamp => '1700000001', recipient_id => '15512000001' } ]);
like(post($p1, 'none'), qr/ 401$/, 'no signature: 401');
like(post($p1, 'sha256=' . ('0' x 64)), qr/ 403$/, 'wrong signature: 403');
like(post('{"entry": [', undef), qr/ 400$/, 'malformed JSON: 400');
like(post('{"hello": "world"}', undef), qr/ 400$/, 'JSON that is not a notification: 400');
my $big = '{"x":"' . ('a' x (3 * 1024 * 1024)) . '"}';
like(post($big, undef), qr/ 413$/, 'over 3 MB: 413');
is($node->safe_psql('postgres', q{SELECT md5(string_agg(status, ',' ORDER BY id)) FROM wasend.send_queue}),
	$before, 'refused requests changed nothing');

# --- a slow client (headers never finished) does not hold up others
use IO::Socket::INET;
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
print $slow "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n";

# --- apply, duplicates, order
like(post($p1), qr/"statuses_applied": 1.* 200$/, 'signed POST: 200 after the status is applied');
is(row(1), 'delivered|t|f|', 'row 1 delivered, while a slow client holds a connection open');
close $slow;
like(post($p1), qr/"statuses_applied": 0, "statuses_ignored": 1.* 200$/, 'the same payload again is ignored');
my $read2 = payload([ { id => $wamid{2}, status => 'read', timestamp => '1700000005', recipient_id => '15512000002' } ]);
my $deliv2 = payload([ { id => $wamid{2}, status => 'delivered', timestamp => '1700000003', recipient_id => '15512000002' } ]);
post($read2);
post($deliv2);
is(row(2), 'read|t|t|', 'read before delivered: the row stays read (delivered_at filled in)');
post(payload([ { id => $wamid{3}, status => 'failed', timestamp => '1700000005', recipient_id => '15512000003',
	errors => [ { code => 131026, title => 'Message undeliverable' } ] } ]));
is(row(3), 'failed|f|f|131026', 'failed records errors[0].code');
is($node->safe_psql('postgres', q{SELECT reason FROM wasend.suppressions WHERE recipient = '15512000003'}),
	'message failed with 131026', 'and suppresses the recipient');

# --- a status that arrives before its send commits
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('late', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, ARRAY['15519999999']);
});
my $late = $node->background_psql('postgres');
$late->query_safe(q{BEGIN; UPDATE wasend.send_queue SET status = 'sent', wa_message_id = 'wamid.not-yet', sent_at = now()
	 WHERE recipient = '15519999999';});
like(post(payload([ { id => 'wamid.not-yet', status => 'delivered', timestamp => '1700000009', recipient_id => '15519999999' } ])),
	qr/"statuses_pending": 1.* 200$/, 'a status for a wamid not committed yet is kept aside');
$late->query_safe('COMMIT');
$late->quit;
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'delivered' FROM wasend.send_queue WHERE wa_message_id = 'wamid.not-yet'}),
	'once the wamid is committed, the kept status is applied');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.pending_statuses}), '0', 'and no longer pending');

# --- inbound STOP
my $stop = payload(undef, [ { from => '15512000010', id => 'wamid.in-stop', timestamp => '1700000100',
	type => 'text', text => { body => ' Stop ' } } ]);
like(post($stop), qr/"messages_stored": 1.*"recipients_suppressed": 1.* 200$/, 'inbound STOP stored and acted on');
like(post($stop), qr/"messages_stored": 0, "statuses_applied": 0.*"messages_duplicate": 1.* 200$/, 'a duplicate message is stored once');
is($node->safe_psql('postgres', q{SELECT from_number, type, body FROM wasend.inbound_messages}),
	'15512000010|text| Stop ', 'wasend.inbound_messages holds the message');
my ($stdout, $stderr);
$node->psql('postgres', q{
	SELECT wasend.wasend_create_campaign('after stop', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(3, ARRAY['15512000010', '15512000011']);},
	stdout => \$stdout, stderr => \$stderr);
like($stdout, qr/^3\n1$/, 'wasend_enqueue adds only the recipient who did not say STOP');
like($stderr, qr/skipped 1 suppressed recipient/, 'and reports the one skipped');

# --- hostile values cost their own status, never the payload (Meta retries a 500 for days)
like(post(payload([
		{ id => $wamid{8}, status => 'failed', timestamp => '' . int(time()), recipient_id => '15512000008',
		  errors => [ { code => 12345678901, title => 'eleven digits' } ] },
		{ id => $wamid{9}, status => 'delivered', timestamp => 'NaN', recipient_id => '15512000009' },
		{ id => 'wamid.elsewhere-11', status => 'sent', timestamp => 'yesterday', recipient_id => '15519999911' },
		{ id => $wamid{4}, status => 'delivered', timestamp => '' . int(time()), recipient_id => '15512000004' } ],
	[ { from => '15512000012', id => 'wamid.in-when', timestamp => 'Infinity', type => 'text',
		text => { body => 'hello' } } ])),
	qr/"messages_stored": 1, "statuses_applied": 2.*"statuses_refused": 2.* 200$/,
	'a payload with an 11-digit error code and garbage timestamps: 200, the rest applied');
is(row(8) . ' ' . row(9) . ' ' . row(4), 'failed|f|f| sent|f|f| delivered|t|f|',
	'the 11-digit code is no code, the NaN status is refused, the ordinary one applies');
is($node->safe_psql('postgres', q{
	SELECT body || '|' || (sent_at IS NULL) FROM wasend.inbound_messages WHERE wa_message_id = 'wamid.in-when'}),
	'hello|true', 'a message with a timestamp of Infinity is stored, without a time');

# --- the SQL function
my $p5 = payload([ { id => $wamid{5}, status => 'read', timestamp => '1700000005', recipient_id => '15512000005' } ]);
my $sig5 = 'sha256=' . hmac_sha256_hex($p5, $secret);
$node->psql('postgres', "SELECT wasend.wasend_ingest_webhook('$p5', 'sha256=" . ('1' x 64) . "')", stderr => \$stderr);
like($stderr, qr/ERROR:  invalid webhook signature/, 'SQL: a wrong signature is an ERROR');
is(row(5), 'sent|f|f|', 'and applies nothing');
like($node->safe_psql('postgres', "SELECT wasend.wasend_ingest_webhook('$p5', '$sig5')"),
	qr/"statuses_applied": 1/, 'SQL: a signed payload is applied');
is(row(5), 'read|t|t|', 'row 5 read');

# --- secret files the server refuses
# wait_log($offset, $re): bounded wait for a line of the server log
sub wait_log
{
	my ($offset, $re) = @_;
	my $t0 = time;
	while (time - $t0 < 30)
	{
		my $log = slurp_file($node->logfile, $offset);
		return $1 if $log =~ /($re)/;
		usleep(50_000);
	}
	return '';
}
my $p6 = payload([ { id => $wamid{6}, status => 'delivered', timestamp => '1700000006', recipient_id => '15512000006' } ]);
my $sig6 = 'sha256=' . hmac_sha256_hex($p6, $secret);
chmod 0644, "$sdir/app_secret" or die;
my $offset = -s $node->logfile;
like(post($p6), qr/ 500$/, 'app secret file readable by others: a signed POST is not accepted (500, Meta retries)');
like(wait_log($offset, qr/WARNING: .*app_secret_file.*\n/), qr/wasend\.app_secret_file "\Q$sdir\E\/app_secret" gives others access/,
	'and the server log names the file and what is wrong with it');
$node->psql('postgres', "SELECT wasend.wasend_ingest_webhook('$p6', '$sig6')", stderr => \$stderr);
like($stderr, qr/ERROR:  cannot verify webhook signatures: wasend\.app_secret_file "\Q$sdir\E\/app_secret" gives others access/,
	'SQL: an ERROR that names the file');
is(row(6), 'sent|f|f|', 'nothing applied');
chmod 0640, "$sdir/app_secret" or die;
like(post($p6), qr/"statuses_applied": 1.* 200$/, 'mode 0640 is accepted again at the next POST, no reload needed');

chmod 0604, "$sdir/verify_token" or die;
$offset = -s $node->logfile;
like(handshake($token, 2), qr/ 403$/, 'verify token file readable by others: the handshake fails');
like(wait_log($offset, qr/WARNING: .*verify_token_file.*\n/), qr/wasend\.webhook_verify_token_file "\Q$sdir\E\/verify_token" gives others access/,
	'and the server log names that file');
chmod 0600, "$sdir/verify_token" or die;
is(handshake($token, 3), '3 200', 'mode 0600: the handshake works again');

# a file the server's user does not own (and we cannot chown as that user)
$node->append_conf('postgresql.conf', "wasend.app_secret_file = '/etc/passwd'\n");
$offset = -s $node->logfile;
$node->reload;
my $p7 = payload([ { id => $wamid{7}, status => 'delivered', timestamp => '1700000007', recipient_id => '15512000007' } ]);
my $t0 = time;
my $answer = '';
while (time - $t0 < 30)
{
	$answer = post($p7, 'sha256=' . hmac_sha256_hex($p7, $secret));
	last if $answer =~ / 500$/;
	usleep(50_000);
}
like($answer, qr/ 500$/, 'app secret file not owned by the server\'s user: refused after the reload');
like(wait_log($offset, qr/WARNING: .*passwd.*\n/), qr{wasend\.app_secret_file "/etc/passwd" is not owned by the database server's user},
	'and the log says so, naming the file');
$node->psql('postgres', "SELECT wasend.wasend_ingest_webhook('$p7', 'sha256=" . ('2' x 64) . "')", stderr => \$stderr);
like($stderr, qr{ERROR:  cannot verify webhook signatures: wasend\.app_secret_file "/etc/passwd" is not owned}, 'SQL: the same as an ERROR');

# rotation: a reload points both settings at new files
my $secret2 = 'test-app-secret-rotated-' . int(rand(1e9));
my $token2 = 'verify-me-rotated-' . int(rand(1e9));
write_secret("$sdir/app_secret2", $secret2);
write_secret("$sdir/verify_token2", $token2);
$node->append_conf('postgresql.conf',
	"wasend.app_secret_file = '$sdir/app_secret2'\nwasend.webhook_verify_token_file = '$sdir/verify_token2'\n");
$node->reload;
$t0 = time;
while (time - $t0 < 30)
{
	$answer = post($p7, 'sha256=' . hmac_sha256_hex($p7, $secret2));
	last if $answer =~ / 200$/;
	usleep(50_000);
}
like($answer, qr/"statuses_applied": 1.* 200$/, 'after a reload to new files, the new secret signs');
like(post($p7, 'sha256=' . hmac_sha256_hex($p7, $secret)), qr/ 403$/, 'and the old one no longer does');
is(handshake($token2, 4), '4 200', 'the new verify token answers the handshake');
like(handshake($token, 5), qr/ 403$/, 'the old one gets 403');
my $secret1 = $secret;
$secret = $secret2;

# --- the account webhooks go through the endpoint too: a template
# status, a marketing opt-out, a capability and a quality update in one
# signed POST
my $acct = WasendTest::webhook_body(
	WasendTest::wh_template_status(event => 'PAUSED', name => 'hook_tpl', language => 'en_US',
		reason => 'LOW_QUALITY'),
	WasendTest::wh_user_preferences(wa_id => '15512999001', value => 'stop'),
	WasendTest::wh_capability_update(max_daily_conversations_per_business => 2000),
	WasendTest::wh_quality_update(display_phone_number => '15550009999', event => 'UPGRADE',
		current_limit => 'TIER_2K'));
my $acct_answer = post($acct);
like($acct_answer, qr/ 200$/, 'account webhooks through the endpoint: 200');
like($acct_answer, qr/"account_updates": 3/, '... three account changes applied');
like($acct_answer, qr/"preferences_applied": 1/, '... and the marketing opt-out');
is($node->safe_psql('postgres', q{
	SELECT (SELECT name || '|' || language || '|' || status || '|' || reason FROM wasend.templates
	         WHERE name = 'hook_tpl'),
	       (SELECT scope || '|' || reason FROM wasend.suppressions WHERE recipient = '15512999001')}),
	'hook_tpl|en_US|PAUSED|LOW_QUALITY|marketing|user_preferences: stopped marketing messages',
	'the endpoint stored the template status and the marketing opt-out');

# --- load run: 3 statuses per message for the whole campaign, concurrently
my $wamid_file = "$mock->{dir}/wamids.txt";
open my $fh, '>', $wamid_file or die;
print $fh join("\n", map { $wamid{$_} } grep { $_ > 10 } sort { $a <=> $b } keys %wamid), "\n";
close $fh;
my $load;
IPC::Run::run([ 'node', "$ENV{WASEND_ROOT}/test/webhook-load.js", '--url', $url, '--secret', $secret,
	'--wamids', $wamid_file, '--per-payload', 20, '--concurrency', 32 ], '>', \$load)
  or die 'load run failed';
note("load run through the endpoint: $load");
my $res = JSON::PP::decode_json($load);
is($res->{http}{200}, $res->{payloads}, "every one of $res->{payloads} payloads answered 200");
is($node->safe_psql('postgres', q{
	SELECT status, count(*), count(delivered_at), count(read_at) FROM wasend.send_queue
	 WHERE campaign_id = 1 AND recipient::bigint - 15512000000 > 10 GROUP BY 1}),
	'read|990|990|990', 'after 2,970 shuffled statuses every one of the 990 rows is read, with both timestamps');

WasendTest::stop_mock($mock);
$node->stop;

# the whole server log: paths yes, secrets and tokens never
my $log = slurp_file($node->logfile);
for my $v ([ 'first app secret', $secret1 ], [ 'rotated app secret', $secret2 ],
	[ 'first verify token', $token ], [ 'rotated verify token', $token2 ])
{
	unlike($log, qr/\Q$v->[1]\E/, "the server log never contains the $v->[0]");
}
like($log, qr/parameter "wasend\.app_secret_file" changed to "\Q$sdir\E\/app_secret2"/,
	'(it does name the new file after the reload)');
done_testing();
