#!/usr/bin/env bash
# What cgroup containment costs: start and stop of 100 and 1000 services with cgroups on and off
# (targets: start at most +30 %, stop no slower), and `kepler ps` of 100 running services with
# their CPU and MEM (target <= 5 ms). Run as root:
#   sudo bench/cgroups.sh [--quick]
# --quick: 3 repetitions and no 1000-service runs (else 5 of each). Each run gets a fresh daemon
# (not timed).
# Prints medians; raw numbers go to bench/results/cgroups-<date>.json. bench/kernel_floor.sh
# measures what a cgroup per process costs the kernel itself, with no supervisor.
set -euo pipefail

quick=""
case "${1:-}" in
  --quick) quick=1 ;;
  -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "cgroups: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac
source "$(dirname "$0")/lib.sh"
need_apt hyperfine

reps=5 sizes="100 1000"
[ -n "$quick" ] && reps=3 sizes="100"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
RAW="$BENCH_DIR/raw.txt"
: >"$RAW"

# write_config N: N independent sleeping services in $BENCH_DIR/N/kepler.yaml.
write_config() {
  local n="$1" dir="$BENCH_DIR/$1" i
  mkdir -p "$dir"
  {
    echo "services:"
    for i in $(seq 1 "$n"); do
      printf '  s%d:\n    command: ["sleep", "100000"]\n' "$i"
    done
  } >"$dir/kepler.yaml"
}

# fresh_daemon MODE: a new daemon on an empty state dir, with KEPLER_CGROUP=MODE
# ("auto" or "off"); prints its containment line.
fresh_daemon() {
  stop_daemon
  rm -rf "$KEPLER_DAEMON_PATH"
  KEPLER_CGROUP="$1" "$KEPLER" daemon start -d >/dev/null
  "$KEPLER" daemon status | sed -n 's/^ *containment: //p'
}

now_ns() { date +%s%N; }

for n in $sizes; do write_config "$n"; done
# Modes alternate within each repetition, so both meet the same load on a shared machine.
for n in $sizes; do
  for rep in $(seq 1 "$reps"); do
    for mode in auto off; do
      containment="$(fresh_daemon "$mode")"
      [ "$rep" -eq 1 ] && echo "KEPLER_CGROUP=$mode, $n services: $containment" >&2
      t0="$(now_ns)"
      "$KEPLER" -f "$BENCH_DIR/$n/kepler.yaml" start -d --wait --timeout 300s >/dev/null
      t1="$(now_ns)"
      "$KEPLER" -f "$BENCH_DIR/$n/kepler.yaml" stop >/dev/null
      t2="$(now_ns)"
      echo "$mode start $n $(((t1 - t0) / 1000))" >>"$RAW"
      echo "$mode stop $n $(((t2 - t1) / 1000))" >>"$RAW"
    done
  done
done
# ps of 100 running services, CPU and MEM included.
for mode in auto off; do
  fresh_daemon "$mode" >/dev/null
  "$KEPLER" -f "$BENCH_DIR/100/kepler.yaml" start -d --wait --timeout 300s >/dev/null
  hyperfine --shell=none --warmup 10 --runs 50 --export-json "$BENCH_DIR/ps-$mode.json" \
    "$KEPLER -f $BENCH_DIR/100/kepler.yaml ps" >/dev/null
  echo "$mode ps 100 $(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["results"][0]["median"]*1e6))' "$BENCH_DIR/ps-$mode.json")" >>"$RAW"
  "$KEPLER" -f "$BENCH_DIR/100/kepler.yaml" stop >/dev/null
done
stop_daemon

mkdir -p "$ROOT/bench/results"
results="$ROOT/bench/results/cgroups-$(date +%Y-%m-%dT%H%M%S).json"
python3 - "$RAW" "$results" <<'EOF'
import collections, json, statistics, sys
raw, out = sys.argv[1], sys.argv[2]
runs = collections.defaultdict(list)
for line in open(raw):
    mode, what, n, usec = line.split()
    runs[(what, int(n), mode)].append(int(usec) / 1000)
json.dump({f"{w}/{n}/{m}": v for (w, n, m), v in runs.items()}, open(out, "w"), indent=1)
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"{'scenario':<28} {'cgroups':>10} {'no cgroups':>11} {'change':>8}   target")
for what, n in sorted({(w, n) for (w, n, _) in med}, key=lambda k: (k[0] != "start", k[0], k[1])):
    on, off = med.get((what, n, "auto")), med.get((what, n, "off"))
    if on is None or off is None:
        continue
    change = (on / off - 1) * 100 if off else 0.0
    target = {"start": "<= +30 %", "stop": "<= +0 % (no slower)", "ps": "cgroups <= 5 ms"}[what]
    label = f"{what} {n} services" if what != "ps" else "ps of 100 services"
    print(f"{label:<28} {on:>8.1f}ms {off:>9.1f}ms {change:>+7.1f}%   {target}")
print(f"raw: {out}")
EOF
