# src/queue_sql.awk: turn src/queue.sql into C or back into plain SQL.
#
#   awk -f src/queue_sql.awk src/queue.sql > src/queue_sql.h
#       one "static const char sql_NAME[]" per "-- name: NAME" block
#   awk -v name=claim -f src/queue_sql.awk src/queue.sql
#       the statement of block NAME alone, as SQL text (for the benchmarks)
#
# Comment lines (starting with "--") and blank lines are dropped; the
# statements are otherwise copied as they are.

function flush() {
	if (cur == "")
		return
	if (name == "")
		printf "static const char sql_%s[] =\n%s;\n\n", cur, (body == "" ? "\"\"" : body)
	else if (cur == name)
	{
		printf "%s\n", raw
		found = 1
	}
	cur = ""; body = ""; raw = ""
}

BEGIN {
	cur = ""; body = ""; raw = ""; found = 0
	if (name == "")
		print "/* generated from src/queue.sql by src/queue_sql.awk: do not edit */\n"
}

/^-- name: / { flush(); cur = $3; next }
/^[ \t]*--/ { next }
/^[ \t]*$/ { next }
cur != "" {
	line = $0
	raw = (raw == "" ? line : raw "\n" line)
	gsub(/\\/, "\\\\", line)
	gsub(/"/, "\\\"", line)
	body = body (body == "" ? "" : "\n") "\"" line "\\n\""
}

END {
	flush()
	if (name != "" && !found)
	{
		print "no statement named " name > "/dev/stderr"
		exit 1
	}
}
