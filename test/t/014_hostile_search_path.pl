# 014_hostile_search_path.pl — the workers run superuser SQL, and none of it
# may resolve through a schema a user controls (issue 9, item 3).
#
# The database's search_path is set to "evil, pg_catalog, public"; schema
# evil shadows now(), random(), exp(), ln() and the bigint "=" operator, and
# public holds more specific overloads of format() and jsonb_build_object()
# (which would beat pg_catalog's variadic ones wherever public is on the
# path).  Every trap bumps a sequence (non-transactional, so a call is
# counted even if its transaction rolls back).  Then the launcher, the
# senders (claim, record with retries and a pause, release, complete,
# recovery after a sender exits) and the webhook worker (a signed status)
# all run.  Expected: the campaign is sent exactly as usual and the trap
# sequence was never called.
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
	rules => [ { to => '^15514000007$', code => 131000, times => 1 } ],
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
	ALTER DATABASE postgres SET search_path = evil, pg_catalog, public;
});
# the workers connect afresh with the hostile default
$node->restart;
$node->poll_query_until('postgres', q{SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';

# the test's own sessions keep a harmless path (public holds no trap
# that a test query calls; the workers get the hostile
# database default: they connect without PGOPTIONS)
$ENV{PGOPTIONS} = '-c search_path=public,pg_catalog';
my $safe = '';
my $trap = sub {
	$node->safe_psql('postgres', $safe . q{SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.trap});
};
is($trap->(), '0', 'no trap called before the campaign');

$node->safe_psql('postgres', $safe . 'SELECT wasend.wasend_start_campaign(1)');
$node->poll_query_until('postgres', $safe . q{
	SELECT count(*) >= 100 FROM wasend.send_queue WHERE status = 'sent'})
  or die 'campaign did not send';
# a sender exits: it gives its rows back, the launcher settles and restarts
$node->safe_psql('postgres', $safe . q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'wasend sender 1'});
ok( $node->poll_query_until('postgres', $safe . q{
		SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'the campaign completes under the hostile search_path');

# a signed status webhook through the webhook worker
my $wamid = $node->safe_psql('postgres', $safe . q{
	SELECT wa_message_id FROM wasend.send_queue WHERE recipient = '15514000001'});
my $body = qq({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"14001"},"statuses":[{"id":"$wamid","status":"delivered","timestamp":"1700000000","recipient_id":"15514000001"}]}}]}]});
my $sig = 'sha256=' . hmac_sha256_hex($body, $secret);
my $code = `curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -H 'X-Hub-Signature-256: $sig' --data-binary '$body' http://127.0.0.1:$webhook_port/`;
is($code, '200', 'the webhook worker takes a signed status');
is($node->safe_psql('postgres', $safe . q{
	SELECT status FROM wasend.send_queue WHERE recipient = '15514000001'}),
	'delivered', 'and applies it');

WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', $safe . q{
	SELECT count(*) FILTER (WHERE http_status = 200), count(DISTINCT recipient) FILTER (WHERE http_status = 200)
	  FROM mocklog}),
	'200|200', 'every recipient accepted once');
is($node->safe_psql('postgres', $safe . q{
	SELECT count(*) FROM wasend.send_queue WHERE wa_message_id IS NULL OR attempts > 2}),
	'0', 'every row has its wamid');
is($trap->(), '0', 'no worker called a function or operator of evil or public');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
