# 051_recipient_zones.pl — the judge of recipients keeps a copy of the
# calling codes of wasend.country_zones in each session; a change another
# session commits reaches a session that holds a copy:
#
#   1. A calling code added, then removed, by another session: a session
#      that judged a number of it before judges it again by the table as
#      it is now (wasend_check_recipient and wasend_enqueue).
#   2. A REPEATABLE READ transaction judges by its snapshot, and the next
#      transaction by the table as it is.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('zones');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'wasend'\nwasend.workers = 0\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION wasend;
	SELECT wasend.wasend_add_number('9001', 'tok', 50);
	SELECT wasend.wasend_create_campaign('c', 1, '{"type":"text","text":{"body":"x"}}');
});

my $check = q{SELECT valid FROM wasend.wasend_check_recipient('999123456');};
my $s1 = $node->background_psql('postgres');
is($s1->query_safe($check), 'f', 'a number of a calling code the table lacks is invalid');

$node->safe_psql('postgres',
	q{INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'UTC')});
is($s1->query_safe($check), 't', 'a calling code another session added is known to a session that judged before');
is($s1->query_safe(q{SELECT wasend.wasend_enqueue(1, ARRAY['999123457'])}), '1',
	'and wasend_enqueue queues a number of it');

$node->safe_psql('postgres', q{DELETE FROM wasend.country_zones WHERE calling_code = '999'});
is($s1->query_safe($check), 'f', 'a calling code another session removed is unknown again');

$s1->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
is($s1->query_safe($check), 'f', 'a repeatable read transaction judges by its snapshot');
$node->safe_psql('postgres',
	q{INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'UTC')});
is($s1->query_safe($check), 'f', 'a change committed after its snapshot is not seen in it');
$s1->query_safe(q{COMMIT});
is($s1->query_safe($check), 't', 'the next transaction sees the change');

$s1->quit;
$node->stop;
done_testing();
