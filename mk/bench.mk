# `make bench`: every benchmark scenario against real `authsvc serve` processes, one report (docs/performance.md).
# Included by the main Makefile, which defines PYTHON, VENV, BIN and STAMP.
#
#   make bench                          default run (~5 s a scenario, a few minutes); writes docs/performance.md
#   make bench BENCH_ARGS=--quick       smoke run (~1 s a scenario); prints the report, writes no file
#   make bench-quick                    the same
#   make bench BENCH_ARGS='--only a,b-fresh'   some scenarios by row key (a, b-rep, b-fresh, c, d, e, f, g, h, ...)
#   make bench BENCH_ARGS='--only defaults'     `authsvc serve` as `make run` starts it (no AUTHSVC_EVENT_LOOP,
#                                               AUTHSVC_LOG_LEVEL or AUTHSVC_WORKERS; log to a file) and tuned
#                                               (uvloop, WARNING) beside it: VerifyToken ÷ Health/Check of each
#   make bench BENCH_ARGS='--only l'            LocalVerifier (issue 12): rates beside VerifyToken (l-rates),
#                                               propagation to 100 watchers (l-prop), memory (l-mem), idle
#                                               watchers' server cost (l-idle)
#   make bench BENCH_ARGS='--rounds 9'          more interleaved rounds for the target ratios (default 5)
#   make bench BENCH_ARGS=--no-pin              server and generators share every core (default: the server
#                                               alone on the first CPU while a window is measured)
#   make bench-instructions                     instructions per call of Health/Check, VerifyToken repeated and
#                                               fresh, counted by callgrind (bench/instructions.py): steadier
#                                               than seconds on a shared machine (runs differ by a few %)
#
# AUTHSVC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres runs on that PostgreSQL server (in a
# fresh database the bench creates and drops); unset, the bench starts an embedded one.

BENCH_ARGS ?=

.PHONY: bench bench-quick bench-instructions

bench: $(STAMP) ## run the benchmarks and write docs/performance.md (BENCH_ARGS=--quick for a smoke run)
	BENCH_COMMAND="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(STAMP) ## smoke-run every benchmark scenario (~1 s each); prints the report only
	BENCH_COMMAND="make bench-quick" $(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-instructions: $(STAMP) ## instructions per call under callgrind (needs valgrind): steadier than seconds
	$(BIN)/python -m bench.instructions
