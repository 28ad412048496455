# 043_no_preload.pl — wasend installed without shared_preload_libraries:
# the library is then loaded by CREATE EXTENSION and the SQL functions.
# The session survives (PostgreSQL ends a session that defines a restart-
# only setting after start-up), the settings keep their postgresql.conf
# values, and the calls that would send say that nothing is sent and why.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->append_conf('postgresql.conf', "wasend.webhook_port = 18099\nwasend.workers = 3\n");
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('4301', 'tok', 80);
	SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, ARRAY['15554301001']);
	SELECT wasend.wasend_start_campaign(1);
	SELECT 'still connected';
	SHOW wasend.webhook_port;
	SHOW wasend.workers;});
is($ret, 0, 'every call succeeds without the preload');
unlike($err, qr/FATAL|terminated abnormally/, 'the session is not ended');
like($out, qr/still connected\n18099\n3$/, 'the session goes on; the settings have their postgresql.conf values');
like($err, qr/WARNING:  wasend senders are not running\nDETAIL:  The wasend library was not loaded through shared_preload_libraries\.\nHINT:  Add wasend to shared_preload_libraries and restart the server; nothing is sent until then\./,
	'starting a campaign says why nothing is sent, and what to do');
is($node->safe_psql('postgres', q{SELECT status FROM wasend.send_queue}), 'ready', 'the row waits, unsent');
like(slurp_file($node->logfile), qr/wasend senders are not running/, 'the server log says so too');
unlike(slurp_file($node->logfile), qr/cannot create PGC_POSTMASTER variables/, 'and has no FATAL about the settings');

done_testing();
