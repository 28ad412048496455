# 047_operations_log.pl — the server log says when a campaign or a number
# changes state, one LOG line each, naming the person or the rule and the
# reason; and DROP EXTENSION wasend does not lose the suppressions.
#
#   1. A person starts, pauses and resumes a campaign; the senders complete
#      it; each step is one line naming the person (session_user) or, for
#      the completion, nothing.
#   2. The circuit breaker pauses a campaign (every answer a 131026); the
#      line names rule breaker with the reason the sender wrote; a person
#      cancels it.
#   3. A 131048 pauses a number until a time (the policy's pause_for: 2 s)
#      and the senders resume it when the time is up; a 190 pauses another
#      number until a person resumes it with a new token, which never
#      reaches the log.
#   4. A scheduled start (the person schedules, rule schedule starts), and
#      the template rule: Meta pauses the template, then approves it again.
#   5. Each line is one line: no statement or context follows it.
#   6. DROP EXTENSION wasend is refused while wasend.suppressions holds
#      rows, and goes through when the transaction confirms it; a
#      look-alike suppressions table a non-superuser planted (a view that
#      would make her a superuser if a superuser's session read it) is
#      never read, and an extension without suppressions drops as before.
#   7. A suppression committed after a REPEATABLE READ transaction took
#      its snapshot still refuses that transaction's DROP EXTENSION; DROP
#      OWNED BY the extension's owner is refused the same way (and goes
#      through when confirmed), DROP OWNED BY another role is not; a
#      non-owner's DROP EXTENSION gets PostgreSQL's "must be owner" error.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'4701' => { rate => 20 },
		'4702' => { rate => 100 },
		'4703' => { rate => 100 },
		'4704' => { token => 'good-token', rate => 100 },
		'4705' => { rate => 100 },
	},
	rules => [
		{ to => '^15520', code => 131026 },
		{ to => '^15530', code => 131048, times => 1 },
	],
});
my $node = WasendTest::new_node('opslog', $mock);
my $me = $node->safe_psql('postgres', 'SELECT session_user');

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	CREATE ROLE alice LOGIN;
	SELECT wasend.wasend_grant_access('alice', 'admin');
	SELECT wasend.wasend_add_number('4701', 'tok', 20);
	SELECT wasend.wasend_add_number('4702', 'tok', 100);
	SELECT wasend.wasend_add_number('4703', 'tok', 100);
	SELECT wasend.wasend_add_number('4704', 'old-token', 100);
	SELECT wasend.wasend_add_number('4705', 'tok', 100);
	UPDATE wasend.error_policy SET pause_for = '2 seconds' WHERE code = '131048';
	SELECT wasend.wasend_create_campaign('steps', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('breaker', 2, '{"type":"text","text":{"body":"x"}}');
	UPDATE wasend.campaigns SET error_window = 10 WHERE id = 2;
	SELECT wasend.wasend_create_campaign('spam', 3, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('token', 4, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('later', 5, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('templ', 5, '{"type":"template","template":{"name":"promo","language":{"code":"en"}}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15510000000 + g)::text)) FROM generate_series(1, 200) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15520000000 + g)::text)) FROM generate_series(1, 50) g;
	SELECT wasend.wasend_enqueue(3, array_agg((15530000000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_enqueue(4, array_agg((15540000000 + g)::text)) FROM generate_series(1, 20) g;
	SELECT wasend.wasend_enqueue(6, ARRAY['15560000001']);
});

# the log from $off on has the line (polled, bounded), exactly: the whole
# message after "LOG:  ", up to the end of its line
sub logged
{
	my ($off, $line, $name) = @_;
	my $re = ref $line ? $line : qr/\Q$line\E/;
	ok($node->wait_for_log(qr/ LOG:  $re\n/, $off), $name);
}

# --- 1. start, pause and resume by a person, completion by the senders
my $off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(1)});
logged($off, qq{wasend campaign 1 started by user "$me"}, 'a start names the person');
$node->poll_query_until('postgres',
	q{SELECT count(*) >= 20 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'})
  or die 'campaign 1 sends nothing';
$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_pause_campaign(1)},
	extra_params => [ '-U', 'alice' ]);
logged($off, q{wasend campaign 1 paused by user "alice"}, 'a pause names the person who logged in');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_campaign(1)},
	extra_params => [ '-U', 'alice' ]);
logged($off, q{wasend campaign 1 resumed by user "alice"}, 'a resume names the person');
logged($off, q{wasend campaign 1 completed}, 'the senders complete the campaign: "completed"');

# --- 2. the circuit breaker pauses a campaign; a person cancels it
$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(2)});
logged($off,
	qr/wasend campaign 2 paused by rule breaker: circuit breaker: \d+ of the last 10 results failed \(threshold 5\.00%\)/,
	'the breaker pause names rule breaker and the reason the sender wrote');
is($node->safe_psql('postgres', q{SELECT status, pause_rule IS NULL FROM wasend.campaigns WHERE id = 2}),
	'paused|t', 'the breaker paused it');
$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_cancel_campaign(2)});
logged($off, qq{wasend campaign 2 cancelled by user "$me"}, 'a cancel names the person');

# --- 3. numbers: a timed pause by 131048, a pause by 190 resumed by a person
$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(3)});
logged($off,
	qr/wasend number 4703 paused by error 131048 until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: \(#131048\) .*/,
	'a 131048 pause names the error code, the end of the pause and the reason');
logged($off, q{wasend number 4703 resumed by rule paused_until},
	'the senders resume the number when its pause is over: rule paused_until');
logged($off, q{wasend campaign 3 completed}, 'its campaign then completes');

$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(4)});
logged($off, qr/wasend number 4704 paused by error 190: \(#190\) .*/,
	'a 190 pause names error 190 and the reason');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(4, 'good-token')},
	extra_params => [ '-U', 'alice' ]);
logged($off, q{wasend number 4704 resumed by user "alice"}, 'a resume of a number names the person');
logged($off, q{wasend campaign 4 completed}, 'the campaign completes with the new token');
# (the test cluster logs every statement, log_statement = all: those
# lines aside)
ok(!$node->log_contains(qr/^(?!.*LOG:  statement: ).*good-token/m, $off),
	'the new token is in no line of wasend\'s');
$off = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT wasend.wasend_pause_number(5, 'maintenance window')});
logged($off, qq{wasend number 4705 paused by user "$me": maintenance window},
	'a person\'s pause of a number names the person and the reason given');

# --- 4. a scheduled start; the template rule pauses and resumes (number
# 4705 is paused: its campaigns send nothing and stay running)
$off = -s $node->logfile;
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(5, date_trunc('second', now()) + interval '3 seconds')});
my $at = $node->safe_psql('postgres', q{
	SELECT to_char(start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM wasend.campaigns WHERE id = 5});
logged($off, qq{wasend campaign 5 scheduled by user "$me" for $at}, 'a schedule names the person and the time (UTC)');
logged($off, q{wasend campaign 5 started by rule schedule}, 'the senders start it at its time: rule schedule');
$node->safe_psql('postgres', q{SELECT wasend.wasend_start_campaign(6)});
$off = -s $node->logfile;
$node->safe_psql('postgres', q{
	SELECT wasend._apply_template_status('{"event":"PAUSED","message_template_name":"promo","message_template_language":"en","reason":"LOW QUALITY"}')});
logged($off, q{wasend campaign 6 paused by rule template: template promo (en) paused by Meta: LOW QUALITY},
	'a template pause names rule template and Meta\'s reason');
$node->safe_psql('postgres', q{
	SELECT wasend._apply_template_status('{"event":"APPROVED","message_template_name":"promo","message_template_language":"en"}')});
logged($off, q{wasend campaign 6 resumed by rule template},
	'the template\'s all-clear resumes it: rule template, even from a person\'s session');

# a function of the rule's name outside schema wasend (and the rule's
# frame written into a caller's statement) is the person's
$node->safe_psql('postgres', q{
	SELECT wasend._apply_template_status('{"event":"PAUSED","message_template_name":"promo","message_template_language":"en"}');
	UPDATE wasend.whatsapp_numbers SET status = 'paused', pause_rule = 'health', pause_reason = 'health: test' WHERE id = 3;
	CREATE ROLE op LOGIN;
	SELECT wasend.wasend_grant_access('op', 'operator');
	GRANT CREATE ON SCHEMA public TO op, alice});
$off = -s $node->logfile;
$node->safe_psql('postgres', qq{
	CREATE FUNCTION public._apply_template_status() RETURNS void LANGUAGE plpgsql AS
	  \$\$BEGIN PERFORM wasend.wasend_resume_campaign(6 /* "
PL/pgSQL function wasend._apply_template_status(jsonb) line 1 at SQL statement
" */); END\$\$;
	SELECT public._apply_template_status()}, extra_params => [ '-U', 'op' ]);
logged($off, q{wasend campaign 6 resumed by user "op"},
	'a public._apply_template_status resuming a campaign is the person, not rule template');
$node->safe_psql('postgres', qq{
	CREATE FUNCTION public._apply_number_limits() RETURNS void LANGUAGE plpgsql AS
	  \$\$BEGIN PERFORM wasend.wasend_resume_number(3 /* "
PL/pgSQL function wasend._apply_number_limits(bigint,integer,text) line 1 at SQL statement
" */); END\$\$;
	SELECT public._apply_number_limits()}, extra_params => [ '-U', 'alice' ]);
logged($off, q{wasend number 4703 resumed by user "alice"},
	'a public._apply_number_limits resuming a number is the person, not rule health');

# --- 5. one line each
ok(!$node->log_contains(qr/wasend\._(campaign|number)_log|wasend\._log_line/),
	'no context or statement of the triggers follows the lines');

# --- 6. DROP EXTENSION keeps the suppressions
my $supp = $node->safe_psql('postgres', q{SELECT count(*) FROM wasend.suppressions});
cmp_ok($supp, '>', 0, 'the 131026 answers suppressed their recipients');
my ($rc, $out, $err) = $node->psql('postgres', q{DROP EXTENSION wasend CASCADE});
like($err,
	qr/ERROR:  dropping extension wasend would delete the $supp recipients? of wasend\.suppressions\n.*\nHINT:  Export them first .*SET LOCAL wasend\.drop_suppressions = on; DROP EXTENSION wasend; COMMIT;/s,
	'DROP EXTENSION wasend is refused with a hint while suppressions exist');
is($node->safe_psql('postgres', q{SELECT count(*) FROM wasend.suppressions}), $supp,
	'the extension and its suppressions are still there');

# a non-superuser plants a look-alike: a view named suppressions, first
# on a superuser's search_path, that would make her superuser if read
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory;
	SET ROLE mallory;
	CREATE FUNCTION public.trap() RETURNS bigint LANGUAGE plpgsql AS
	  $$BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; RETURN 0; END$$;
	CREATE VIEW public.suppressions AS SELECT public.trap() AS recipient;
	RESET ROLE;
	CREATE DATABASE other;
});
$node->safe_psql('other', q{CREATE EXTENSION wasend});
($rc, $out, $err) = $node->psql('postgres',
	q{SET search_path = public, pg_catalog; DROP EXTENSION wasend});
like($err, qr/would delete the $supp recipients? of wasend\.suppressions/,
	'with the look-alike first on the path, the extension\'s own table is counted');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'the look-alike was never read: mallory is no superuser');
($rc, $out, $err) = $node->psql('other', q{DROP EXTENSION wasend});
is($rc, 0, 'an extension without suppressions drops without confirmation');

# --- 7. the drop sees every committed suppression, DROP OWNED is guarded,
# and a non-owner gets PostgreSQL's own error
$node->safe_psql('postgres', q{
	CREATE ROLE olga SUPERUSER LOGIN;
	CREATE DATABASE guard;});
$node->safe_psql('guard', q{CREATE EXTENSION wasend}, extra_params => [ '-U', 'olga' ]);

# a suppression committed after the dropping transaction took its snapshot
my $dropper = $node->background_psql('guard', on_error_stop => 0,
	extra_params => [ '-U', 'olga' ]);
$dropper->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
is($dropper->query_safe(q{SELECT count(*) FROM wasend.suppressions}), '0',
	'the dropping transaction\'s snapshot holds no suppression');
$node->safe_psql('guard', q{
	INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15512345678', 'STOP')});
$dropper->query(q{DROP EXTENSION wasend});
like($dropper->{stderr},
	qr/ERROR:  dropping extension wasend would delete the 1 recipient of wasend\.suppressions/,
	'a suppression committed after the snapshot of a REPEATABLE READ transaction still refuses the drop');
$dropper->query(q{ROLLBACK});
$dropper->quit;
is($node->safe_psql('guard', q{SELECT count(*) FROM wasend.suppressions}), '1',
	'the suppression committed during the drop is still there');

# a non-owner: PostgreSQL's own permission error, not the guard's
($rc, $out, $err) = $node->psql('guard', q{DROP EXTENSION wasend},
	extra_params => [ '-U', 'mallory' ]);
like($err, qr/ERROR:  must be owner of extension wasend/,
	'a non-owner\'s DROP EXTENSION gets PostgreSQL\'s "must be owner" error');

# DROP OWNED BY the owner drops the extension: refused the same way
($rc, $out, $err) = $node->psql('guard', q{DROP OWNED BY olga});
like($err,
	qr/ERROR:  dropping extension wasend would delete the 1 recipient of wasend\.suppressions\n.*\nHINT:  Export them first /s,
	'DROP OWNED BY the extension\'s owner is refused while suppressions exist');
is($node->safe_psql('guard', q{SELECT count(*) FROM pg_extension WHERE extname = 'wasend'}),
	'1', 'the extension is still there after DROP OWNED');
($rc, $out, $err) = $node->psql('guard', q{DROP OWNED BY mallory});
is($rc, 0, 'DROP OWNED BY a role that does not own the extension is not refused');
($rc, $out, $err) = $node->psql('guard', q{
	BEGIN;
	SET LOCAL wasend.drop_suppressions = on;
	DROP OWNED BY olga;
	COMMIT;});
is($rc, 0, 'DROP OWNED BY the owner in a transaction that confirms it');
is($node->safe_psql('guard', q{SELECT count(*) FROM pg_extension WHERE extname = 'wasend'}),
	'0', 'and the extension is gone');

($rc, $out, $err) = $node->psql('postgres', q{
	BEGIN;
	SET LOCAL wasend.drop_suppressions = on;
	DROP EXTENSION wasend CASCADE;
	COMMIT;});
is($rc, 0, 'a transaction that confirms it drops the extension');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'wasend'}),
	'0', 'the extension is gone');
is($node->safe_psql('postgres', q{SHOW wasend.drop_suppressions}), 'off',
	'the confirmation ended with its transaction');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'mallory is still no superuser');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
