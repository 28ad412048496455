# test/lib/WasendTest.pm — helpers for wasend's TAP integration tests:
# start the mock Graph API, create a cluster with wasend preloaded and
# pointed at it, and load the mock's request log into the database so tests
# can compare, in SQL, exactly what was sent with what the rows say.
package WasendTest;

use strict;
use warnings;

use Cwd qw(abs_path);
use Fcntl;
use File::Temp qw(tempdir);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $root = $ENV{WASEND_ROOT} or die "WASEND_ROOT is not set";

# every mock started, stopped when the test ends (a test that dies on its
# way, or never stops its mock, must not leave node processes behind)
my @mocks;

END
{
	local $?;
	for my $h (@mocks)
	{
		eval { $h->kill_kill; $h->finish; };
	}
}

# secret_files(name => content, ...): a new directory holding one file per
# name, one line each, mode 0600 as wasend requires of its secret files
# (wasend.app_secret_file, wasend.webhook_verify_token_file); returns its
# absolute path.
sub secret_files
{
	my (%files) = @_;
	my $dir = abs_path(PostgreSQL::Test::Utils::tempdir());
	for my $name (sort keys %files)
	{
		my $path = "$dir/$name";
		sysopen(my $fh, $path, Fcntl::O_WRONLY | Fcntl::O_CREAT | Fcntl::O_TRUNC, 0600)
		  or die "$path: $!";
		print $fh "$files{$name}\n";
		close $fh;
	}
	return $dir;
}

# start_mock(\%config, %opts): start test/mock/graph-api.js; returns a
# hashref with port, url (API base URL) and the IPC::Run handle.  With
# tls => 1 the mock speaks HTTPS with a certificate of a private CA (test
# lib.sh's make_certs), whose file is ca_file: point wasend.ca_file at it.
sub start_mock
{
	my ($config, %opts) = @_;
	my $dir = abs_path(PostgreSQL::Test::Utils::tempdir());
	my $port = $opts{port} // PostgreSQL::Test::Cluster::get_free_port();
	my $cfg = "$dir/mock.json";
	open my $fh, '>', $cfg or die "$cfg: $!";
	print $fh encode_json($config);
	close $fh;
	my @cmd = ('node', "$root/test/mock/graph-api.js", '--port', $port,
		'--config', $cfg, '--ready-file', "$dir/ready",
		'--log-file', "$dir/requests.csv");
	my $scheme = 'http';
	if ($opts{tls})
	{
		system('bash', '-c', '. "$1/test/lib.sh" && make_certs "$2"',
			'make_certs', $root, $dir) == 0
		  or die "could not make the mock's certificates";
		push @cmd, '--tls-cert', "$dir/server.pem", '--tls-key', "$dir/server.key";
		$scheme = 'https';
	}
	my $h = IPC::Run::start(\@cmd, '>', "$dir/mock.out", '2>&1');
	push @mocks, $h;
	for (1 .. 200)
	{
		last if -f "$dir/ready";
		usleep(50_000);
	}
	die "mock Graph API did not start" unless -f "$dir/ready";
	return {
		port => $port,
		url => "$scheme://127.0.0.1:$port/v21.0",
		control => "$scheme://127.0.0.1:$port",
		ca_file => $opts{tls} ? "$dir/ca.pem" : undef,
		handle => $h,
		dir => $dir,
		log_file => "$dir/requests.csv",
	};
}

sub stop_mock
{
	my ($mock) = @_;
	$mock->{handle}->kill_kill;
	$mock->{handle}->finish;
}

# restart_mock($mock, \%config): a new mock on the same port (its log
# starts empty); returns it.
sub restart_mock
{
	my ($mock, $config) = @_;
	stop_mock($mock);
	return start_mock($config, port => $mock->{port});
}

# account($node, $mock_tables, %opts): the exact account of a run, from the
# rows and the mock logs loaded into the given tables: rows by status, rows
# lost (not in a final state), requests seen, recipients accepted more
# than once, rows retried, failures by code, uncertain rows.
sub account
{
	my ($node, @tables) = @_;
	my $union = join(' UNION ALL ', map { "SELECT * FROM $_" } @tables);
	my %a;
	$a{by_status} = $node->safe_psql('postgres',
		q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
		    FROM (SELECT status, count(*) n FROM wasend.send_queue GROUP BY 1) s});
	$a{lost} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE status IN ('ready', 'sending')});
	$a{requests} = $node->safe_psql('postgres', "SELECT count(*) FROM ($union) m");
	$a{duplicates} = $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (SELECT phone_number_id, recipient FROM ($union) m
		 WHERE http_status = 200 AND wamid <> '' GROUP BY 1, 2 HAVING count(*) > 1) d});
	$a{retried} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE attempts > 1});
	$a{uncertain} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE uncertain});
	$a{failed_by_code} = $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), 'none')
		    FROM (SELECT coalesce(last_error_code::text, last_error_class) k, count(*) n
		            FROM wasend.send_queue WHERE status = 'failed' GROUP BY 1) f});
	$a{sent_without_wamid} = $node->safe_psql('postgres',
		q{SELECT count(*) FROM wasend.send_queue WHERE status = 'sent' AND wa_message_id IS NULL});
	note(sprintf('account: rows %s; lost %d; requests %d; duplicated %d; retried %d; uncertain %d; failed by code: %s',
		$a{by_status}, $a{lost}, $a{requests}, $a{duplicates}, $a{retried},
		$a{uncertain}, $a{failed_by_code}));
	return \%a;
}

# mock_get($mock, $path): body of a GET to the mock's control API.
sub mock_get
{
	my ($mock, $path) = @_;
	my $ca = $mock->{ca_file} ? "--cacert $mock->{ca_file}" : '';
	my $out = `curl -s --max-time 10 $ca $mock->{control}$path`;
	die "mock GET $path failed" if $? != 0;
	return $out;
}

sub mock_post
{
	my ($mock, $path, $body) = @_;
	my $json = encode_json($body // {});
	my $ca = $mock->{ca_file} ? "--cacert $mock->{ca_file}" : '';
	my $out = `curl -s --max-time 10 $ca -X POST -d '$json' $mock->{control}$path`;
	die "mock POST $path failed" if $? != 0;
	return $out;
}

sub mock_stats
{
	my ($mock) = @_;
	return decode_json(mock_get($mock, '/__mock/stats'));
}

# new_node($name, $mock, %settings): an initialized, started cluster with
# wasend preloaded and senders pointed at the mock.  Extra settings are
# appended to postgresql.conf.
sub new_node
{
	my ($name, $mock, %settings) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	my $init = delete $settings{init} // {};
	$node->init(%$init);
	my %conf = (
		shared_preload_libraries => "'wasend'",
		max_worker_processes => 32,
		'wasend.workers' => 2,
		# The mock stamps arrivals with its own clock, which stalls for
		# 10-60 ms at times on a shared 2-core VM and then stamps the
		# queued requests together (seen: 4 requests within 10 ms from a
		# number paced every 21 ms).  Pacing at 90% leaves 100 ms of each
		# second free, so the tests' exact "never above the rate"
		# assertions do not depend on that.  make demo / bench measure the
		# default (0.985).
		'wasend.rate_headroom' => 0.90,
		'wasend.api_base_url' => "'$mock->{url}'",
		%settings);
	$node->append_conf('postgresql.conf',
		join("\n", map { "$_ = $conf{$_}" } sort keys %conf) . "\n");
	$node->start;
	return $node;
}

# load_mock_log($node, $mock, $table): copy the mock's request log into a
# table (t_ms epoch milliseconds, phone_number_id, recipient, type,
# http_status, code, wamid, opaque: the body's biz_opaque_callback_data):
# the messages in $table, the reads of the
# numbers' account fields (GET, type 'GET') in ${table}_gets.
sub load_mock_log
{
	my ($node, $mock, $table, %opts) = @_;
	$table //= 'mocklog';
	my $csv;
	if ($opts{from_file})
	{
		# the file the mock appended to before each answer (it may be dead)
		$csv = "header\n" . PostgreSQL::Test::Utils::slurp_file($mock->{log_file});
	}
	else
	{
		$csv = mock_get($mock, '/__mock/log');
	}
	$node->safe_psql('postgres', qq{
		DROP TABLE IF EXISTS $table;
		CREATE TABLE $table (t_ms numeric, phone_number_id text, recipient text,
			type text, http_status int, code text, wamid text, opaque text);
	});
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', "COPY $table FROM STDIN WITH (FORMAT csv, HEADER true)" ],
		'<', \$csv, '>', \$stdout, '2>', \$stderr);
	die "loading mock log failed: $stderr" unless $ok;
	$node->safe_psql('postgres', qq{
		DROP TABLE IF EXISTS ${table}_gets;
		CREATE TABLE ${table}_gets AS SELECT * FROM $table WHERE type = 'GET';
		DELETE FROM $table WHERE type = 'GET';
	});
	return;
}

# poll_across_restart($node, $db, $query): $node->poll_query_until, begun
# again when it dies because the server killed its psql (a crash restart
# ends every connection; IPC::Run then dies of the broken pipe to the psql
# it was writing the query to).  Bounded by the harness's timeout.
sub poll_across_restart
{
	my ($node, $db, $query) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;

	while (1)
	{
		my $ok = eval { $node->poll_query_until($db, $query) };
		return $ok unless $@;
		die $@ unless $@ =~ /Broken pipe/ && time() < $deadline;
		Test::More::note("the server ended psql while polling; polling again");
		usleep(100_000);
	}
}

# wait_quiet($node): wait until no sender holds a row and no row is sending.
sub wait_quiet
{
	my ($node) = @_;
	return $node->poll_query_until('postgres', q{
		SELECT coalesce(sum(held), 0) = 0
		       AND NOT EXISTS (SELECT 1 FROM wasend.send_queue WHERE status = 'sending')
		  FROM wasend.wasend_worker_stats()});
}

# install_state_log($node): test-only triggers that log, in public, every
# claim of a queue row (claim_log: the row, its campaign, and the snapshot
# the claiming statement's trigger ran with) and every status change of a
# campaign or number (state_log: what, id, status, the changing
# transaction's id).  claims_seeing_pause_sql then tells, without any clock,
# whether a claim saw a pause (and not the resume after it): a claim takes
# nothing of a campaign that is not running or whose number is paused as
# its snapshot sees them, so such claims must not exist.  The snapshot
# logged is the claim statement's own (the trigger function is STABLE, so
# it takes none of its own), so a pause that commits while the claim
# statement runs is not counted as seen by it.
sub install_state_log
{
	my ($node) = @_;
	$node->safe_psql('postgres', q{
		CREATE TABLE public.claim_log (row_id bigint, campaign_id bigint, snap pg_snapshot);
		CREATE TABLE public.state_log (what text, id bigint, status text, xid xid8,
			seq bigserial);
		CREATE FUNCTION public.log_claim_row(bigint, bigint, pg_snapshot) RETURNS void
			LANGUAGE sql VOLATILE AS $$ INSERT INTO public.claim_log VALUES ($1, $2, $3) $$;
		-- STABLE: PL/pgSQL then takes no snapshot of its own for what it
		-- evaluates, so pg_current_snapshot() is the claim statement's
		-- snapshot (a VOLATILE trigger function would see a later one)
		CREATE FUNCTION public.log_claim() RETURNS trigger LANGUAGE plpgsql STABLE AS $$
		BEGIN
			PERFORM public.log_claim_row(NEW.id, NEW.campaign_id, pg_catalog.pg_current_snapshot());
			RETURN NEW;
		END $$;
		CREATE TRIGGER log_claim BEFORE UPDATE ON wasend.send_queue FOR EACH ROW
			WHEN (NEW.status = 'sending' AND OLD.status IS DISTINCT FROM 'sending')
			EXECUTE FUNCTION public.log_claim();
		CREATE FUNCTION public.log_state() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.state_log (what, id, status, xid)
			VALUES (TG_TABLE_NAME, NEW.id, NEW.status, pg_catalog.pg_current_xact_id());
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_state AFTER UPDATE OF status ON wasend.campaigns FOR EACH ROW
			WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION public.log_state();
		CREATE TRIGGER log_state AFTER UPDATE OF status ON wasend.whatsapp_numbers FOR EACH ROW
			WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION public.log_state();
	});
	return;
}

# claims_seeing_pause_sql($what, $id, $campaign): the number of claims of
# the campaign's rows whose snapshot saw a pause of the campaign or number
# ($what 'campaigns' or 'whatsapp_numbers', $id) but not the status change
# that followed it.
sub claims_seeing_pause_sql
{
	my ($what, $id, $campaign) = @_;
	return qq{
		SELECT count(*) FROM public.claim_log c
		  JOIN public.state_log p ON p.what = '$what' AND p.id = $id AND p.status = 'paused'
		 WHERE c.campaign_id = $campaign
		   AND pg_visible_in_snapshot(p.xid, c.snap)
		   AND NOT EXISTS (SELECT 1 FROM public.state_log r
		                    WHERE r.what = p.what AND r.id = p.id AND r.seq > p.seq
		                      AND pg_visible_in_snapshot(r.xid, c.snap))};
}

# max_window($node, $table): per phone number, the most requests accepted
# in any window (t - 1000 ms, t] — the definition the mock enforces.
sub max_window_sql
{
	my ($table) = @_;
	$table //= 'mocklog';
	return qq{
		SELECT phone_number_id, max(n) FROM (
		  SELECT phone_number_id, count(*) OVER (PARTITION BY phone_number_id ORDER BY t_ms
		         RANGE BETWEEN 999.999 PRECEDING AND CURRENT ROW) AS n
		    FROM $table WHERE http_status = 200) w
		 GROUP BY 1 ORDER BY 1};
}

# mock_account($mock, $pnid, %state): change one number's account state in
# the mock at run time (POST /__mock/account): tier, quality_rating,
# can_send_message, display_phone_number; account_error => {http, code}
# makes its GET fail, account_error => undef clears that.  Returns the
# state now in effect (a hashref).
sub mock_account
{
	my ($mock, $pnid, %state) = @_;
	my $answer = decode_json(mock_post($mock, '/__mock/account', { pnid => "$pnid", %state }));
	die "mock POST /__mock/account failed: " . encode_json($answer) unless $answer->{ok};
	return $answer->{account};
}

# The JSON encoder of the webhook builders: canonical (sorted keys), so
# that a payload's text, and its signature, are the same at every run.
my $webhook_json = JSON::PP->new->canonical;

# Webhook builders.  Meta's types are kept: ids, phone numbers and the
# timestamps of statuses and messages are strings; error codes, template
# ids and limits are numbers; billable is a JSON boolean.  Each wh_* sub
# returns one change ({field => ..., value => {...}}) for webhook_body.

# _wh_str($v) / _wh_num($v): $v as a JSON string / number.
sub _wh_str { my ($v) = @_; return defined $v ? "$v" : undef; }
sub _wh_num { my ($v) = @_; return defined $v ? 0 + $v : undef; }

# _wh_num_or_str($v): a number when $v is an integer, else a string (for
# limits that Meta gives as 2000 or as "TIER_2K").
sub _wh_num_or_str
{
	my ($v) = @_;
	return undef unless defined $v;
	return $v =~ /^-?[0-9]+$/ ? 0 + $v : "$v";
}

# _wh_bool($v): JSON::PP::true or false; a string "false" or "0" is false.
sub _wh_bool
{
	my ($v) = @_;
	return (!$v || $v eq 'false') ? JSON::PP::false : JSON::PP::true;
}

# _wh_metadata(%a): the metadata of a "messages" change, from
# phone_number_id and display_phone_number (both strings, '' if not given).
sub _wh_metadata
{
	my (%a) = @_;
	return {
		display_phone_number => _wh_str($a{display_phone_number} // ''),
		phone_number_id => _wh_str($a{phone_number_id} // ''),
	};
}

# webhook_body(@changes): the JSON text of a Meta webhook POST holding the
# given changes (from the wh_* builders, or any {field, value} hashrefs),
# all in one entry of the WhatsApp Business Account "WABA1".
sub webhook_body
{
	my (@changes) = @_;
	return $webhook_json->encode({
		object => 'whatsapp_business_account',
		entry => [ { id => 'WABA1', changes => [@changes] } ],
	});
}

# _wh_one_status(%s): one element of a "statuses" array: id (the wamid),
# status, recipient_id, timestamp (default now, a string as Meta sends it),
# optional pricing => {billable, pricing_model (default PMP), category,
# type (default regular)}, optional errors => [{code, title, ...}]; any
# other key (biz_opaque_callback_data, ...) is copied as given.
sub _wh_one_status
{
	my (%s) = @_;
	my %st = %s;
	delete @st{qw(id status recipient_id timestamp pricing errors)};
	$st{id} = _wh_str($s{id});
	$st{status} = _wh_str($s{status});
	$st{recipient_id} = _wh_str($s{recipient_id}) if defined $s{recipient_id};
	$st{timestamp} = _wh_str($s{timestamp} // time());
	if (my $p = $s{pricing})
	{
		my %pr = %$p;
		$pr{billable} = _wh_bool($p->{billable}) if exists $p->{billable};
		$pr{pricing_model} = _wh_str($p->{pricing_model} // 'PMP');
		$pr{category} = _wh_str($p->{category}) if defined $p->{category};
		$pr{type} = _wh_str($p->{type} // 'regular');
		$st{pricing} = \%pr;
	}
	if (my $e = $s{errors})
	{
		$st{errors} = [ map {
			my %er = %$_;
			$er{code} = _wh_num($_->{code}) if defined $_->{code};
			$er{title} = _wh_str($_->{title}) if defined $_->{title};
			\%er;
		} @$e ];
	}
	return \%st;
}

# wh_status(%a): a "messages" change with one status (the keys of
# _wh_one_status), or with several: statuses => [{id, status, ...}, ...].
# phone_number_id and display_phone_number go to the metadata.
sub wh_status
{
	my (%a) = @_;
	my @list = $a{statuses} ? @{ $a{statuses} } : (\%a);
	my @statuses;
	for my $s (@list)
	{
		my %one = %$s;
		delete @one{qw(statuses phone_number_id display_phone_number)};
		push @statuses, _wh_one_status(%one);
	}
	return { field => 'messages', value => {
		messaging_product => 'whatsapp',
		metadata => _wh_metadata(%a),
		statuses => \@statuses } };
}

# wh_template_status(event => 'PAUSED', name => ..., language => ...,
# reason => ...): a "message_template_status_update" change (template id 1,
# reason 'NONE' unless given; other keys, e.g. message_template_category or
# other_info, are copied as given).
sub wh_template_status
{
	my (%a) = @_;
	my %v = %a;
	delete @v{qw(event name language reason id)};
	$v{event} = _wh_str($a{event} // 'PAUSED');
	$v{message_template_id} = _wh_num($a{id} // 1);
	$v{message_template_name} = _wh_str($a{name});
	$v{message_template_language} = _wh_str($a{language});
	$v{reason} = _wh_str($a{reason} // 'NONE');
	return { field => 'message_template_status_update', value => \%v };
}

# wh_quality_update(display_phone_number => ..., event => 'DOWNGRADE',
# current_limit => 'TIER_250', old_limit => 'TIER_2K'): a
# "phone_number_quality_update" change; limits not given are left out,
# other keys (max_daily_conversations_per_business, ...) copied as given.
sub wh_quality_update
{
	my (%a) = @_;
	my %v = %a;
	$v{display_phone_number} = _wh_str($a{display_phone_number} // '');
	$v{event} = _wh_str($a{event} // 'DOWNGRADE');
	$v{current_limit} = _wh_str($a{current_limit}) if defined $a{current_limit};
	$v{old_limit} = _wh_str($a{old_limit}) if defined $a{old_limit};
	return { field => 'phone_number_quality_update', value => \%v };
}

# wh_capability_update(max_daily_conversations_per_business => 250): a
# "business_capability_update" change; the limit is a number (or a string
# such as "TIER_2K" when given one), max_phone_numbers_per_business 2
# unless given; other keys (max_daily_conversation_per_phone, ...) copied,
# integers as numbers.
sub wh_capability_update
{
	my (%a) = @_;
	my %v = map { ($_ => _wh_num_or_str($a{$_})) } keys %a;
	$v{max_phone_numbers_per_business} //= 2;
	return { field => 'business_capability_update', value => \%v };
}

# wh_user_preferences(wa_id => ..., value => 'stop'|'resume',
# phone_number_id => ..., display_phone_number => ..., timestamp => ...):
# a user_preferences change: the user stopped or resumed marketing
# messages.  Meta sends it with field "user_preferences"; field => ...
# overrides that.
sub wh_user_preferences
{
	my (%a) = @_;
	my $value = $a{value} // 'stop';
	my $wa_id = _wh_str($a{wa_id});
	return { field => $a{field} // 'user_preferences', value => {
		messaging_product => 'whatsapp',
		metadata => _wh_metadata(%a),
		contacts => [ { wa_id => $wa_id, profile => { name => 'X' } } ],
		user_preferences => [ {
			wa_id => $wa_id,
			detail => "User requested to $value marketing messages",
			category => _wh_str($a{category} // 'marketing_messages'),
			value => _wh_str($value),
			timestamp => _wh_num($a{timestamp} // time()),
		} ] } };
}

my $wh_inbound_seq = 0;

# wh_inbound(from => ..., phone_number_id => ..., body => 'hi', id => ...,
# display_phone_number => ..., timestamp => ...): a "messages" change with
# one inbound text message (id: a new wamid unless given).
sub wh_inbound
{
	my (%a) = @_;
	my $from = _wh_str($a{from});
	my $id = $a{id} // sprintf('wamid.IN%d.%d.%d', time(), $$, ++$wh_inbound_seq);
	return { field => 'messages', value => {
		messaging_product => 'whatsapp',
		metadata => _wh_metadata(%a),
		contacts => [ { wa_id => $from, profile => { name => 'X' } } ],
		messages => [ {
			from => $from,
			id => _wh_str($id),
			timestamp => _wh_str($a{timestamp} // time()),
			type => 'text',
			text => { body => _wh_str($a{body} // 'hi') },
		} ] } };
}

1;
