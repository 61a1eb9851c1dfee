#!/usr/bin/env bash
# `kepler scale` from 1 to 100 replicas, timed until every new instance runs
# (scale answers only then), target <= 150 ms. Between runs the service is
# scaled back to 1, untimed. For scale, `start -d --wait` of 100 separate
# services is timed the same way on the same daemon: both spawn 100
# processes, so on a busy machine their ratio says more than either figure.
# Run as root:  sudo bench/scale.sh [RUNS]  (default 20)
# Prints medians; raw numbers go to bench/results/scale-<date>.json.
source "$(dirname "$0")/lib.sh"
need_apt hyperfine

runs="${1:-20}"
replicas=100
# The program by absolute path (no PATH search), named after the bench dir
# so cleanup finds every copy.
sleeper="$BENCH_DIR/sleep"
cp "$(command -v sleep)" "$sleeper"
scaled="$BENCH_DIR/scaled.yaml"
cat >"$scaled" <<YAML
services:
  web:
    replicas: 1
    command: ["$sleeper", "100000"]
YAML
separate="$BENCH_DIR/separate.yaml"
{
  echo "services:"
  for i in $(seq 1 "$replicas"); do
    printf '  s%d:\n    command: ["%s", "100000"]\n' "$i" "$sleeper"
  done
} >"$separate"

start_daemon
"$KEPLER" -f "$separate" start -d --wait >/dev/null
"$KEPLER" -f "$separate" stop >/dev/null
"$KEPLER" -f "$scaled" start -d --wait >/dev/null
hyperfine --shell=none --warmup 2 --runs "$runs" \
  --prepare "$KEPLER -f $scaled scale web=1" \
  --export-json "$BENCH_DIR/scale.json" \
  "$KEPLER -f $scaled scale web=$replicas" >/dev/null
# The last run's instances must all be running, or the timing means nothing.
running="$("$KEPLER" -f "$scaled" ps --json |
  python3 -c 'import json,sys; print(sum(r["status"] == "running" for r in json.load(sys.stdin)))')"
[ "$running" -eq "$replicas" ] || { echo "scale: only $running of $replicas instances run" >&2; exit 1; }
"$KEPLER" -f "$scaled" stop >/dev/null

hyperfine --shell=none --warmup 2 --runs "$runs" \
  --prepare "$KEPLER -f $separate stop" \
  --export-json "$BENCH_DIR/start.json" \
  "$KEPLER -f $separate start -d --wait" >/dev/null
"$KEPLER" -f "$separate" stop >/dev/null

mkdir -p "$ROOT/bench/results"
stamp="$(date +%Y-%m-%dT%H%M%S)"
python3 - "$BENCH_DIR/scale.json" "$BENCH_DIR/start.json" >"$ROOT/bench/results/scale-$stamp.json" <<'PY'
import json, sys
print(json.dumps({"scale_1_to_100": json.load(open(sys.argv[1]))["results"][0],
                  "start_100_separate": json.load(open(sys.argv[2]))["results"][0]}, indent=1))
PY
printf '%-48s %8s ms   (target <= 150 ms)\n' "scale 1 -> $replicas replicas, median of $runs" "$(median_ms "$BENCH_DIR/scale.json")"
printf '%-48s %8s ms   (for comparison)\n' "start -d --wait of $replicas services, median of $runs" "$(median_ms "$BENCH_DIR/start.json")"
