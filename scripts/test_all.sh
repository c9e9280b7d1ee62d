#!/usr/bin/env bash
# `make test`: every test, in two pytest processes at once.
#   - the tests that start Ray, vLLM, checkov or the sandbox, or are marked slow, in the foreground;
#   - the others (`make test-fast`'s set) beside them at the lowest CPU priority (nice 19).
# The first set waits on Ray, servers and subprocesses for much of its time (about 0.7 of one core on 2 cores);
# the second takes only that idle CPU, so the run is shorter and no test runs under more load than before.
# Usage: scripts/test_all.sh PYTHON [pytest args...]. Exit status: nonzero if either set failed.
set -u
PY=$1
shift
FAST='not (ray or vllm or checkov or sandbox or slow)'
log=$(mktemp "${TMPDIR:-/tmp}/fast-tests.XXXXXX")
nice -n 19 "$PY" -m pytest -m "$FAST" "$@" >"$log" 2>&1 &
fast_pid=$!
"$PY" -m pytest -m "not ($FAST)" "$@"
heavy=$?
wait "$fast_pid"
fast=$?
echo
echo "==== the tests that start nothing (run beside the others at nice 19; whole log: $log) ===="
if [ "$fast" -ne 0 ] && [ "$fast" -ne 5 ]; then
  cat "$log"
else  # pytest's last line of counts ("1154 passed, 195 deselected in 99.1s")
  grep -E "[0-9]+ (passed|failed|deselected|skipped|errors?)\b.* in [0-9.]+s" "$log" | tail -n 1
fi
# 5: no test of that set was selected (e.g. PYTEST_ARGS naming one file); fine while the other set ran
if [ "$heavy" -eq 5 ] && [ "$fast" -eq 5 ]; then exit 5; fi
[ "$heavy" -eq 5 ] && heavy=0
[ "$fast" -eq 5 ] && fast=0
[ "$heavy" -eq 0 ] && [ "$fast" -eq 0 ]
