# 020_upgrade.pl — CREATE EXTENSION wasend and ALTER EXTENSION wasend
# UPDATE from every old base version give exactly the same 0.6.0.
# A fresh install runs wasend--0.6.0.sql, which make builds from the topic
# sources in sql/src/ (sql/README.md); an update from 0.1.0 runs
# wasend--0.1.0.sql and every update script in sql/updates/, one from 0.2.0
# wasend--0.2.0.sql and the update scripts from 0.2.0--0.3.0 on.  A topic
# source that says something the update scripts do not (or the reverse)
# makes the databases differ here; and the installed script is checked to
# be made of the current topic sources, so that the comparison is of them.
#
# One cluster: "fresh" gets CREATE EXTENSION wasend (0.6.0), "upgraded"
# gets 0.1.0 and "upgraded_020" 0.2.0, each then ALTER EXTENSION wasend
# UPDATE.  Compared with fresh, for both: pg_dump --schema-only (which
# shows only CREATE EXTENSION), the same with --binary-upgrade (which
# dumps every member object: tables, columns with their missing values,
# constraints, indexes, triggers, functions with their SECURITY and SET
# clauses, the views, comments, privileges and initial privileges; only
# OIDs, LSNs and transaction ids are normalized away), catalog queries for
# the grants of the wasend roles, every function's security and settings,
# and what pg_dump dumps (extconfig / extcondition), and the rows the
# extension ships (error policy, country zones, claim locks).  A further
# database, "upgraded_data", is upgraded with rows in it: claimed_by keeps
# its values as bigint, stored tokens are redacted, and the error policy
# rows users edited or added are marked as such (and dumped).  Another,
# "from_020", gets 0.2.0 with rows and is updated to 0.6.0: campaigns get
# their category, numbers their portfolio, suppressions the scope 'all',
# the built-in 131049 rule its 24 h wait (an edited 131049 stays as the
# user left it), and a campaign still takes a recipient once (0.4.0's
# unique index replaces the constraint).  No supervisor runs in these
# databases (wasend.databases), so nothing but the scripts touches them.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WasendTest;

# no mock: no database here runs a campaign
my $node = WasendTest::new_node('upgrade', { url => 'http://127.0.0.1:9/v21.0' },
	'wasend.workers' => 0, 'wasend.databases' => "'postgres'");

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded_data');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded_020');

$node->safe_psql('fresh', 'CREATE EXTENSION wasend');
is($node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'wasend'}),
	'0.6.0', 'CREATE EXTENSION installs 0.6.0 by default');

$node->safe_psql('upgraded', q{CREATE EXTENSION wasend VERSION '0.1.0'});
is($node->safe_psql('upgraded', q{SELECT extversion FROM pg_extension WHERE extname = 'wasend'}),
	'0.1.0', '0.1.0 is still installable');
$node->safe_psql('upgraded', 'ALTER EXTENSION wasend UPDATE');
is($node->safe_psql('upgraded', q{SELECT extversion FROM pg_extension WHERE extname = 'wasend'}),
	'0.6.0', 'ALTER EXTENSION wasend UPDATE goes to 0.6.0');
$node->safe_psql('upgraded_020', q{CREATE EXTENSION wasend VERSION '0.2.0'});
$node->safe_psql('upgraded_020', 'ALTER EXTENSION wasend UPDATE');
is($node->safe_psql('upgraded_020', q{SELECT extversion FROM pg_extension WHERE extname = 'wasend'}),
	'0.6.0', 'ALTER EXTENSION wasend UPDATE goes from 0.2.0 to 0.6.0');

# The installed wasend--0.6.0.sql is made of the topic sources of this
# tree and nothing else: each source's text is in it once, and what is
# left is make's one header line and one marker line per source.
{
	my $sharedir = `pg_config --sharedir`;
	chomp $sharedir;
	my $script = slurp_file("$sharedir/extension/wasend--0.6.0.sql");
	my @sources = sort glob("$ENV{WASEND_ROOT}/sql/src/*.sql");
	cmp_ok(scalar(@sources), '>', 5, 'the topic sources are there');
	my $rest = $script;
	for my $f (@sources)
	{
		my $text = slurp_file($f);
		my $count = () = $script =~ /\Q$text\E/g;
		is($count, 1, "the installed script holds sql/src/" . (split m{/}, $f)[-1] . " once, as it is");
		$rest =~ s/\Q$text\E//;
	}
	$rest =~ s/^-- ---- sql\/src\/\S+\.sql$//mg;
	$rest =~ s/\A-- wasend--0\.6\.0\.sql: made by make .*$//m;
	my $left = $rest =~ s/\s+/ /gr;
	$left =~ s/^ | $//g;
	is(substr($left, 0, 200), '', 'the installed script holds nothing but the topic sources');
}

# pg_dump of one database, as text
sub dump_of
{
	my ($db, @opts) = @_;
	my ($out, $err);
	IPC::Run::run([ 'pg_dump', '--schema-only', @opts, '-d', $node->connstr($db) ],
		'>', \$out, '2>', \$err)
	  or die "pg_dump $db failed: $err";
	return $out;
}

# what differs between two databases by construction: the \restrict key of
# pg_dump, and in --binary-upgrade mode the OIDs, relfilenodes, LSNs and
# transaction ids it carries over
sub normalize
{
	my ($text) = @_;
	$text =~ s/^\\(un)?restrict \S+$/\\$1restrict KEY/mg;
	$text =~ s/'[0-9]+'/'N'/g;
	$text =~ s/'\{[0-9,]+\}'/'{OIDS}'/g;
	$text =~ s/\b[0-9A-F]+\/[0-9A-F]+\b/LSN/g;
	return $text;
}

# is() on two long texts, with a unified diff in the output when they differ
sub same_text
{
	my ($got, $expected, $name) = @_;
	if ($got eq $expected)
	{
		pass($name);
		return;
	}
	my $dir = PostgreSQL::Test::Utils::tempdir();
	PostgreSQL::Test::Utils::append_to_file("$dir/upgraded", $got);
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh", $expected);
	my ($diff) = PostgreSQL::Test::Utils::run_command(
		[ 'diff', '-u', "$dir/fresh", "$dir/upgraded" ]);
	fail($name);
	diag($diff);
	return;
}

my @upgraded = ('upgraded', 'upgraded_020');
my $plain_fresh = dump_of('fresh');
like($plain_fresh, qr/CREATE EXTENSION IF NOT EXISTS wasend/, 'the plain dump names the extension');
my $bu_fresh = normalize(dump_of('fresh', '--binary-upgrade'));
like($bu_fresh, qr/ALTER EXTENSION wasend ADD FUNCTION wasend\._redact\(msg text\)/,
	'the binary-upgrade dump lists the extension\'s members');
like($bu_fresh, qr/binary_upgrade_set_missing_value/,
	'the binary-upgrade dump carries the missing values of added columns');
for my $db (@upgraded)
{
	same_text(normalize(dump_of($db)), normalize($plain_fresh),
		"pg_dump --schema-only: $db = fresh");
	same_text(normalize(dump_of($db, '--binary-upgrade')), $bu_fresh,
		"pg_dump --schema-only --binary-upgrade: every member object, its privileges and comments: $db = fresh");
}

# the catalog, query by query
my %catalog = (
	'table privileges of the wasend roles' => q{
		SELECT grantee, table_schema, table_name, privilege_type, is_grantable
		  FROM information_schema.role_table_grants
		 WHERE grantee LIKE 'wasend\_%' ORDER BY 1, 2, 3, 4},
	'column privileges of the wasend roles' => q{
		SELECT grantee, table_schema, table_name, column_name, privilege_type
		  FROM information_schema.column_privileges
		 WHERE grantee LIKE 'wasend\_%' ORDER BY 1, 2, 3, 4, 5},
	'routine privileges' => q{
		SELECT grantee, routine_schema, routine_name, privilege_type
		  FROM information_schema.routine_privileges
		 WHERE routine_name LIKE '%wasend%' OR routine_schema = 'wasend' ORDER BY 1, 2, 3, 4},
	'sequence privileges' => q{
		SELECT c.relname, r.rolname, has_sequence_privilege(r.rolname, c.oid, 'USAGE, SELECT, UPDATE')
		  FROM pg_class c CROSS JOIN pg_roles r
		 WHERE c.relnamespace = 'wasend'::regnamespace AND c.relkind = 'S'
		   AND r.rolname LIKE 'wasend\_%' ORDER BY 1, 2},
	'every function: security, settings, volatility, body' => q{
		SELECT p.oid::regprocedure, p.prosecdef, p.proconfig, p.provolatile, p.proparallel,
		       p.proisstrict, l.lanname, md5(p.prosrc), p.proacl
		  FROM pg_proc p
		  JOIN pg_language l ON l.oid = p.prolang
		  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
		 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wasend')
		 ORDER BY p.oid::regprocedure::text},
	'what pg_dump dumps (extconfig, extcondition)' => q{
		SELECT extversion, extconfig::regclass[]::text[], extcondition
		  FROM pg_extension WHERE extname = 'wasend'},
	'columns' => q{
		SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
		       a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.atthasmissing, a.attacl,
		       col_description(c.oid, a.attnum)
		  FROM pg_attribute a
		  JOIN pg_class c ON c.oid = a.attrelid
		  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
		 WHERE c.relnamespace = 'wasend'::regnamespace AND a.attnum > 0
		 ORDER BY 1, 2},
	'relations, options and privileges' => q{
		SELECT relname, relkind, reloptions, relacl, obj_description(oid, 'pg_class')
		  FROM pg_class WHERE relnamespace = 'wasend'::regnamespace ORDER BY 1},
	'constraints' => q{
		SELECT conrelid::regclass, conname, pg_get_constraintdef(oid)
		  FROM pg_constraint WHERE connamespace = 'wasend'::regnamespace
		 ORDER BY conrelid::regclass::text, conname},
	'triggers' => q{
		SELECT tgrelid::regclass, tgname, pg_get_triggerdef(oid)
		  FROM pg_trigger WHERE NOT tgisinternal
		   AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'wasend'::regnamespace)
		 ORDER BY tgrelid::regclass::text, tgname},
	'views' => q{SELECT pg_get_viewdef('wasend.campaign_progress'::regclass),
	                    pg_get_viewdef('wasend.campaign_report'::regclass)},
	'rows the extension ships: error policy' => q{
		SELECT p::text FROM wasend.error_policy p ORDER BY code},
	'rows the extension ships: country zones' => q{
		SELECT z::text FROM wasend.country_zones z ORDER BY calling_code},
	'rows the extension ships: claim locks' => q{
		SELECT l::text FROM wasend.claim_locks l ORDER BY name},
	'initial privileges' => q{
		SELECT i.classoid::regclass, i.objsubid, i.privtype, i.initprivs,
		       CASE i.classoid WHEN 'pg_class'::regclass THEN i.objoid::regclass::text
		                       WHEN 'pg_proc'::regclass THEN i.objoid::regprocedure::text
		                       WHEN 'pg_namespace'::regclass THEN i.objoid::regnamespace::text END
		  FROM pg_init_privs i
		  JOIN pg_depend d ON d.classid = i.classoid AND d.objid = i.objoid AND d.deptype = 'e'
		 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wasend')
		 ORDER BY i.classoid::regclass::text, 5, i.objsubid},
);
for my $what (sort keys %catalog)
{
	my $fresh = $node->safe_psql('fresh', $catalog{$what});
	isnt($fresh, '', "$what: not empty");
	same_text($node->safe_psql($_, $catalog{$what}), $fresh, "$what: $_ = fresh") for @upgraded;
}

# an upgrade with rows in the tables
$node->safe_psql('upgraded_data', q{
	CREATE EXTENSION wasend VERSION '0.1.0';
	SELECT wasend_add_number('1001', 'tok-a', 80);
	SELECT wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend_enqueue(1, ARRAY['15551400001', '15551400002', '15551400003']);
	UPDATE wasend.send_queue SET status = 'sending', attempts = 1, claimed_at = now(), claimed_by = 2147483647
	 WHERE recipient = '15551400001';
	UPDATE wasend.send_queue SET status = 'failed', attempts = 1, failed_at = now(), last_error_class = 'api',
	       last_error_code = 190, last_error = 'Invalid OAuth access token - Cannot parse access token EAAGm0PX4ZCpsBAKZCdeadbeef0123'
	 WHERE recipient = '15551400002';
	UPDATE wasend.error_policy SET backoff = '3 seconds' WHERE code = '131000';
	INSERT INTO wasend.error_policy (code, action, description) VALUES ('131099', 'fail', 'added before the upgrade');
	DELETE FROM wasend.error_policy WHERE code = '131047';
	-- a built-in row 0.6.0 changes, edited; a code 0.6.0 ships, added
	UPDATE wasend.error_policy SET description = 'ours: format mismatch' WHERE code = '132012';
	INSERT INTO wasend.error_policy (code, action, description) VALUES ('131062', 'retry', 'ours');
	ALTER EXTENSION wasend UPDATE;
});
is($node->safe_psql('upgraded_data', q{
	SELECT recipient, status, claimed_by, pg_typeof(claimed_by), last_error
	  FROM wasend.send_queue ORDER BY recipient}),
	"15551400001|sending|2147483647|bigint|\n"
	  . "15551400002|failed||bigint|Invalid OAuth access token - Cannot parse access token [redacted token]\n"
	  . "15551400003|ready||bigint|",
	'claimed_by is bigint with its values kept; the stored token is redacted');
is($node->safe_psql('upgraded_data', q{
	SELECT origin, count(*), string_agg(code, ',' ORDER BY code) FILTER (WHERE origin <> 'builtin')
	  FROM wasend.error_policy GROUP BY 1 ORDER BY 1}),
	"added|2|131062,131099\nbuiltin|138|\nedited|2|131000,132012",
	'error policy rows: an edited code is edited, an added code added, the rest built in');
is($node->safe_psql('upgraded_data', q{
	SELECT string_agg(code || ':' || action || ':' || description, ' ' ORDER BY code)
	  FROM wasend.error_policy WHERE code IN ('131062', '132000', '132012')}),
	'131062:retry:ours 132000:fail:template parameter count mismatch in this row\'s message: fail the row '
	  . '(the circuit breaker pauses a campaign whose rows keep failing) 132012:pause_campaign:ours: format mismatch',
	"the update changes the built-in rows as shipped only: a user's edited or added row is kept");
my ($data) = PostgreSQL::Test::Utils::run_command(
	[ 'pg_dump', '--data-only', '-d', $node->connstr('upgraded_data') ]);
my ($policy_rows) = $data =~ /^COPY wasend\.error_policy \(.*?\n(.*?)^\\\.$/ms;
is(join(' ', sort map { (split /\t/)[0] } split /\n/, $policy_rows // ''), '131000 131062 131099 132012',
	'pg_dump dumps the edited and the added error policy row, not the built-in ones');

# 0.2.0 with rows, updated to 0.6.0
$node->safe_psql('postgres', 'CREATE DATABASE from_020');
$node->safe_psql('from_020', q{
	CREATE EXTENSION wasend VERSION '0.2.0';
	SELECT wasend_add_number('2001', 'tok-a', 80);
	SELECT wasend_add_number('2002', 'tok-b', 80);
	SELECT wasend_create_campaign('tpl', 1, '{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}');
	SELECT wasend_create_campaign('txt', 2, '{"type":"text","text":{"body":"x"}}');
	SELECT wasend_enqueue(1, ARRAY['15552000001', '15552000002']);
	INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15552000009', 'replied STOP');
	UPDATE wasend.error_policy SET description = 'mine' WHERE code = '131050';
	ALTER EXTENSION wasend UPDATE;
});
is($node->safe_psql('from_020', q{SELECT extversion FROM pg_extension WHERE extname = 'wasend'}),
	'0.6.0', '0.2.0 updates to 0.6.0');
is($node->safe_psql('from_020', q{
	SELECT id, category, template_name, template_language, pacing, pause_on_quality
	  FROM wasend.campaigns ORDER BY id}),
	"1|marketing|promo|en_US|meta|t\n2|service|||meta|t",
	'a template campaign becomes marketing, a text campaign service');
is($node->safe_psql('from_020', q{SELECT portfolio, messaging_limit FROM wasend.portfolios ORDER BY 1}),
	"number:1|\nnumber:2|", 'each number is a portfolio of its own, limit unknown');
is($node->safe_psql('from_020', q{
	SELECT phone_number_id, limits_due_at = '-infinity', limits_checked_at IS NULL
	  FROM wasend.whatsapp_numbers ORDER BY 1}),
	"2001|t|t\n2002|t|t", 'the numbers are due to be read');
is($node->safe_psql('from_020', q{SELECT recipient, scope FROM wasend.suppressions}),
	'15552000009|all', 'an old suppression holds for every campaign');
is($node->safe_psql('from_020', q{
	SELECT code, action, backoff, jitter, retry_once, origin FROM wasend.error_policy
	 WHERE code IN ('131049', '131050') ORDER BY 1}),
	"131049|retry|24:00:00|0|t|builtin\n131050|fail|00:00:02|0.2|f|edited",
	'131049 waits 24 h and is tried once more; the edited 131050 row is kept');
is($node->safe_psql('from_020', q{
	SELECT status, count(*) FROM wasend.send_queue GROUP BY 1}),
	'ready|2', 'the queue rows are kept');
is($node->safe_psql('from_020', q{SELECT wasend.wasend_enqueue(1, ARRAY['15552000001', '15552000003'])}),
	'1', 'a recipient already queued is still skipped (the unique index of 0.4.0)');
is($node->safe_psql('from_020', q{SELECT kind, priority, send_timezone FROM wasend.campaigns WHERE id = 1}),
	'campaign|0|recipient', 'old campaigns are plain campaigns of priority 0, windowless');


# Operators planted in public before CREATE EXTENSION and before an update
# (any role can, in a database whose public schema still grants CREATE to
# everybody, as before PostgreSQL 15): the extension script binds some
# expressions with its own search_path, the extension's schema first, and
# an operator that matches an untyped literal better (#>>(jsonb, text)) or
# a bigint operand exactly (||(text, bigint)) would be bound instead of
# pg_catalog's, and run as whoever runs the expression: the superuser
# running the update, or every later campaign insert (generated column).
# Each trap warns "TRAP" when it runs.
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	CREATE DATABASE trapped;
	CREATE DATABASE trapped_up;
});
for my $db (qw(trapped trapped_up))
{
	$node->safe_psql($db, q{GRANT CREATE ON SCHEMA public TO PUBLIC});
	$node->safe_psql($db, q{CREATE EXTENSION wasend VERSION '0.2.0'}) if $db eq 'trapped_up';
	$node->safe_psql($db, q{
		SET ROLE mallory;
		CREATE FUNCTION public.trap_path(jsonb, text) RETURNS text LANGUAGE plpgsql IMMUTABLE
		AS $$ BEGIN RAISE WARNING 'TRAP #>> ran as %', current_user; RETURN NULL; END $$;
		CREATE OPERATOR public.#>> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.trap_path);
		CREATE FUNCTION public.trap_cat(text, bigint) RETURNS text LANGUAGE plpgsql IMMUTABLE
		AS $$ BEGIN RAISE WARNING 'TRAP || ran as %', current_user; RETURN $1 || $2::text; END $$;
		CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = bigint, FUNCTION = public.trap_cat);
		CREATE FUNCTION public.trap_get(jsonb, text) RETURNS text LANGUAGE plpgsql IMMUTABLE
		AS $$ BEGIN RAISE WARNING 'TRAP ->> ran as %', current_user; RETURN NULL; END $$;
		CREATE OPERATOR public.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.trap_get);
	});
	if ($db eq 'trapped_up')
	{
		$node->safe_psql($db, q{
			SELECT wasend_add_number('3001', 'tok', 80);
			SELECT wasend_create_campaign('t', 1, '{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}');
			ALTER EXTENSION wasend UPDATE;
		});
	}
	else
	{
		$node->safe_psql($db, q{CREATE EXTENSION wasend});
	}
	my ($out, $err) = ('', '');
	$node->psql($db, q{
		SELECT wasend.wasend_add_number('3002', 'tok', 80);
		SELECT wasend.wasend_create_campaign('u', (SELECT max(id) FROM wasend.whatsapp_numbers),
		                              '{"type":"template","template":{"name":"x","language":{"code":"en"}}}');
		SELECT template_name, template_language FROM wasend.campaigns ORDER BY id DESC LIMIT 1},
		stdout => \$out, stderr => \$err);
	unlike($err, qr/WARNING:  TRAP/, "$db: no planted operator runs when campaigns are added");
	is((split /\n/, $out)[-1], 'x|en', "$db: the template columns are computed by pg_catalog's #>>");
	is($node->safe_psql($db, q{
		SELECT count(*) FROM pg_depend d
		 WHERE d.classid <> 'pg_operator'::regclass   -- (the traps' own operators)
		   AND ((d.refclassid = 'pg_operator'::regclass
		         AND d.refobjid IN (SELECT oid FROM pg_operator WHERE oprnamespace = 'public'::regnamespace))
		        OR (d.refclassid = 'pg_proc'::regclass
		            AND d.refobjid IN (SELECT oid FROM pg_proc WHERE proname LIKE 'trap\_%')))}),
		'0', "$db: nothing of the extension depends on a planted operator");
}
unlike(slurp_file($node->logfile), qr/WARNING:  TRAP/, 'no trap ran during CREATE EXTENSION or the update');

$node->stop;

done_testing();

