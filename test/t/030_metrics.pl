# 030_metrics.pl — the Prometheus endpoint of the "wasend metrics" worker
# (wasend.metrics_port) against what the mock Graph API saw.
#
# A campaign of 30 messages on one number; the mock answers 3 recipients
# 131026 (failed) and the first attempt of 2 others 130429 (retried, then
# sent); two signed webhooks go through the webhook endpoint.
# Proves: the endpoint serves GET /metrics as text/plain; version=0.0.4 on
# 127.0.0.1 only (a connection to the machine's other address is refused),
# and 404 for anything else; every line of the text parses as the
# exposition format, every family has HELP and TYPE before its samples, and
# its samples are together; wasend_sends_total is exactly the requests the
# mock saw, wasend_errors_total exactly its errors by code,
# wasend_throttled_total its 130429s; the latency histogram is cumulative,
# and its +Inf bucket and _count equal the sends; in flight returns to 0;
# the webhook counters count the endpoint's requests and the notifications
# it applied;
# wasend_number_status says the number is active, then paused once a person
# pauses it;
# wasend_campaign_rows matches the queue row for row, with the campaign's
# name (quote, backslash, newline, UTF-8) escaped and read back intact;
# the queries of contrib/postgres_exporter run as a wasend_viewer member;
# a reload keeps the endpoint up; with 40 slow clients holding more
# connections than the endpoint takes at once (trickling a header byte a
# second, reconnecting when cut), a scrape is still answered within the
# request deadline (wasend.metrics_request_timeout) plus slack, and every
# slow connection is cut at its deadline, never before; a port in use is
# logged naming wasend.metrics_port.  No fixed sleeps: every wait is a bounded poll.
use strict;
use warnings;

use CPAN::Meta::YAML;
use Cwd;
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WasendTest;

my $pnid = '30001';
my $rate = 200;
my $timeout = $PostgreSQL::Test::Utils::timeout_default;
my $deadline_ms = 2000;		# wasend.metrics_request_timeout here
my $slack_ms = 4000;		# a busy machine's delay on top of a deadline

# the app secret the webhook endpoint verifies signatures with
my $secret = 'metrics-secret-' . int(rand(1e9));
my $sdir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
sysopen(my $sfh, "$sdir/app_secret", O_WRONLY | O_CREAT | O_TRUNC, 0600) or die "app_secret: $!";
print $sfh "$secret\n";
close $sfh;

# recipients 15553000001 .. 15553000030: 1-3 answered 131026, the first
# attempt of 10 and 11 answered 130429
my $mock = WasendTest::start_mock({
	numbers => { $pnid => { token => "tok-$pnid", rate => $rate } },
	rules => [
		{ to => '^1555300000[1-3]$', code => 131026, http => 400 },
		{ to => '^155530000(10|11)$', code => 130429, http => 400, times => 2 },
	],
});
my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $wport = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('metrics', $mock,
	'wasend.metrics_port' => $mport,
	'wasend.webhook_port' => $wport,
	'wasend.app_secret_file' => "'$sdir/app_secret'",
	'wasend.metrics_request_timeout' => "'${deadline_ms}ms'",
	# no account reads: the mock sees only sends
	'wasend.limits_refresh_interval' => 0);

my $http = HTTP::Tiny->new(timeout => 10);
my $base = "http://127.0.0.1:$mport";

# --- the exposition format --------------------------------------------------

# a label value: anything but a raw backslash, double quote or newline,
# and the three escapes
my $label_re = qr/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"/;
my $value_re = qr/[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]Inf|NaN/;

# parse_metrics($text): {samples => [{name, labels => {...}, value}],
# bad => [lines that do not parse], problems => [format rule violations],
# help => {family => text}, type => {family => type}}
sub parse_metrics
{
	my ($text) = @_;
	my %m = (samples => [], bad => [], problems => [], help => {}, type => {});
	my %closed;				# families whose samples ended
	my $current = '';
	push @{ $m{problems} }, 'the text does not end with a newline' unless $text =~ /\n\z/;
	for my $line (split /\n/, $text)
	{
		if ($line =~ /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/)
		{
			push @{ $m{problems} }, "HELP of $1 twice" if exists $m{help}{$1};
			$m{help}{$1} = $2;
			next;
		}
		if ($line =~ /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/)
		{
			push @{ $m{problems} }, "TYPE of $1 twice" if exists $m{type}{$1};
			push @{ $m{problems} }, "TYPE of $1 after its samples" if $closed{$1} || $current eq $1;
			$m{type}{$1} = $2;
			next;
		}
		if ($line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:$label_re)(?:,$label_re)*,?)?\})? ($value_re)$/)
		{
			my ($name, $labels, $value) = ($1, $2 // '', $3);
			my %l;
			while ($labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)
			{
				my ($k, $v) = ($1, $2);
				$v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
				push @{ $m{problems} }, "label $k twice in $line" if exists $l{$k};
				$l{$k} = $v;
			}
			my $family = $name;
			if ($name =~ /^(.*)_(bucket|sum|count)$/ && ($m{type}{$1} // '') eq 'histogram')
			{
				$family = $1;
			}
			push @{ $m{problems} }, "$name has no TYPE before it" unless $m{type}{$family};
			push @{ $m{problems} }, "$name has no HELP before it" unless defined $m{help}{$family};
			if ($family ne $current)
			{
				$closed{$current} = 1 if $current ne '';
				push @{ $m{problems} }, "samples of $family are not together" if $closed{$family};
				$current = $family;
			}
			push @{ $m{samples} }, { name => $name, labels => \%l, value => $value };
			next;
		}
		push @{ $m{bad} }, $line;
	}
	return \%m;
}

# samples($m, $name, %labels): the samples of that name whose labels
# include the given ones
sub samples
{
	my ($m, $name, %want) = @_;
	return grep {
		my $s = $_;
		$s->{name} eq $name
		  && !grep { !defined $s->{labels}{$_} || $s->{labels}{$_} ne $want{$_} } keys %want
	} @{ $m->{samples} };
}

# val($m, $name, %labels): the value of the one sample with exactly these
# labels, undef if there is none
sub val
{
	my ($m, $name, %want) = @_;
	my @s = grep { keys %{ $_->{labels} } == keys %want } samples($m, $name, %want);
	return @s ? $s[0]{value} : undef;
}

# scrape(): GET /metrics, parsed, or undef with the reason in $@
sub scrape
{
	my $r = $http->get("$base/metrics");
	if (!$r->{success})
	{
		$@ = "GET /metrics: $r->{status} $r->{reason}";
		return undef;
	}
	my $m = parse_metrics($r->{content});
	$m->{response} = $r;
	return $m;
}

# poll_metrics($what, $check): scrape until $check->($m) returns '' (all
# good) or the time is up; returns the last scrape, and says what was still
# missing when it times out.
sub poll_metrics
{
	my ($what, $check) = @_;
	my $deadline = time() + $timeout;
	my ($m, $missing);
	while (1)
	{
		$m = scrape();
		$missing = $m ? $check->($m) : $@;
		return $m if $missing eq '';
		if (time() > $deadline)
		{
			diag("$what: after ${timeout}s still $missing");
			return $m;
		}
		usleep(200_000);
	}
}

# --- the endpoint -------------------------------------------------------------

my $m = poll_metrics('the endpoint answers', sub {
	my ($m) = @_;
	return (val($m, 'wasend_up') // '') eq '1' ? '' : 'no wasend_up 1';
});
ok($m && $m->{response}{status} == 200, 'GET /metrics answers 200 once the server is up');
like($m->{response}{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4(;|$)},
	'Content-Type: text/plain; version=0.0.4');
ok($node->log_contains(qr/wasend metrics listening on 127\.0\.0\.1:$mport/),
	'the server log says where it listens');

my $r = $http->get("$base/other");
is($r->{status}, 404, 'GET /other: 404');
$r = $http->get("$base/metrics/x");
is($r->{status}, 404, 'GET /metrics/x: 404');
$r = $http->request('POST', "$base/metrics", { content => 'x' });
is($r->{status}, 404, 'POST /metrics: 404');

# the machine's other IPv4 addresses must not reach it
my @others = grep { !/^127\./ }
  ((`hostname -I 2>/dev/null` // '') =~ /\b(\d+\.\d+\.\d+\.\d+)\b/g,
   (`ip -o -4 addr show 2>/dev/null` // '') =~ /inet (\d+\.\d+\.\d+\.\d+)/g);
my %seen;
@others = grep { !$seen{$_}++ } @others;
SKIP:
{
	skip 'no non-loopback IPv4 address on this machine', 1 unless @others;
	my @reached = grep {
		IO::Socket::INET->new(PeerAddr => $_, PeerPort => $mport, Proto => 'tcp', Timeout => 5)
	} @others;
	is("@reached", '', "bound to 127.0.0.1 only: not reachable on @others");
}

# --- a campaign with errors ---------------------------------------------------

# a name with everything a label value must escape, and a UTF-8 character
# (bytes: the server stores them as they come, whatever its encoding)
my $cname = qq{m\xc3\xa9trics "q3" \\ promo\nline 2};
(my $cname_sql = $cname) =~ s/'/''/g;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('$pnid', 'tok-$pnid', $rate);
	SELECT wasend.wasend_create_campaign('$cname_sql', 1, '{"type":"text","text":{"body":"metrics"}}');
	INSERT INTO wasend.send_queue (campaign_id, recipient)
	SELECT 1, (15553000000 + g)::text FROM generate_series(1, 30) g ORDER BY g;
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1})
  or die 'the campaign did not complete';

WasendTest::load_mock_log($node, $mock);
my $requests = $node->safe_psql('postgres', q{SELECT count(*) FROM mocklog});
my %want_errors = map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
	SELECT code, count(*) FROM mocklog WHERE http_status <> 200 GROUP BY 1 ORDER BY 1});
my $accepted = $node->safe_psql('postgres', q{SELECT count(*) FROM mocklog WHERE http_status = 200});
is($requests, 32, 'the mock saw 32 requests (30 rows, 2 retried after 130429)');
is(join(' ', map { "$_=$want_errors{$_}" } sort keys %want_errors), '130429=2 131026=3',
	'and answered 3 errors 131026 and 2 errors 130429');

# --- two webhooks through the endpoint (3 statuses) ---------------------------

my @sent = map { [ split /\|/ ] } split /\n/, $node->safe_psql('postgres', q{
	SELECT recipient, wa_message_id FROM wasend.send_queue
	 WHERE campaign_id = 1 AND status = 'sent' ORDER BY id LIMIT 2});
my @bodies = (
	WasendTest::webhook_body(WasendTest::wh_status(phone_number_id => $pnid, statuses => [
		map { { id => $_->[1], status => 'delivered', recipient_id => $_->[0] } } @sent ])),
	WasendTest::webhook_body(WasendTest::wh_status(phone_number_id => $pnid,
		id => $sent[0][1], status => 'read', recipient_id => $sent[0][0])),
);
for my $body (@bodies)
{
	$r = $http->request('POST', "http://127.0.0.1:$wport/webhook", {
		content => $body,
		headers => { 'Content-Type' => 'application/json',
			'X-Hub-Signature-256' => 'sha256=' . hmac_sha256_hex($body, $secret) } });
	is($r->{status}, 200, 'a signed webhook is applied (200)');
}

my %want_rows = map { ($_ => 0) } qw(ready sending held sent delivered read failed cancelled);
%want_rows = (%want_rows, map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
	SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 1 GROUP BY 1}));
is(join(' ', map { "$_=$want_rows{$_}" } sort keys %want_rows),
	'cancelled=0 delivered=1 failed=3 held=0 read=1 ready=0 sending=0 sent=25',
	'the queue: 25 sent, 1 delivered, 1 read, 3 failed');

# --- the counters reach what happened -------------------------------------------

# what is still missing in a scrape ('' when nothing is)
sub missing
{
	my ($m) = @_;
	my @miss;
	my $sends = val($m, 'wasend_sends_total', number => $pnid) // 'none';
	push @miss, "sends $sends, want $requests" if $sends ne $requests;
	my %got = map { ($_->{labels}{code} => $_->{value}) }
	  samples($m, 'wasend_errors_total', number => $pnid);
	my $got = join(' ', map { "$_=$got{$_}" } sort keys %got);
	my $want = join(' ', map { "$_=$want_errors{$_}" } sort keys %want_errors);
	push @miss, "errors [$got], want [$want]" if $got ne $want;
	my @busy = grep { $_->{value} != 0 } samples($m, 'wasend_inflight');
	push @miss, 'requests in flight' if @busy || !defined val($m, 'wasend_inflight', number => $pnid);
	my ($wr, $we) = (val($m, 'wasend_webhook_requests_total') // 'none',
		val($m, 'wasend_webhook_events_total') // 'none');
	push @miss, "webhook requests $wr events $we, want 2 and 2" if $wr ne '2' || $we ne '2';
	my %rows = map { ($_->{labels}{status} => $_->{value}) }
	  samples($m, 'wasend_campaign_rows', database => 'postgres', campaign_id => '1',
		campaign_status => 'completed');
	$got = join(' ', map { "$_=" . ($rows{$_} // 'none') } sort keys %want_rows);
	$want = join(' ', map { "$_=$want_rows{$_}" } sort keys %want_rows);
	push @miss, "campaign rows [$got], want [$want]" if $got ne $want;
	return join('; ', @miss);
}
$m = poll_metrics('the counters', \&missing);
is(missing($m), '', 'the counters reach exactly what the mock, the queue and the webhooks say');

# --- the format --------------------------------------------------------------
is(join("\n", @{ $m->{bad} }), '', 'every line parses (HELP, TYPE or a sample)');
is(join("\n", @{ $m->{problems} }), '',
	'every family has HELP and TYPE before its samples, which are together');
my %families = map { ($_ => 1) } keys %{ $m->{type} };
is(join(' ', sort grep { !$families{$_} } qw(wasend_up wasend_sends_total wasend_errors_total
		wasend_throttled_total wasend_inflight wasend_pace_messages_per_second
		wasend_request_duration_seconds wasend_campaign_rows wasend_webhook_requests_total
		wasend_webhook_events_total wasend_number_status)), '', 'every family of the contract is there');
is(join(' ', map { "$_=$m->{type}{$_}" } qw(wasend_sends_total wasend_errors_total
		wasend_throttled_total wasend_inflight wasend_pace_messages_per_second
		wasend_request_duration_seconds wasend_campaign_rows wasend_webhook_requests_total wasend_up)),
	'wasend_sends_total=counter wasend_errors_total=counter wasend_throttled_total=counter '
	  . 'wasend_inflight=gauge wasend_pace_messages_per_second=gauge '
	  . 'wasend_request_duration_seconds=histogram wasend_campaign_rows=gauge '
	  . 'wasend_webhook_requests_total=counter wasend_up=gauge',
	'each family has its type');

# --- the values ----------------------------------------------------------------
is(val($m, 'wasend_sends_total', number => $pnid), $requests,
	"wasend_sends_total is the $requests requests the mock saw");
is(val($m, 'wasend_errors_total', number => $pnid, code => '131026'), 3, '3 errors 131026');
is(val($m, 'wasend_errors_total', number => $pnid, code => '130429'), 2, '2 errors 130429');
is(val($m, 'wasend_throttled_total', number => $pnid), 2, 'wasend_throttled_total counts the 130429s');
is(val($m, 'wasend_inflight', number => $pnid), 0, 'nothing in flight once the campaign is done');
my $pace = val($m, 'wasend_pace_messages_per_second', number => $pnid);
ok(defined $pace && $pace >= 0 && $pace <= $rate, "the pace (" . ($pace // 'none') . ") is within 0..$rate msg/s");

my %classes = map { ($_->{labels}{class} => $_->{value}) }
  samples($m, 'wasend_answers_total', number => $pnid);
is($classes{'2xx'}, $accepted, "answers 2xx: the $accepted the mock accepted");
my $class_sum = 0;
$class_sum += $_ for values %classes;
is($class_sum, $requests, 'answers by HTTP class add up to the sends');

# the histogram: cumulative, monotonic, +Inf = _count = sends
my @buckets = sort { $a->[0] <=> $b->[0] }
  map { [ $_->{labels}{le} eq '+Inf' ? 9**9**9 : $_->{labels}{le}, $_->{value}, $_->{labels}{le} ] }
  samples($m, 'wasend_request_duration_seconds_bucket', number => $pnid);
is(join(' ', map { $_->[2] } @buckets), '0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf',
	'the latency buckets');
my @down = grep { $buckets[$_][1] < $buckets[ $_ - 1 ][1] } 1 .. $#buckets;
is(scalar(@down), 0, 'the bucket counts never decrease (cumulative)');
my $count = val($m, 'wasend_request_duration_seconds_count', number => $pnid);
is($buckets[-1][1], $count, 'the +Inf bucket equals _count');
is($count, $requests, '_count equals the sends');
my $sum = val($m, 'wasend_request_duration_seconds_sum', number => $pnid);
ok(defined $sum && $sum > 0 && $sum < $count * 10, "_sum ($sum s) is positive and below _count x 10 s");

# the campaign, with its name read back through the escapes
my @rows = samples($m, 'wasend_campaign_rows', campaign_id => '1');
is(scalar(@rows), 8, 'one wasend_campaign_rows line per row status');
is(scalar(grep { $_->{labels}{campaign} eq $cname } @rows), 8,
	'the campaign label is the name, quote, backslash, newline and UTF-8 intact');
my ($raw) = grep { /^wasend_campaign_rows\{.*status="sent"\}/ } split /\n/, $m->{response}{content};
like($raw, qr/campaign="m\xc3\xa9trics \\"q3\\" \\\\ promo\\nline 2"/,
	'and escaped in the text as the format says');

# --- the number's status --------------------------------------------------------
is(join(' ', map { "$_->{labels}{status}=$_->{value}" }
		sort { $a->{labels}{status} cmp $b->{labels}{status} }
		samples($m, 'wasend_number_status', database => 'postgres', number => $pnid)),
	'active=1 paused=0', 'wasend_number_status: the number is active (1), not paused (0)');
$node->safe_psql('postgres', q{SELECT wasend.wasend_pause_number(1)});
$m = poll_metrics('the paused number', sub {
	my ($m) = @_;
	my $p = val($m, 'wasend_number_status', database => 'postgres', number => $pnid, status => 'paused') // 'none';
	my $a = val($m, 'wasend_number_status', database => 'postgres', number => $pnid, status => 'active') // 'none';
	return $p eq '1' && $a eq '0' ? '' : "paused=$p active=$a";
});
is(val($m, 'wasend_number_status', database => 'postgres', number => $pnid, status => 'paused'), 1,
	'a paused number shows status="paused" 1 ...');
is(val($m, 'wasend_number_status', database => 'postgres', number => $pnid, status => 'active'), 0,
	'... and status="active" 0');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1)});

# --- what postgres_exporter would run, as a member of wasend_viewer ------------
# (contrib/ must be in the test's copy of the tree, see test/run-tests.sh)
my $queries = "$ENV{WASEND_ROOT}/contrib/postgres_exporter/wasend-queries.yaml";
SKIP:
{
	skip "$queries is not in the test's copy of the tree", 1 unless -f $queries;
	my $yaml = CPAN::Meta::YAML->read($queries)
	  or die "$queries: " . CPAN::Meta::YAML->errstr;
	$node->safe_psql('postgres', q{CREATE ROLE regress_scraper LOGIN; SELECT wasend.wasend_grant_access('regress_scraper', 'viewer')});
	for my $ns (sort keys %{ $yaml->[0] })
	{
		my $q = $yaml->[0]{$ns};
		my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE regress_scraper;\n$q->{query}");
		is($ret . $err, '0', "postgres_exporter query $ns runs as a wasend_viewer member");
		next if $out eq '';
		# the columns of its first row, in order (json keeps them)
		my $cols = $node->safe_psql('postgres', "SET ROLE regress_scraper;\n"
			  . "SELECT string_agg(k, ',') FROM json_object_keys("
			  . "(SELECT to_json(x) FROM ($q->{query}) x LIMIT 1)) k");
		is($cols, join(',', map { (keys %$_)[0] } @{ $q->{metrics} }),
			"$ns: its columns are the metrics it declares");
	}
}

# --- a reload keeps it serving ---------------------------------------------------
$node->reload;
$m = poll_metrics('after a reload', sub {
	my ($m) = @_;
	return (val($m, 'wasend_sends_total', number => $pnid) // '') eq $requests ? '' : 'no sends';
});
is(val($m, 'wasend_sends_total', number => $pnid), $requests, 'after a reload (SIGHUP) it still serves the counters');

# --- slow clients cannot hold the scrapes back ----------------------------------
# 40 connections trickle a header byte a second, more than the 32 the
# endpoint serves at once: without a deadline they hold every slot for as
# long as they trickle (each byte resets libmicrohttpd's idle timeout), and
# a scrape waits in the listen queue.  With it, a scrape waits at most one
# deadline, and the slow ones go at theirs (a reconnected one queues behind
# the scrape).
{
	my $root = $ENV{WASEND_ROOT};
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $ready = "$dir/slow.ready";
	my $duration_ms = 3 * $deadline_ms + 2 * $slack_ms;
	my $out;
	my $attack = IPC::Run::start([ 'node', "$root/test/webhook-attack.js", 'attack',
		'--port', $mport, '--duration-ms', $duration_ms, '--deadline-ms', $deadline_ms,
		'--slow', 40, '--slow-addresses', 4, '--slow-kind', 'headers', '--junk', 0,
		'--interval-ms', 500, '--ready-file', $ready ],
		'>', \$out, '2>', "$dir/slow.err", IPC::Run::timeout($duration_ms / 1000 + 120));
	my $t0 = time;
	usleep(50_000) until -f $ready || time - $t0 > 60;
	ok(-f $ready, '40 slow clients connected to the metrics port');
	my $scrape_http = HTTP::Tiny->new(timeout => $duration_ms / 1000 + 30);
	my $t1 = time;
	my $sr = $scrape_http->get("$base/metrics");
	my $took_ms = int((time - $t1) * 1000);
	ok($sr->{status} == 200 && $took_ms <= $deadline_ms + $slack_ms,
		"a scrape during the slow clients is answered 200 within the ${deadline_ms} ms deadline + ${slack_ms} ms ($sr->{status} in $took_ms ms)");
	$attack->finish;
	my $res = decode_json($out);
	my $slow = $res->{slow};
	note('slow clients: ' . JSON::PP->new->canonical->encode($slow));
	ok(!$slow->{ends}{survived}, "no slow connection outlived its deadline + 15 s");
	is($slow->{closed_before_deadline}, 0, "no slow connection was cut before the ${deadline_ms} ms deadline");
	ok(($slow->{closed_at_or_after_deadline} // 0) >= 40,
		'every slow client was cut at least once (' . ($slow->{closed_at_or_after_deadline} // 0) . ' cuts)');
	# one that waited in the listen queue for a free slot gets its deadline
	# from the accept: at most two deadlines from its connect()
	ok(defined $slow->{closed_ms} && $slow->{closed_ms}{max} <= 2 * $deadline_ms + $slack_ms,
		'every cut came within two deadlines + ' . $slack_ms . ' ms of its connect (latest: '
		  . ($slow->{closed_ms}{max} // 'none') . ' ms)');
	ok(!%{ $slow->{status} }, 'no slow client got an answer');
	$r = $http->get("$base/metrics");
	is($r->{status}, 200, 'after the slow clients the endpoint answers at once');
}

# --- a port in use is said, naming the setting ------------------------------------
my $node2 = WasendTest::new_node('metrics_busy', $mock, 'wasend.metrics_port' => $mport);
my $deadline = time() + $timeout;
my $said;
until (($said = $node2->log_contains(qr/could not listen on 127\.0\.0\.1 port $mport \(wasend\.metrics_port\)/))
	|| time() > $deadline)
{
	usleep(200_000);
}
ok($said, 'a second server on the same port logs that it could not listen, naming wasend.metrics_port');
$node2->stop;

$r = $http->get("$base/metrics");
is($r->{status}, 200, 'the first server still serves');

$node->stop;
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp', Timeout => 5),
	'the port is closed once the server stopped');
done_testing();
