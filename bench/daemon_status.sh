#!/usr/bin/env bash
# Median wall time of `kepler daemon status` over 50 runs (target: <= 3 ms).
source "$(dirname "$0")/lib.sh"
need_apt hyperfine

start_daemon
hyperfine --shell=none --warmup 10 --runs 50 --export-json "$BENCH_DIR/status.json" \
  "$KEPLER daemon status" >/dev/null
median="$(median_ms "$BENCH_DIR/status.json")"
printf '%-40s %8s ms   (target <= 3 ms)\n' "kepler daemon status, median of 50" "$median"
