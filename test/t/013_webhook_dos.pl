# 013_webhook_dos.pl — the webhook endpoint under denial-of-service clients.
#
# Proves: a POST without a well-formed X-Hub-Signature-256 is answered 401
# from its headers alone, before any of its body is sent; a signed 1 MB
# body of "[" is answered 400 and the worker lives on; with 500 slow
# clients (trickling a header or body byte every second, from 127.0.0.2
# ...) and 300 clients looping on 3 MB junk POSTs (half unsigned, half with
# a well-formed wrong signature), a real signed status POST from 127.0.0.1
# is answered 200 within 2 s, no junk is ever answered 200, a 503 (buffer
# full) always carries Retry-After, every slow connection is cut at its
# absolute deadline (never before, and at most a few seconds after, by the
# client's own clock), the per-address limit refuses exactly the
# connections above it, and the webhook worker's peak RSS (VmHWM) stays
# under 128 MB with the same pid; under a sustained load of valid POSTs a
# reload is seen (a changed wasend.app_secret_file takes effect) and a
# fast shutdown is prompt.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Cwd;
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time usleep);
use Test::More;
use WasendTest;

my $root = $ENV{WASEND_ROOT};
my $deadline_ms = 5000;			# wasend.webhook_request_timeout here
my $slack_ms = 5000;			# how late a cut may be on a busy machine
my $per_address = 64;
# absolute: the server resolves the secret file's path from its data directory
my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());

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
my $secret = 'dos-secret-' . int(rand(1e9));
write_secret("$dir/app_secret", $secret);

my $mock = WasendTest::start_mock({});
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('webhook_dos', $mock,
	'wasend.app_secret_file' => "'$dir/app_secret'",
	'wasend.webhook_port' => $port,
	'wasend.webhook_request_timeout' => "'${deadline_ms}ms'",
	'wasend.webhook_max_connections_per_address' => $per_address);
my $url = "http://127.0.0.1:$port/webhook";

# 30,000 messages already sent, for the statuses of the load phase
$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('1301', 'tok', 1000);
	SELECT wasend.wasend_create_campaign('dos', 1, '{"type":"text","text":{"body":"x"}}');
	INSERT INTO wasend.send_queue (campaign_id, recipient, status, wa_message_id, sent_at)
	SELECT 1, (15513000000 + g)::text, 'sent', 'wamid.dos-' || g, now()
	  FROM generate_series(1, 30000) g;
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'wasend webhook'}),
	'the wasend webhook worker runs');
my $worker_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wasend webhook'};
my $pid = $node->safe_psql('postgres', $worker_sql);

# POST a body with curl: (code, seconds, answer)
my $n_post = 0;
sub post
{
	my ($body, $sig) = @_;
	my $file = "$dir/body" . $n_post++;
	open my $bf, '>', $file or die;
	print $bf $body;
	close $bf;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-s', '--max-time', '30', '-o', "$file.out",
		'-w', '%{http_code} %{time_total}', '-X', 'POST',
		'-H', 'Content-Type: application/json',
		(defined $sig ? ('-H', "X-Hub-Signature-256: $sig") : ()),
		'--data-binary', "\@$file", $url ], '>', \$out, '2>', \$err);
	my ($code, $secs) = split / /, $out // '000 0';
	my $answer = -f "$file.out" ? slurp_file("$file.out") : '';
	unlink $file, "$file.out";
	return ($code, $secs, $answer);
}
sub signed { my ($body, $s) = @_; return 'sha256=' . hmac_sha256_hex($body, $s // $secret); }
my $n_status = 0;
sub status_body
{
	$n_status++;
	return JSON::PP->new->canonical->encode({
		object => 'whatsapp_business_account',
		entry => [ { id => '1', changes => [ { field => 'messages', value => {
			messaging_product => 'whatsapp', metadata => { phone_number_id => '1301' },
			statuses => [ { id => "wamid.dos-$n_status", status => 'delivered',
				timestamp => '1700000001', recipient_id => '0' } ] } } ] } ] });
}
sub attack_js
{
	my (@args) = @_;
	my $out;
	IPC::Run::run([ 'node', "$root/test/webhook-attack.js", @args ], '>', \$out)
	  or die "webhook-attack.js @args failed";
	return decode_json($out);
}
sub vm
{
	my ($field) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>) { return $1 if /^$field:\s+(\d+) kB/; }
	return undef;
}

my $body = status_body();
my ($code, $secs, $answer) = post($body, signed($body));
is($code, '200', 'a signed status POST is answered 200');

# --- refused from the headers alone
for my $case ([ 'no signature', undef ], [ 'a malformed signature', 'sha256=xyz' ],
	[ 'a sha1 signature', 'sha1=' . ('0' x 40) ], [ 'a signature one digit short', 'sha256=' . ('a' x 63) ])
{
	my ($what, $sig) = @$case;
	my $r = attack_js('probe', '--port', $port, '--length', 3000000,
		(defined $sig ? ('--signature', $sig) : ()));
	ok($r->{status} && $r->{status} == 401 && $r->{closed},
		"$what: 401 answered to the headers of a 3 MB POST, no body byte sent, and the connection closed")
	  or diag(encode_json($r));
	note("probe, $what: " . JSON::PP->new->canonical->encode($r));
}

# --- a deeply nested body does not kill the worker
my $nested = '[' x (1024 * 1024);
($code) = post($nested, signed($nested));
is($code, '400', 'a signed 1 MB body of "[" is answered 400');
is($node->safe_psql('postgres', $worker_sql), $pid, 'and the worker lives on (same pid)');
($code) = post($body = status_body(), signed($body));
is($code, '200', 'the next signed POST is answered 200');

# --- the attack
note("webhook worker $pid before the attack: VmHWM " . vm('VmHWM') . ' kB, VmRSS ' . vm('VmRSS') . ' kB');
my $ready = "$dir/attack.ready";
my $attack_out;
my $duration_ms = 2 * $deadline_ms + $slack_ms;
my $attack = IPC::Run::start([ 'node', "$root/test/webhook-attack.js", 'attack', '--port', $port,
	'--duration-ms', $duration_ms, '--deadline-ms', $deadline_ms,
	'--slow', 500, '--slow-addresses', 20, '--junk', 300, '--junk-addresses', 15,
	'--junk-bytes', 3000000, '--per-address', $per_address, '--interval-ms', 1000,
	'--ready-file', $ready ], '>', \$attack_out, '2>', "$dir/attack.err",
	IPC::Run::timeout($duration_ms / 1000 + 120));
my $t0 = time;
usleep(50_000) until -f $ready || time - $t0 > 60;
ok(-f $ready, 'all 500 slow clients connected, all 300 junk clients posting');
my @real;
for (1 .. 3)
{
	my ($c, $s) = post($body = status_body(), signed($body));
	push @real, "$c in ${s}s";
	ok($c eq '200' && $s < 2, "real signed status POST during the attack: 200 within 2 s ($c in ${s}s)");
}
$attack->finish;
my $res = decode_json($attack_out);
note('attack: ' . JSON::PP->new->canonical->encode($res));

my $junk = $res->{junk};
ok($junk->{connections} >= 300, "$junk->{connections} junk POSTs of 3 MB made");
ok(!$junk->{status}{200}, 'no junk POST was answered 200');
my $unsigned = $junk->{by_kind}{unsigned}{status};
ok(($unsigned->{401} // 0) > 0 && !grep({ $_ ne '401' } keys %$unsigned),
	'unsigned junk is only ever answered 401: ' . encode_json($unsigned));
my $wrong = $junk->{by_kind}{'wrong-signature'}{status};
ok(!grep({ $_ ne '403' && $_ ne '503' } keys %$wrong),
	'junk with a wrong signature is answered 403 or 503: ' . encode_json($wrong));
is($junk->{status_503_without_retry_after}, 0, 'every 503 carries Retry-After');

my $slow = $res->{slow};
note('slow connections ended: ' . encode_json($slow->{ends}) . ', closed after (ms): ' . encode_json($slow->{closed_ms}));
ok(!$slow->{ends}{survived}, 'no slow connection outlived its deadline + 15 s');
is($slow->{closed_before_deadline}, 0, "no slow connection was cut before the ${deadline_ms} ms deadline");
ok($slow->{closed_at_or_after_deadline} >= 500, "all 500 slow clients were cut at least once ($slow->{closed_at_or_after_deadline} cuts)");
ok(defined $slow->{closed_ms} && $slow->{closed_ms}{max} <= $deadline_ms + $slack_ms,
	"every cut came within ${slack_ms} ms after the deadline (latest: " . ($slow->{closed_ms}{max} // 'none') . ' ms)');
ok(!%{ $slow->{status} }, 'no slow client got an answer');

my $pa = $res->{per_address};
is($pa->{closed_before_deadline}, 5,
	"$per_address + 5 connections from one address: 5 refused at once (" . encode_json($pa->{closed_before_deadline_ms}) . ' ms)');
is($pa->{closed_at_or_after_deadline}, $per_address, "and $per_address held until the deadline");

my $hwm = vm('VmHWM');
note("webhook worker $pid: VmHWM $hwm kB, VmRSS " . vm('VmRSS') . ' kB');
ok(defined $hwm && $hwm < 128 * 1024, "the webhook worker's peak RSS stayed under 128 MB ($hwm kB)");
is($node->safe_psql('postgres', $worker_sql), $pid, 'the worker is the same process (pid unchanged)');
($code) = post($body = status_body(), signed($body));
is($code, '200', 'after the attack, a signed POST is answered 200');

# --- interrupts are seen under a sustained load of valid POSTs
my $wamids = "$dir/wamids.txt";
open my $wf, '>', $wamids or die;
print $wf map { "wamid.dos-$_\n" } 1001 .. 30000;
close $wf;
# start_load($secret, $tag): four webhook-load.js in the background, from
# 127.0.0.3 to 127.0.0.6 with 64 connections each (all that one address
# may have here), so that some body is always complete when a pass of the
# worker's loop ends; returns once each has had its first answer
sub start_load
{
	my ($s, $tag) = @_;
	my @h;
	for my $i (3 .. 6)
	{
		my $started = "$dir/load-$tag-$i.started";
		push @h, IPC::Run::start([ 'node', "$root/test/webhook-load.js", '--url', $url, '--secret', $s,
			'--wamids', $wamids, '--per-payload', 5, '--concurrency', 64, '--started-file', $started,
			'--local-address', "127.0.0.$i" ],
			'>', "$dir/load-$tag-$i.out", '2>', "$dir/load-$tag-$i.err", IPC::Run::timeout(600));
	}
	my $t = time;
	usleep(20_000) until !grep({ !-f "$dir/load-$tag-$_.started" } 3 .. 6) || time - $t > 60;
	die "load $tag did not start" if grep { !-f "$dir/load-$tag-$_.started" } 3 .. 6;
	return @h;
}
sub stop_load { for my $h (@_) { $h->kill_kill; $h->finish; } }

my @load = start_load($secret, 'a');
my $secret2 = 'dos-secret-rotated-' . int(rand(1e9));
write_secret("$dir/app_secret2", $secret2);
$node->append_conf('postgresql.conf', "wasend.app_secret_file = '$dir/app_secret2'\n");
my $t_reload = time;
$node->reload;
my $seen = 0;
my %tries;
while (time - $t_reload < 60)
{
	($code, $secs) = post($body = status_body(), signed($body, $secret2));
	$tries{$code}++;
	if ($code eq '200') { $seen = 1; last; }
	usleep(100_000);
}
my $reload_secs = time - $t_reload;
note(sprintf('answers to the POSTs signed with the new secret, by code: %s; the last took %.3f s',
	encode_json(\%tries), $secs));
my $load_running = !grep { !$_->pumpable } @load;
ok($seen && $reload_secs < 10,
	sprintf('under load, a reload takes effect: a POST signed with the new secret file got 200 after %.1f s', $reload_secs));
ok($load_running, 'while the load was still running');
stop_load(@load);

@load = start_load($secret2, 'b');
my $t_stop = time;
$node->stop('fast');
my $stop_secs = time - $t_stop;
ok(!grep({ !$_->pumpable } @load), 'a second load was still running when the server was stopped');
ok($stop_secs < 10, sprintf('and the fast shutdown took %.1f s', $stop_secs));
stop_load(@load);

WasendTest::stop_mock($mock);
done_testing();
