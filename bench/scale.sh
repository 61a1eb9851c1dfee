#!/usr/bin/env bash
# `kepler scale` from 1 to 100 replicas, timed until every new instance runs
# (scale answers only then), target <= 150 ms. Between runs the service is
# scaled back to 1, untimed. Run as root:  sudo bench/scale.sh [RUNS]  (default 20)
# Prints the median; raw numbers go to bench/results/scale-<date>.json.
source "$(dirname "$0")/lib.sh"
need_apt hyperfine

runs="${1:-20}"
replicas=100
config="$BENCH_DIR/kepler.yaml"
cat >"$config" <<YAML
services:
  web:
    replicas: 1
    command: ["sleep", "100000"]
YAML

start_daemon
"$KEPLER" -f "$config" start -d --wait >/dev/null
hyperfine --shell=none --warmup 2 --runs "$runs" \
  --prepare "$KEPLER -f $config scale web=1" \
  --export-json "$BENCH_DIR/scale.json" \
  "$KEPLER -f $config scale web=$replicas" >/dev/null

# The last run's instances must all be running, or the timing means nothing.
running="$("$KEPLER" -f "$config" ps --json |
  python3 -c 'import json,sys; print(sum(r["status"] == "running" for r in json.load(sys.stdin)))')"
[ "$running" -eq "$replicas" ] || { echo "scale: only $running of $replicas instances run" >&2; exit 1; }
"$KEPLER" -f "$config" stop >/dev/null

mkdir -p "$ROOT/bench/results"
cp "$BENCH_DIR/scale.json" "$ROOT/bench/results/scale-$(date +%Y-%m-%dT%H%M%S).json"
median="$(median_ms "$BENCH_DIR/scale.json")"
printf '%-40s %8s ms   (target <= 150 ms)\n' "scale 1 -> $replicas replicas, median of $runs" "$median"
