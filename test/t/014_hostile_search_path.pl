# 014_hostile_search_path.pl — the workers run superuser SQL, and neither a
# schema nor a setting a user controls reaches it.
#
# The database's search_path is set to "evil, pg_catalog, public"; schema
# evil shadows now(), random(), exp(), ln() and the bigint "=" operator, and
# public holds more specific overloads of format() and jsonb_build_object()
# (which would beat pg_catalog's variadic ones wherever public is on the
# path).  Every trap bumps a sequence (non-transactional, so a call is
# counted even if its transaction rolls back).
#
# The database is then given to a role that is not superuser, and that
# owner imposes on it, with ALTER DATABASE ... SET, every setting it may
# that could change what the workers' SQL means or does: exit_on_error
# (an ERROR inside a worker's PG_TRY would end the process, and the
# messages in flight would be sent again), role and session_authorization
# (the workers would run as the owner), read-only serializable deferrable
# transactions, 1 ms statement, lock and idle timeouts, asynchronous
# commit, 64 kB work_mem, a missing temp tablespace, another DateStyle,
# IntervalStyle, TimeZone, bytea_output, extra_float_digits and
# client_encoding, non-standard strings, transform_null_equals, no array
# NULLs, quoted identifiers, a GIN search limit, generic plans, JIT for
# everything, forced parallel query, no index scans and no row security.
# A superuser adds on the workers' role what only a superuser may
# (session_replication_role = replica, log_min_messages = fatal,
# temp_file_limit = 0, track_activities = off), postgresql.conf says
# exit_on_error = on, and a reload adds statement_timeout = 1 ms and
# default_transaction_read_only = on to it.
#
# Then the launcher, the supervisor (settling the rows of a sender that
# exits), the senders (claim, record with retries and a pause, release,
# complete), the webhook worker (a signed status) and a second campaign
# with three poison answers (an error holding \u0000, an error.code above
# 2^31, 30,000 nested arrays) all run.  Expected: every worker logs the
# settings it ignores, the campaigns are sent exactly as usual, the poison
# rows fail as bad_response, no worker process is replaced during the
# poison campaign, no recipient is accepted twice, and the trap sequence
# was never called.
use strict;
use warnings;

use Cwd;
use Digest::SHA qw(hmac_sha256_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '14001' => { token => 'tok-14001', rate => 100 } },
	rules => [
		{ to => '^15514000007$', code => 131000, times => 1 },
		{ to => '^15514100001$', action => 'nul' },
		{ to => '^15514100002$', action => 'bigcode' },
		{ to => '^15514100003$', action => 'deep' },
	],
});
my $secret_dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
my $secret = 'hostile-path-app-secret';
open my $fh, '>', "$secret_dir/app_secret" or die $!;
print $fh "$secret\n";
close $fh;
chmod 0600, "$secret_dir/app_secret";
my $webhook_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = WasendTest::new_node('hostile', $mock,
	'wasend.app_secret_file' => "'$secret_dir/app_secret'",
	'wasend.webhook_port' => $webhook_port);
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');

# what the database owner imposes (ALTER DATABASE ... SET), and what the
# superuser imposes on the workers' role (ALTER ROLE ... SET); the value
# the test's own sessions take instead (PGOPTIONS) where the hostile one
# would get in their way
my @by_owner = (
	[ 'exit_on_error', 'on', 'off' ],
	[ 'role', 'dbowner', 'none' ],
	[ 'session_authorization', 'dbowner', $superuser ],
	[ 'default_transaction_read_only', 'on', 'off' ],
	[ 'default_transaction_isolation', 'serializable', 'read\ committed' ],
	[ 'default_transaction_deferrable', 'on', 'off' ],
	[ 'statement_timeout', '1', '0' ],
	[ 'lock_timeout', '1', '0' ],
	[ 'idle_in_transaction_session_timeout', '1', '0' ],
	[ 'idle_session_timeout', '1', '0' ],
	[ 'synchronous_commit', 'off', 'on' ],
	[ 'work_mem', '64', undef ],
	[ 'temp_tablespaces', 'no_such_tablespace', undef ],
	[ 'DateStyle', 'SQL, DMY', 'ISO,MDY' ],
	[ 'IntervalStyle', 'sql_standard', 'postgres' ],
	[ 'TimeZone', 'Pacific/Kiritimati', undef ],
	[ 'bytea_output', 'escape', 'hex' ],
	[ 'extra_float_digits', '-15', '1' ],
	[ 'client_encoding', 'LATIN1', undef ],
	[ 'standard_conforming_strings', 'off', 'on' ],
	[ 'transform_null_equals', 'on', 'off' ],
	[ 'array_nulls', 'off', 'on' ],
	[ 'quote_all_identifiers', 'on', 'off' ],
	[ 'gin_fuzzy_search_limit', '1', '0' ],
	[ 'plan_cache_mode', 'force_generic_plan', 'auto' ],
	[ 'jit', 'on', 'off' ],
	[ 'jit_above_cost', '0', undef ],
	[ 'force_parallel_mode', 'on', 'off' ],
	[ 'enable_indexscan', 'off', 'on' ],
	[ 'enable_bitmapscan', 'off', 'on' ],
	[ 'row_security', 'off', 'on' ],
	[ 'search_path', 'evil, pg_catalog, public', 'public,pg_catalog' ],
);
my @by_superuser = (
	[ 'session_replication_role', 'replica', 'origin' ],
	[ 'log_min_messages', 'fatal', 'warning' ],
	[ 'temp_file_limit', '0', '-1' ],
	[ 'track_activities', 'off', 'on' ],
);

# the test's own sessions keep harmless values (public holds no trap that
# a test query calls); the workers get the hostile database and role
# defaults: they connect without PGOPTIONS
$ENV{PGOPTIONS} = join(' ', map { "-c $_->[0]=$_->[2]" } grep { defined $_->[2] } @by_owner, @by_superuser);

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('14001', 'tok-14001', 100);
	SELECT wasend.wasend_create_campaign('hostile', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15514000000 + g)::text)) FROM generate_series(1, 200) g;

	CREATE SEQUENCE public.trap;
	CREATE SCHEMA evil;
	CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN pg_catalog.now(); END $$;
	CREATE FUNCTION evil.random() RETURNS float8 LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN 0.5; END $$;
	CREATE FUNCTION evil.exp(float8) RETURNS float8 LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN pg_catalog.exp($1); END $$;
	CREATE FUNCTION evil.ln(float8) RETURNS float8 LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN pg_catalog.ln($1); END $$;
	CREATE FUNCTION evil.int8eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
	CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.int8eq);
	CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN 'hijacked'; END $$;
	CREATE FUNCTION public.jsonb_build_object(text, text, text, text, text, text, text, text)
		RETURNS jsonb LANGUAGE plpgsql
		AS $$ BEGIN PERFORM pg_catalog.nextval('public.trap'); RETURN '{}'; END $$;
	CREATE ROLE dbowner LOGIN;
	ALTER DATABASE postgres OWNER TO dbowner;
});
# the owner, not a superuser, imposes its settings on its database
$node->safe_psql('postgres', join("\n", 'SET SESSION AUTHORIZATION dbowner;',
	map { "ALTER DATABASE postgres SET $_->[0] = '$_->[1]';" } @by_owner));
$node->safe_psql('postgres', join("\n",
	map { qq{ALTER ROLE "$superuser" SET $_->[0] = '$_->[1]';} } @by_superuser));
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c}),
	scalar(@by_owner) + scalar(@by_superuser), 'every setting is imposed');

# the workers connect afresh with the hostile defaults
$node->append_conf('postgresql.conf', "exit_on_error = on\n");
$node->restart;
$node->poll_query_until('postgres', q{SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';

# every worker of the database says which settings it ignores, and
# ignores them all (the launcher connects to no database: PostgreSQL
# applies no database or role setting to it)
for my $worker ('supervisor', 'sender', 'webhook')
{
	ok($node->wait_for_log(qr/wasend $worker[^\n]* ignores settings of ALTER DATABASE\/ROLE/),
		"the $worker logs the settings it ignores");
}
my $log = slurp_file($node->logfile);
my ($sender_ignores) = $log =~ /wasend sender[^\n]* ignores settings of ALTER DATABASE\/ROLE[^\n]*: ([^\n]*)/;
$sender_ignores //= '';
my %ignored = map { lc($_) => 1 } split /, /, $sender_ignores;
is(join(', ', grep { !$ignored{lc $_->[0]} } @by_owner, @by_superuser), '',
	'a sender ignores every imposed setting');

my $trap = sub {
	$node->safe_psql('postgres', q{SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.trap});
};
is($trap->(), '0', 'no trap called before the campaign');

$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(1)');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) >= 100 FROM wasend.send_queue WHERE status = 'sent'}),
	'the campaign sends');
# a sender exits: it gives its rows back, the supervisor settles any left
# and starts a new sender
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'});
ok( $node->poll_query_until('postgres', q{
		SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes under the hostile search_path and settings');

# a signed status webhook through the webhook worker
my $wamid = $node->safe_psql('postgres', q{
	SELECT wa_message_id FROM wasend.send_queue WHERE recipient = '15514000001'});
my $body = qq({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"14001"},"statuses":[{"id":"$wamid","status":"delivered","timestamp":"1700000000","recipient_id":"15514000001"}]}}]}]});
my $sig = 'sha256=' . hmac_sha256_hex($body, $secret);
my $code = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -H 'X-Hub-Signature-256: $sig' --data-binary '$body' http://127.0.0.1:$webhook_port/`;
is($code, '200', 'the webhook worker takes a signed status');
is($node->safe_psql('postgres', q{
	SELECT status FROM wasend.send_queue WHERE recipient = '15514000001'}),
	'delivered', 'and applies it');

# --- a poison campaign, after a reload that makes postgresql.conf hostile
$node->append_conf('postgresql.conf', "statement_timeout = 1\ndefault_transaction_read_only = on\n");
$node->reload;
$node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'wasend sender%'})
  or die 'senders did not come back';
my $pids_sql = q{SELECT string_agg(backend_type || ':' || pid, ',' ORDER BY backend_type)
	FROM pg_stat_activity WHERE backend_type LIKE 'wasend%'};
my $pids = $node->safe_psql('postgres', $pids_sql);
like($pids, qr/launcher.*sender 1.*sender 2.*supervisor.*webhook/, "the workers before the poison campaign ($pids)");
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('poison', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, array_agg((15514100000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_start_campaign(2);});
ok( $node->poll_query_until('postgres', q{
		SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'the poison campaign completes');
is($node->safe_psql('postgres', $pids_sql), $pids, 'no worker process was replaced');
is($node->safe_psql('postgres', q{
	SELECT string_agg(recipient || ':' || status || ':' || coalesce(last_error_class, ''), ',' ORDER BY recipient)
	  FROM wasend.send_queue WHERE campaign_id = 2 AND status <> 'sent'}),
	'15514100001:failed:bad_response,15514100002:failed:bad_response,15514100003:failed:bad_response',
	'the poison rows fail as bad_response, the 17 others are sent');

WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE wamid <> ''), count(DISTINCT recipient) FILTER (WHERE wamid <> '')
	  FROM mocklog WHERE type <> 'GET'}),
	'217|217', 'every recipient accepted once');
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(recipient || ' x' || n, ','), '') FROM (
		SELECT recipient, count(*) n FROM mocklog
		 WHERE type <> 'GET' AND recipient LIKE '155141%' GROUP BY recipient HAVING count(*) > 1) d}),
	'', 'no recipient of the poison campaign got a request twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue
	 WHERE status NOT IN ('sent', 'delivered', 'failed') OR (status <> 'failed' AND wa_message_id IS NULL)
	    OR attempts > 2}),
	'0', 'every row ends recorded, every sent row with its wamid');
is($trap->(), '0', 'no worker called a function or operator of evil or public');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
