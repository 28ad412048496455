# 045_stalled.pl — when nothing sends, every place a user looks says why.
#
# Proves, for each reason: the exact reason in campaign_progress.stalled_reason
# (with no ETA), the WARNING and HINT of wasend_start_campaign (which still
# starts the campaign), the reason in wasend_dry_run and the WARNING of
# wasend_wait; and that the campaign sends once the reason is gone:
# - wasend.workers = 0 (then set to 2: the campaign completes);
# - a paused number (then resumed: the campaign completes);
# - an extension older than the library (0.5.0's calls warn; after ALTER
#   EXTENSION wasend UPDATE nothing does) and a library newer than the
#   extension (pg_extension says 0.5.0, as a newer library would see 0.6.0);
# - no free background worker slot, for the supervisor (max_worker_processes
#   = 1: the launcher's own) and for its senders (= 2).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => { '4501' => { token => 'tok-4501', rate => 50 } },
});
my $node = WasendTest::new_node('stalled', $mock,
	'wasend.workers' => 0, 'wasend.limits_refresh_interval' => 0);
my $version = $node->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'wasend'});

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('4501', 'tok-4501', 50);
	SELECT wasend.wasend_create_campaign('c1', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, ARRAY['15554510001', '15554510002', '15554510003']);
});

# what each place says about campaign $id
sub progress
{
	my ($db, $id) = @_;
	return $node->safe_psql($db, qq{
		SELECT status || ' | eta ' || coalesce(eta::text, 'none') || ' | ' || coalesce(stalled_reason, 'NULL')
		  FROM wasend.campaign_progress WHERE campaign_id = $id});
}

sub dry_run
{
	my ($db, $id) = @_;
	return $node->safe_psql($db, qq{SELECT coalesce(stalled_reason, 'NULL') FROM wasend.wasend_dry_run($id)});
}

# --- wasend.workers = 0
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
is($ret, 0, 'workers = 0: the start succeeds');
like($err, qr/(?:^|: )WARNING:  campaign 1 will not send: no senders: wasend\.workers = 0\nHINT:  Set wasend\.workers to 1 or more and reload the configuration\.$/m,
	'workers = 0: the start warns with the reason and a hint');
is(progress('postgres', 1), 'running | eta none | no senders: wasend.workers = 0',
	'workers = 0: campaign_progress shows the reason and no ETA');
is(dry_run('postgres', 1), 'no senders: wasend.workers = 0', 'workers = 0: the dry run says it');
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_wait(1, '0.3 s')});
is($out, 'running', 'workers = 0: wasend_wait waits out its timeout');
like($err, qr/WARNING:  campaign 1 does not move: no senders: wasend\.workers = 0\nHINT:  Set wasend\.workers/,
	'workers = 0: wasend_wait says why at once');
like($err, qr/WARNING:  campaign 1 is still running after 00:00:00\.3: no senders: wasend\.workers = 0\n/,
	'workers = 0: and again when it gives up');

$node->append_conf('postgresql.conf', "wasend.workers = 2\n");
$node->reload;
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'workers = 2: the campaign completes');
is($node->safe_psql('postgres', q{SELECT coalesce(reason, 'NULL') FROM wasend._senders_blocked()}), 'NULL',
	'workers = 2: nothing blocks the senders');

# --- a paused number
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_pause_number(1, 'maintenance');
	SELECT wasend.wasend_create_campaign('c2', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(2, ARRAY['15554520001', '15554520002']);
});
($ret, $out, $err) = $node->psql('postgres', q{SELECT wasend.wasend_start_campaign(2)});
like($err, qr/(?:^|: )WARNING:  campaign 2 will not send: number 4501 is paused: maintenance\nHINT:  It sends once the number is active again: wasend\.wasend_resume_number\(1\)\.$/m,
	'paused number: the start warns with the reason and a hint');
is(progress('postgres', 2), 'running | eta none | number 4501 is paused: maintenance',
	'paused number: campaign_progress shows the reason');
is(dry_run('postgres', 2), 'number 4501 is paused: maintenance', 'paused number: the dry run says it');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(1)});
ok($node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2}),
	'resumed number: the campaign completes');

# --- an extension older than the library: its own calls warn
$node->safe_psql('postgres', q{CREATE DATABASE old_ext});
($ret, $out, $err) = $node->psql('old_ext', q{
	CREATE EXTENSION wasend VERSION '0.5.0';
	SELECT wasend_add_number('4501', 'tok-4501', 50);});
is($ret, 0, 'old extension: its calls succeed');
like($err, qr/(?:^|: )WARNING:  wasend sends nothing in this database: extension version 0\.5\.0 does not match the library \Q$version\E\nHINT:  Run ALTER EXTENSION wasend UPDATE in this database; nothing is sent until then\.$/m,
	'old extension: a call that wakes the senders warns with the versions and a hint');
($ret, $out, $err) = $node->psql('old_ext', q{
	ALTER EXTENSION wasend UPDATE;
	SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, ARRAY['15554530001']);
	SELECT wasend.wasend_start_campaign(1);});
unlike($err, qr/WARNING/, 'updated extension: no warning');
ok($node->poll_query_until('old_ext', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1}),
	'updated extension: its campaign completes');

# --- a library newer than the extension, seen from the current SQL
$node->safe_psql('postgres', q{CREATE DATABASE new_lib});
$node->safe_psql('new_lib', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('4501', 'tok-4501', 50);
	SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, ARRAY['15554540001']);
});
my $log_at = -s $node->logfile;
$node->safe_psql('new_lib', q{UPDATE pg_extension SET extversion = '0.5.0' WHERE extname = 'wasend'});
# its supervisor looks again within 5 s and stops its senders
$node->wait_for_log(qr/wasend sends nothing in database "new_lib": the extension is version 0\.5\.0/, $log_at);
($ret, $out, $err) = $node->psql('new_lib', q{SELECT wasend.wasend_start_campaign(1)});
like($err, qr/(?:^|: )WARNING:  wasend sends nothing in this database: extension version 0\.5\.0 does not match the library \Q$version\E\n/m,
	'newer library: the start warns');
is(scalar(() = $err =~ /WARNING/g), 1, 'newer library: once');
is(progress('new_lib', 1),
	"running | eta none | extension version 0.5.0 does not match the library $version: run ALTER EXTENSION wasend UPDATE",
	'newer library: campaign_progress shows the reason');
is($node->safe_psql('new_lib', q{SELECT count(*) FROM wasend.send_queue WHERE status = 'ready'}), '1',
	'newer library: the row waits');
$node->stop('fast');

# --- no free background worker slot: for the supervisor, then for its senders
for my $case ([1, 'the supervisor'], [2, 'the senders'])
{
	my ($max, $what) = @$case;
	my $slots = WasendTest::new_node("slots_$max", $mock,
		max_worker_processes => $max, max_logical_replication_workers => 0);
	$slots->safe_psql('postgres', q{
		CREATE EXTENSION wasend;
		SELECT wasend.wasend_add_number('4501', 'tok-4501', 50);
		SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
		SELECT wasend.wasend_enqueue(1, ARRAY['15554550001']);
	});
	ok($slots->poll_query_until('postgres', q{SELECT reason FROM wasend._senders_blocked()},
			'no free background worker slot (max_worker_processes)'),
		"max_worker_processes = $max: no slot for $what is seen");
	($ret, $out, $err) = $slots->psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
	like($err, qr/(?:^|: )WARNING:  campaign 1 will not send: no free background worker slot \(max_worker_processes\)\nHINT:  Raise max_worker_processes and restart the server: /m,
		"max_worker_processes = $max: the start warns");
	is($slots->safe_psql('postgres', q{SELECT coalesce(eta::text, 'none') || ' | ' || stalled_reason FROM wasend.campaign_progress}),
		'none | no free background worker slot (max_worker_processes)',
		"max_worker_processes = $max: campaign_progress shows it");
	$slots->stop('fast');
}

done_testing();
