#!/usr/bin/perl
# test/structure.pl — the code's shape, checked on the built objects:
#   1. every symbol wasend.so exports is wasend_-prefixed, besides the ones
#      PostgreSQL requires (_PG_init, Pg_magic_func, pg_finfo_*): modules
#      share one symbol namespace with every other preloaded library;
#   2. the modules (src/*.o) form a DAG by linker symbols: a module uses
#      only modules below it;
#   3. no C function is 100 lines or longer.
# Run from the source tree after `make`; prints what breaks a rule and
# exits non-zero.
use strict;
use warnings;

my $root = shift // '.';
my $fail = 0;

# 1. exported symbols
my @bad = grep { !/^(wasend_|pg_finfo_|Pg_magic_func$|_PG_init$)/ }
  map { (split)[2] } grep { /^\S+ [A-Z] / } `nm -g --defined-only $root/wasend.so`;
if (@bad)
{
	print "exported symbols without the wasend_ prefix: @bad\n";
	$fail = 1;
}

# 2. module graph by linker symbols
my (%owner, %uses);
for my $o (glob "$root/src/*.o")
{
	my ($m) = $o =~ m{([^/]+)\.o$};
	$uses{$m} = [];
	for (`nm $o`)
	{
		if (/^\S+ [TDBRC] (\S+)$/) { $owner{$1} = $m; }
		elsif (/^\s+U (\S+)$/) { push @{ $uses{$m} }, $1; }
	}
}
my %edge;
for my $m (keys %uses)
{
	for my $s (@{ $uses{$m} })
	{
		my $to = $owner{$s};
		$edge{$m}{$to} = 1 if defined $to && $to ne $m;
	}
}
# depth-first search for a back edge
my (%state, @stack, @cycles);
sub visit
{
	my ($m) = @_;
	$state{$m} = 1;
	push @stack, $m;
	for my $to (sort keys %{ $edge{$m} || {} })
	{
		if (($state{$to} // 0) == 1)
		{
			my @c = @stack;
			shift @c while $c[0] ne $to;
			push @cycles, join(' -> ', @c, $to);
		}
		visit($to) unless $state{$to};
	}
	pop @stack;
	$state{$m} = 2;
}
visit($_) for grep { !$state{$_} } sort keys %uses;
if (@cycles)
{
	print "module dependency cycle: $_\n" for @cycles;
	$fail = 1;
}
die "no objects in $root/src: run make first\n" unless %uses;

# 3. function length (PostgreSQL style: the name at the start of a line,
# the braces alone on theirs)
for my $f (glob "$root/src/*.c")
{
	open(my $fh, '<', $f) or die "$f: $!";
	my @l = <$fh>;
	close $fh;
	for (my $i = 1; $i < @l; $i++)
	{
		next unless $l[$i] =~ /^\{\s*$/;
		my $j = $i - 1;
		$j-- while $j > 0 && $j > $i - 6 && $l[$j] !~ /^[A-Za-z_]\w*\(/;
		next unless $l[$j] =~ /^([A-Za-z_]\w*)\(/;
		my $name = $1;
		my $k = $i + 1;
		$k++ while $k < @l && $l[$k] !~ /^\}\s*$/;
		my $len = $k - $j + 1;
		if ($len >= 100)
		{
			print "$f: $name is $len lines (the limit is 99)\n";
			$fail = 1;
		}
		$i = $k;
	}
}
print $fail ? "structure: FAILED\n" : "structure: ok (prefixed exports, no module cycle, no function of 100 lines)\n";
exit $fail;
