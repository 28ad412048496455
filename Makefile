# wasend — PGXS build.  `make demo` and `make test` are the two commands of
# the README's quick start; both install what is missing first.

EXTENSION   = wasend
EXTVERSION  = 0.6.0
MODULE_big  = wasend
OBJS        = src/wasend.o src/settings.o src/shmem.o src/worker.o src/launcher.o src/supervisor.o src/sender.o src/number_queue.o \
              src/campaign_cache.o src/claim_plan.o src/breaker.o src/db_cycle.o src/limits_reader.o src/graph_api.o src/rate_gate.o \
              src/http_client.o src/queue.o src/sql_api.o src/access.o \
              src/signature.o src/secrets.o src/webhook.o src/metrics.o src/latency.o \
              src/worker_session.o src/http_server.o src/recipient.o src/phone.o src/durability.o
# The install script of the current version is built from the topic
# sources in sql/src/, concatenated in this order (sql/README.md).
SQL_SRC     = sql/src/00_schemas_roles.sql sql/src/01_helpers.sql sql/src/02_numbers.sql \
              sql/src/03_campaigns.sql sql/src/04_queue_lanes.sql sql/src/05_error_policy.sql \
              sql/src/06_webhooks_statuses.sql sql/src/07_limits_portfolios.sql \
              sql/src/08_senders.sql sql/src/09_views.sql sql/src/10_dump.sql sql/src/11_access.sql
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
# Frozen: the old base scripts and every update script.
DATA        = sql/updates/wasend--0.1.0.sql sql/updates/wasend--0.2.0.sql \
              sql/updates/wasend--0.1.0--0.2.0.sql sql/updates/wasend--0.2.0--0.3.0.sql \
              sql/updates/wasend--0.3.0--0.4.0.sql sql/updates/wasend--0.4.0--0.5.0.sql \
              sql/updates/wasend--0.5.0--0.6.0.sql
REGRESS     = setup numbers campaigns enqueue transitions policy secrets webhooks progress grants restore hardening limits lanes constraints access statuses identities stalled recipients retention settle
REGRESS_OPTS = --inputdir=test --outputdir=test/out --temp-config=test/regress.conf

PG_CONFIG  ?= pg_config

CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell pkg-config --libs libcurl 2>/dev/null || curl-config --libs 2>/dev/null)
SSL_LIBS    := $(shell pkg-config --libs libcrypto 2>/dev/null)
MHD_CFLAGS  := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS    := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
# libphonenumber (C++, src/phone.cpp) and the C++ runtime it needs
PHONE_LIBS  := -lphonenumber -lstdc++

PG_CPPFLAGS = -I$(srcdir)/src $(CURL_CFLAGS) $(MHD_CFLAGS) -DWASEND_VERSION='"$(EXTVERSION)"'
# make test and make bench add -Werror (WERROR); a user's plain `make` does not
WERROR     ?=
PG_CFLAGS   = -Wall -Wextra $(WERROR) -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK  = $(CURL_LIBS) $(SSL_LIBS) $(MHD_LIBS) $(PHONE_LIBS)
PG_CXXFLAGS = -Wall -Wextra $(WERROR)

EXTRA_CLEAN = src/queue_sql.h

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
# installcheck: the regression tests name their database (test/sql/secrets.sql
# and access.sql), as test/run-tests.sh runs them
CONTRIB_TESTDB = regression
endif

# PGXS does not track header dependencies: every object depends on them all.
$(OBJS): $(wildcard src/*.h)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SRC)
	@echo '-- $(EXTENSION)--$(EXTVERSION).sql: made by make from sql/src/ (Makefile: SQL_SRC); edit those, see sql/README.md' > $@.tmp
	@for f in $(SQL_SRC); do printf '\n-- ---- %s\n\n' "$$f"; cat "$$f"; done >> $@.tmp
	@mv $@.tmp $@

# The workers' statements live in src/queue.sql; the build makes them C.
src/queue_sql.h: src/queue.sql src/queue_sql.awk
	awk -f src/queue_sql.awk src/queue.sql > $@
src/queue.o src/queue.bc: src/queue_sql.h
.PRECIOUS: src/queue_sql.h

.PHONY: deps demo test bench profile

# Install the Debian packages the build, tests and demo need (idempotent).
deps:
	@test/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install >/dev/null
	@test/demo.sh

# After the suite on the PostgreSQL that pg_config names, test/pg18.sh
# runs pg_regress and the core TAP tests on PostgreSQL 18, built once per
# machine into a cache (WASEND_PG18=0 leaves it out).
test: deps
	@$(MAKE) --no-print-directory all WERROR=-Werror
	@$(MAKE) --no-print-directory install >/dev/null
	@test/run-tests.sh
	@test/pg18.sh

# Benchmarks: also needs nginx with the echo module, gnuplot, valgrind (Debian)
# and pg + p-limit (npm).
BENCH_DEBS = nginx-light libnginx-mod-http-echo gnuplot-nox bc valgrind
bench: deps
	@test/deps.sh $(BENCH_DEBS)
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install >/dev/null
	@bench/run.sh

# The ceiling scenario under callgrind: instructions per message, by shared
# object and function (bench/results/profile.md).
profile: deps
	@test/deps.sh $(BENCH_DEBS)
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install >/dev/null
	@bench/profile.sh
