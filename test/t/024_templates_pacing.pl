# 024_templates_pacing.pl — template status and pacing, with real senders
# against the mock Graph API.
#
#   1. A message_template_status_update PAUSED pauses every running
#      campaign whose message is that template (name and language), with
#      the reason; no claim sees the pause and still takes a row (proven
#      from the claims' snapshots, not from timing); APPROVED resumes the
#      campaigns this rule paused, and they complete: every recipient once
#      in the mock log.  A campaign of the same template in another
#      language is not touched.
#   2. A send answered 200 with message_status held_for_quality_assessment
#      is 'held', not sent; the campaign (pacing 'meta') holds back: no
#      claim that sees the hold takes a row, the rows a sender had claimed
#      are given back, campaign_progress says so.  The held message's sent
#      status webhook settles it (sent_at from the webhook) and the campaign
#      goes on and completes.  A campaign with pacing 'off' keeps sending
#      while one of its messages is held; a held message whose status says
#      failed fails.
#   3. Pacing 'sample': a campaign that starts a template no campaign used
#      before sends exactly pacing_sample messages, holds back for
#      pacing_hold, then sends the rest.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

my $mock = WasendTest::start_mock({
	numbers => {
		'24001' => { token => 'tok-24001', rate => 20 },
		'24002' => { token => 'tok-24002', rate => 200 },
	},
	latency_ms => 20,
	rules => [
		# the 5th recipient of campaign 3 and of campaign 4 are held by Meta
		{ to => '^155524300005$', action => 'held_quality' },
		{ to => '^155524400005$', action => 'held_quality' },
	],
});
my $node = WasendTest::new_node('templates', $mock);

sub recipients
{
	my ($prefix, $from, $to) = @_;
	return 'ARRAY[' . join(',', map { sprintf("'%s%05d'", $prefix, $_) } $from .. $to) . ']';
}

sub template
{
	my ($name, $lang) = @_;
	return qq{'{"type":"template","template":{"name":"$name","language":{"code":"$lang"}}}'};
}

# what the queue looks like, for a failure message
sub state_of
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s: %s', campaign_id, status, n), E'\n')
		  FROM (SELECT campaign_id, status, count(*) n FROM wasend.send_queue
		         GROUP BY 1, 2 ORDER BY 1, 2) s})
	  . "\n" . $node->safe_psql('postgres', q{
		SELECT string_agg(format('campaign %s %s %s paced_until %s: %s', id, status, pause_rule,
		                         paced_until, pause_reason), E'\n' ORDER BY id) FROM wasend.campaigns});
}

sub ingest
{
	my (@changes) = @_;
	return $node->safe_psql('postgres',
		q{SELECT wasend._ingest_verified('} . WasendTest::webhook_body(@changes) . q{')});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('24001', 'tok-24001', 20);
	SELECT wasend.wasend_add_number('24002', 'tok-24002', 200);
});
WasendTest::install_state_log($node);
# the claims' snapshots against the campaigns' paced_until changes
$node->safe_psql('postgres', q{
	CREATE TABLE public.pace_log (id bigint, paced boolean, xid xid8, seq bigserial);
	CREATE FUNCTION public.log_pace() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.pace_log (id, paced, xid)
		VALUES (NEW.id, NEW.paced_until IS NOT NULL, pg_catalog.pg_current_xact_id());
		RETURN NULL;
	END $$;
	CREATE TRIGGER log_pace AFTER UPDATE OF paced_until ON wasend.campaigns FOR EACH ROW
		WHEN ((NEW.paced_until IS NULL) IS DISTINCT FROM (OLD.paced_until IS NULL))
		EXECUTE FUNCTION public.log_pace();
});

# --- 1. template status ---------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('promo en', 1, } . template('promo', 'en_US') . q{);
	SELECT wasend.wasend_create_campaign('promo es', 2, } . template('promo', 'es') . q{);
	SELECT wasend.wasend_enqueue(1, } . recipients('1555241', 1, 200) . q{);
	SELECT wasend.wasend_enqueue(2, } . recipients('1555242', 1, 20) . q{);
	SELECT wasend.wasend_start_campaign(1);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) >= 20 FROM wasend.send_queue WHERE campaign_id = 1 AND status = 'sent'})
  or die 'campaign 1 did not start: ' . state_of();
is(ingest(WasendTest::wh_template_status(event => 'PAUSED', name => 'promo', language => 'en_US',
		reason => 'LOW_QUALITY')) =~ /"campaigns_changed": 1/ ? 1 : 0, 1,
	'the PAUSED webhook changed one campaign');
is($node->safe_psql('postgres', q{
	SELECT status, pause_rule, pause_reason FROM wasend.campaigns WHERE id = 1}),
	'paused|template|template promo (en_US) paused by Meta: LOW_QUALITY',
	'the campaign of that template is paused, saying why');
is($node->safe_psql('postgres', q{SELECT name, language, status, reason FROM wasend.templates}),
	'promo|en_US|PAUSED|LOW_QUALITY', 'the template status is kept');
WasendTest::wait_quiet($node);
my $sent_while_paused = $node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.send_queue WHERE campaign_id = 1 AND status <> 'ready'});
cmp_ok($sent_while_paused, '<', 200, "the pause stopped the campaign ($sent_while_paused of 200 out)");
is($node->safe_psql('postgres', WasendTest::claims_seeing_pause_sql('campaigns', 1, 1)), '0',
	'no claim that saw the pause took a row');
# the other language: not this template
$node->safe_psql('postgres', 'SELECT wasend.wasend_start_campaign(2)');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 2})
  or die 'campaign 2 did not complete: ' . state_of();
pass('a campaign of the same template in another language runs while en_US is paused');

ingest(WasendTest::wh_template_status(event => 'APPROVED', name => 'promo', language => 'en_US'));
is($node->safe_psql('postgres', q{SELECT status, pause_rule FROM wasend.campaigns WHERE id = 1}),
	'running|', 'APPROVED resumes it');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 1})
  or die 'campaign 1 did not complete: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient), count(*) FILTER (WHERE http_status = 200)
	  FROM mocklog WHERE recipient LIKE '1555241%'}),
	'200|200|200', 'campaign 1: every recipient exactly once');

# --- 2. held for quality assessment, pacing 'meta' ------------------------
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('held', 1, } . template('fresh', 'en_US') . q{);
	SELECT wasend.wasend_create_campaign('no pacing', 2, } . template('fresh2', 'en_US') . q{,
	                              pacing => 'off');
	SELECT wasend.wasend_enqueue(3, } . recipients('1555243', 1, 100) . q{);
	SELECT wasend.wasend_enqueue(4, } . recipients('1555244', 1, 50) . q{);
	SELECT wasend.wasend_start_campaign(3);
	SELECT wasend.wasend_start_campaign(4);
});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'held'})
  or die 'campaign 3 was not held: ' . state_of();
$node->poll_query_until('postgres', q{
	SELECT paced_until > now() + interval '14 minutes' FROM wasend.campaigns WHERE id = 3})
  or die 'campaign 3 does not hold back: ' . state_of();
WasendTest::wait_quiet($node);
is($node->safe_psql('postgres', q{
	SELECT recipient, status, wa_message_id LIKE 'wamid.%', sent_at IS NULL, failed_at IS NULL
	  FROM wasend.send_queue WHERE campaign_id = 3 AND status = 'held' ORDER BY 1}),
	"155524300005|held|t|t|t",
	'the held answer is held: wamid stored, not sent');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM wasend.held_messages WHERE campaign_id = 3}), '1',
	'it waits in held_messages');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM public.claim_log c
		    JOIN public.pace_log p ON p.id = 3 AND p.paced
		   WHERE c.campaign_id = 3 AND pg_visible_in_snapshot(p.xid, c.snap)
		     AND NOT EXISTS (SELECT 1 FROM public.pace_log r WHERE r.id = 3 AND r.seq > p.seq
		                      AND pg_visible_in_snapshot(r.xid, c.snap))}),
	'0', 'no claim that saw the hold took a row');
my ($ready3, $out3) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'ready'), count(*) FILTER (WHERE status <> 'ready')
	  FROM wasend.send_queue WHERE campaign_id = 3});
cmp_ok($ready3, '>', 0, "campaign 3 holds back with $ready3 rows ready ($out3 out)");
like($node->safe_psql('postgres', q{SELECT held || ' / ' || waiting FROM wasend.campaign_progress WHERE campaign_id = 3}),
	qr{^1 / pacing: 1 held for a quality assessment, new rows wait until .* at the latest$},
	'campaign_progress shows the held messages and why the campaign waits');
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM mocklog WHERE recipient LIKE '1555243%'}), $out3,
	'the mock saw exactly the rows that are out, each once');

# pacing 'off': campaign 4 completed although one of its messages is held
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 4})
  or die 'campaign 4 did not complete: ' . state_of();
is($node->safe_psql('postgres', q{
	SELECT status, count(*) FROM wasend.send_queue WHERE campaign_id = 4 GROUP BY 1 ORDER BY 1}),
	"held|1\nsent|49", "pacing 'off' sends on while a message is held");

# the status webhooks settle the held messages: one sent, one failed
my ($w5, $w6) = split /\n/, $node->safe_psql('postgres', q{
	SELECT wa_message_id FROM wasend.send_queue WHERE status = 'held' ORDER BY recipient});
my $ts = time() - 100;
ingest(WasendTest::wh_status(statuses => [
	{ id => $w5, status => 'sent', recipient_id => '155524300005', timestamp => $ts },
	{ id => $w6, status => 'failed', recipient_id => '155524400005', timestamp => $ts + 1,
	  errors => [ { code => 131049, title => 'This message was not delivered to maintain healthy ecosystem engagement.' } ] } ]));
is($node->safe_psql('postgres', q{
	SELECT recipient, status, extract(epoch FROM sent_at), extract(epoch FROM failed_at), last_error_code
	  FROM wasend.send_queue WHERE recipient IN ('155524300005', '155524400005')
	 ORDER BY 1}),
	"155524300005|sent|$ts.000000||\n155524400005|failed||" . ($ts + 1) . ".000000|131049",
	'the sent status settles a held row, the failed status fails the other');
is($node->safe_psql('postgres', q{
	SELECT paced_until IS NULL, (SELECT count(*) FROM wasend.held_messages WHERE campaign_id = 3)
	  FROM wasend.campaigns WHERE id = 3}),
	't|0', 'no held message left: the campaign stops holding back');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 3})
  or die 'campaign 3 did not complete: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient) FROM mocklog WHERE recipient LIKE '1555243%'}),
	'100|100', 'campaign 3: every recipient exactly once');

# --- 3. pacing 'sample' ---------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT wasend.wasend_create_campaign('sample', 2, } . template('brand_new', 'en_US') . q{);
	SELECT wasend.wasend_update_campaign(5, pacing => 'sample', pacing_sample => 10,
	                              pacing_hold => '3 seconds');
	SELECT wasend.wasend_enqueue(5, } . recipients('1555245', 1, 60) . q{);
	SELECT wasend.wasend_start_campaign(5);
});
$node->poll_query_until('postgres', q{
	SELECT paced_until IS NOT NULL AND sample_left IS NULL FROM wasend.campaigns WHERE id = 5})
  or die 'campaign 5 did not send its sample: ' . state_of();
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM wasend.campaigns WHERE id = 5})
  or die 'campaign 5 did not complete after the hold: ' . state_of();
WasendTest::load_mock_log($node, $mock);
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT recipient) FROM mocklog WHERE recipient LIKE '1555245%'}),
	'60|60', 'campaign 5: all 60 went out once after the hold');
# the sample: exactly 10 rows were claimed before the hold's end, the
# other 50 after it (a claim takes nothing while paced_until > its now())
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE q.claimed_at < c.paced_until),
	       count(*) FILTER (WHERE q.claimed_at >= c.paced_until),
	       c.paced_until - c.pacing_hold <= min(q.claimed_at) + interval '1 minute'
	  FROM wasend.send_queue q JOIN wasend.campaigns c ON c.id = q.campaign_id
	 WHERE c.id = 5 GROUP BY c.paced_until, c.pacing_hold}),
	'10|50|t', 'a new template: the sample of 10 went out, the other 50 only after the hold');
is($node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT c.row_id) FROM public.claim_log c
	  JOIN wasend.send_queue q ON q.id = c.row_id WHERE q.campaign_id = 5}),
	'60|60', 'every row of campaign 5 was claimed once');

done_testing();
