# 015_poison.pl — no answer from the API and no SQL error kills a sender or
# strands a row, token-shaped text never reaches what a viewer can read,
# and a deeply nested answer is just a bad one.
#
# The mock answers, for single recipients among 100: an error whose message
# holds \u0000 (valid JSON that jsonb refuses: the batch's cast fails), an
# error.code above 2^31, 30,000 nested arrays (60 kB), and a 131056 on a
# row at attempt 99 of 100 (4 s x 4^98: a backoff that must be capped, not
# overflow).  A trigger makes recording one row raise a deadlock once, and
# another row's record fail always.  Two numbers get a 190 whose message
# echoes their own token, one shaped like a Meta token (EA...), one not; a
# fourth number, without a campaign, has its account read answered with an
# error that echoes its token (not EA-shaped).  Rows left 'sending' by a
# sender that no longer exists, already at max_attempts, are failed when
# the database's supervisor settles them (src/supervisor.c), instead of
# being queued again forever.
#
# Expected: the sender and launcher pids never change; the poison rows are
# failed as bad_response, the deadlocked row is sent, the overflowing row
# waits at most the 24 h cap; every other row is sent once; neither token
# appears in the server log or in anything a wasend_viewer can read
# (limits_error included).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $ea_token = 'EAAGm0ckT0kenValue1234567890abcdXYZ';
my $plain_token = 'plain-secret-token-of-number-c';
my $limits_token = 'plain-limits-token-of-number-d';
my $mock = WasendTest::start_mock({
	numbers => {
		'15001' => { token => 'tok-number-a-0001', rate => 100 },
		'15002' => { token => $ea_token, rate => 100 },
		'15003' => { token => $plain_token, rate => 100 },
		'15004' => { token => $limits_token, rate => 100,
			account_error => { http => 400, code => 190, echo_token => 1 } },
	},
	rules => [
		{ to => '^15595000011$', action => 'nul' },
		{ to => '^15595000012$', action => 'bigcode' },
		{ to => '^15595000013$', action => 'deep' },
		{ to => '^15595000017$', code => 131056, times => 1 },
		{ to => '^15595100001$', action => 'echo_token', times => 1 },
		{ to => '^15595200001$', action => 'echo_token', times => 1 },
	],
});
# log_statement = none: the test harness logs every statement by default,
# and this test's own SQL names the tokens (a user's log_statement = all
# logs their wasend.wasend_add_number() calls too; see README)
my $node = WasendTest::new_node('poison', $mock, 'wasend.max_attempts' => 100,
	# uncertain rows are queued or failed at once (056 tests the wait)
	'wasend.uncertain_retry_delay' => 0,
	log_statement => 'none');

$node->safe_psql('postgres', qq{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('15001', 'tok-number-a-0001', 100);
	SELECT wasend.wasend_add_number('15002', '$ea_token', 100);
	SELECT wasend.wasend_add_number('15003', '$plain_token', 100);
	SELECT wasend.wasend_add_number('15004', '$limits_token', 100);
	SELECT wasend.wasend_create_campaign('poison', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('echo-ea', 2, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_create_campaign('echo-plain', 3, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(1, array_agg((15595000000 + g)::text)) FROM generate_series(1, 100) g;
	SELECT wasend.wasend_enqueue(2, array_agg((15595100000 + g)::text)) FROM generate_series(1, 3) g;
	SELECT wasend.wasend_enqueue(3, array_agg((15595200000 + g)::text)) FROM generate_series(1, 3) g;
	UPDATE wasend.send_queue SET attempts = 98 WHERE recipient = '15595000017';

	-- recording 15595000016 deadlocks once; recording 15595000015 as sent
	-- always fails
	CREATE SEQUENCE public.deadlocks;
	CREATE FUNCTION public.poison_trigger() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
		IF NEW.recipient = '15595000016' AND NEW.status = 'sent'
		   AND pg_catalog.nextval('public.deadlocks') = 1 THEN
			RAISE EXCEPTION 'simulated deadlock' USING ERRCODE = '40P01';
		END IF;
		IF NEW.recipient = '15595000015' AND NEW.status = 'sent' THEN
			RAISE EXCEPTION 'boom: this row cannot be recorded';
		END IF;
		RETURN NEW;
	END \$\$;
	CREATE TRIGGER poison BEFORE UPDATE ON wasend.send_queue
		FOR EACH ROW EXECUTE FUNCTION public.poison_trigger();
});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM wasend.wasend_worker_stats()})
  or die 'senders did not start';
$node->safe_psql('postgres', q{CREATE ROLE spy LOGIN; SELECT wasend.wasend_grant_access('spy', 'viewer')});

# viewer_text(): everything a wasend_viewer member can read, as text
sub viewer_text
{
	my $tables = $node->safe_psql('postgres', q{
		SELECT string_agg(format('%I.%I', n.nspname, c.relname), ' ')
		  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = 'wasend' AND c.relkind IN ('r', 'v')
		   AND has_table_privilege('spy', c.oid, 'SELECT')});
	my $text = '';
	for my $t (split / /, $tables)
	{
		$text .= $node->safe_psql('postgres', "SET ROLE spy; SELECT string_agg(x::text, ' ') FROM $t x");
	}
	$text .= $node->safe_psql('postgres', q{
		SET ROLE spy; SELECT string_agg(concat_ws(' ', id, phone_number_id, status, pause_reason, limits_error), ' ')
		  FROM wasend.whatsapp_numbers});
	return $text;
}
my $pids_sql = q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type LIKE 'wasend sender%' OR backend_type = 'wasend launcher'};
my $pids = $node->safe_psql('postgres', $pids_sql);

$node->safe_psql('postgres', q{
	SELECT wasend.wasend_start_campaign(1);
	SELECT wasend.wasend_start_campaign(2);
	SELECT wasend.wasend_start_campaign(3);});

# the echoes pause numbers 2 and 3 (190); a person resumes them
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM wasend.whatsapp_numbers WHERE status = 'paused'}),
	'the token echoes pause their numbers');
my $reasons = $node->safe_psql('postgres',
	q{SELECT string_agg(pause_reason, E'\n' ORDER BY id) FROM wasend.whatsapp_numbers});
like($reasons, qr/Cannot parse access token: \[redacted token\] \(app token \[redacted token\]\)/,
	'pause reasons keep the text, the number\'s token and the EA-shaped one redacted');
my $seen = viewer_text();
like($seen, qr/\[redacted token\]/, 'a viewer sees the redacted error texts');
unlike($seen, qr/\Q$ea_token\E|\Q$plain_token\E|EAAJforeign/, 'and no token');
$node->safe_psql('postgres', q{SELECT wasend.wasend_resume_number(2); SELECT wasend.wasend_resume_number(3);});

# the account read of a number without a campaign fails with its token
# quoted: limits_error keeps the text, the token redacted
ok( $node->poll_query_until('postgres', q{
		SELECT limits_error IS NOT NULL FROM wasend.whatsapp_numbers WHERE id = 4}),
	'the failed account read is noted on the number');
my $limits_error = $node->safe_psql('postgres',
	q{SET ROLE spy; SELECT limits_error FROM wasend.whatsapp_numbers WHERE id = 4});
like($limits_error, qr/Cannot parse access token: \[redacted token\]/,
	'limits_error keeps the text with the number\'s own (non-EA) token redacted');
unlike($limits_error, qr/\Q$limits_token\E/, 'and a viewer reading it sees no token');

ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 3 FROM wasend.campaigns WHERE status = 'completed'
		    OR (id = 1 AND NOT EXISTS (SELECT 1 FROM wasend.send_queue
		                                WHERE campaign_id = 1 AND status = 'sending'
		                                   OR (status = 'ready' AND recipient <> '15595000017')))}),
	'every campaign finishes (but for the row waiting for its capped backoff)');

is($node->safe_psql('postgres', $pids_sql), $pids, 'sender and launcher pids unchanged');

is($node->safe_psql('postgres', q{
	SELECT recipient, status, coalesce(last_error_class, ''), attempts,
	       CASE WHEN last_error LIKE 'answer could not be recorded: %' THEN 'unrecordable'
	            ELSE coalesce(last_error, '') END
	  FROM wasend.send_queue
	 WHERE campaign_id = 1 AND (status <> 'sent' OR recipient BETWEEN '15595000011' AND '15595000017')
	 ORDER BY recipient}),
	join("\n",
		'15595000011|failed|bad_response|1|unrecordable',
		'15595000012|failed|bad_response|1|huge code',
		'15595000013|failed|bad_response|1|response is not JSON',
		'15595000014|sent||1|',
		'15595000015|failed|bad_response|1|unrecordable',
		'15595000016|sent||1|',
		'15595000017|ready|api|99|(#131056) (Business Account, Consumer Account) pair rate limit hit'),
	'poison answers fail their own row as bad_response; the deadlocked row is sent; the overflowing backoff is capped');
is($node->safe_psql('postgres', q{
	SELECT next_attempt_at BETWEEN now() + interval '19 hours' AND now() + interval '29 hours'
	  FROM wasend.send_queue WHERE recipient = '15595000017'}),
	't', 'the overflowing backoff waits 24 h (+-20%), not forever and not an error');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FROM wasend.send_queue}),
	'101|106', '101 of 106 rows sent: all but the 4 poison rows and the capped one');

WasendTest::load_mock_log($node, $mock);
my $a = WasendTest::account($node, 'mocklog');
is($a->{duplicates}, 0, 'no recipient accepted twice');

# --- rows of a sender that is gone, already at max_attempts: failed
$node->safe_psql('postgres', q{
	DROP TRIGGER poison ON wasend.send_queue;
	SELECT wasend.wasend_create_campaign('orphans', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend.wasend_enqueue(4, ARRAY['15595300001', '15595300002']);
	UPDATE wasend.send_queue SET status = 'sending', claimed_by = 4242, claimed_at = now(),
	       attempts = CASE recipient WHEN '15595300001' THEN 100 ELSE 1 END
	 WHERE campaign_id = 4;});
# a sender's exit makes its database's supervisor settle the rows whose
# claim token is no live sender's (4242 is none)
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'wasend sender 2'});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM wasend.send_queue WHERE campaign_id = 4 AND uncertain}),
	'the supervisor settles the orphaned rows');
is($node->safe_psql('postgres', q{
	SELECT string_agg(recipient || ':' || CASE WHEN status = 'failed' THEN 'failed:' || last_error_class
	                                           ELSE 'not failed' END, ',' ORDER BY recipient)
	  FROM wasend.send_queue WHERE campaign_id = 4}),
	'15595300001:failed:uncertain,15595300002:not failed',
	'an uncertain row at max_attempts is failed, the other is queued again');

# --- a call refused for want of access in this database is not logged
# with its statement: the token it carries stays out of the log
$node->safe_psql('postgres', q{CREATE ROLE stranger LOGIN; GRANT wasend_admin TO stranger});
my ($refused_ret, $refused_out, $refused_err) = $node->psql('postgres',
	q{SELECT wasend.wasend_add_number('15099', 'EAAGrefusedTokenOfAStranger15099', 80)},
	extra_params => [ '-U', 'stranger' ]);
like($refused_err, qr/permission denied: role stranger has no wasend admin access in database postgres/,
	'a member of wasend_admin without access in this database is refused');

# --- no token in the server log or anywhere a viewer can read
my $log = slurp_file($node->logfile);
unlike($log, qr/EAAGrefusedTokenOfAStranger15099/, 'the refused call\'s token is not in the server log');
unlike($log, qr/\Q$ea_token\E/, 'the EA-shaped token is not in the server log');
unlike($log, qr/\Q$plain_token\E/, 'the plain token is not in the server log');
like($log, qr/could not read the messaging limit of number 15004/,
	'the failed account read is in the server log');
unlike($log, qr/\Q$limits_token\E/, 'the token its account read echoed is not in the server log');
$seen = viewer_text();
cmp_ok(length($seen), '>', 1000, 'the viewer reads the tables (' . length($seen) . ' bytes)');
unlike($seen, qr/\Q$ea_token\E|\Q$plain_token\E|\Q$limits_token\E|EAAJforeign/,
	'no token in anything a viewer can read');

WasendTest::stop_mock($mock);
$node->stop;
done_testing();
