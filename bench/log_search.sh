#!/usr/bin/env bash
# Log search benchmark on a stored log of 1M lines spread over the last two hours:
# `kepler logs --since 1m` (the newest 100 lines; target <= 10 ms), `--grep` for a rare word
# (100 matches; target <= 500 ms) and for a common pattern (~10% of the lines, printed to a
# pipe), and the whole log to a pipe for reference. Run as root:
#   sudo bench/log_search.sh [--runs N]
# Prints medians against the targets; raw numbers go to bench/results/log_search-<date>.json.
set -euo pipefail

runs=20
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift ;;
    -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "log_search: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, need_apt, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM
need_apt hyperfine

lines=1000000
work="$BENCH_DIR/run"
mkdir -p "$work"
config="$work/kepler.yaml"
printf 'services:\n  app:\n    command: ["sh", "-c", "echo started"]\n' >"$config"
start_daemon
"$KEPLER" -f "$config" start >/dev/null
logs_dir="$(echo "$KEPLER_DAEMON_PATH"/configs/*/logs)"

# The stored log, written as the daemon would have (kepler-daemon/src/logs/record.rs): 1M
# records of ~80 bytes, stamped from two hours ago to two minutes ago, then 100 in the last
# 30 s. One line in 10,000 says ERROR; one in ten has user=4NN.
python3 - "$logs_dir/app.stdout.log" "$lines" <<'PY'
import sys, time
path, n = sys.argv[1], int(sys.argv[2])
now = int(time.time() * 1e6)
old, recent = n - 100, 100
start, end = now - 7200 * 10**6, now - 120 * 10**6
step = (end - start) // old
with open(path, "w") as f:
    for i in range(n):
        ts = start + i * step if i < old else now - 30 * 10**6 + (i - old) * 250_000
        word = "ERROR" if i % 10_000 == 0 else "INFO"
        f.write(f"{ts:016x} - {word} GET /api/items/{i} 200 {i % 997}ms user={i % 1000}\n")
PY

# bench_search NAME EXPECTED_LINES ARGS...: hyperfine's median of `kepler logs ARGS` to a pipe,
# after checking it prints EXPECTED_LINES lines.
bench_search() {
  local name="$1" expected="$2" got; shift 2
  got="$("$KEPLER" -f "$config" logs "$@" | wc -l)"
  if [ "$got" -ne "$expected" ]; then
    echo "log_search: \`kepler logs $*\` printed $got lines, expected $expected" >&2
    exit 1
  fi
  hyperfine --shell=none --warmup 3 --runs "$runs" --output pipe \
    --export-json "$work/$name.json" "$KEPLER -f $config logs $*" >/dev/null
  median_ms "$work/$name.json"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
since="$(bench_search since 100 --since 1m)"
rare="$(bench_search grep_rare 100 --grep ERROR)"
common="$(bench_search grep_common 100000 --grep 'user=4[0-9]{2}$')"
whole="$(bench_search whole "$lines")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

verdict() { python3 -c 'import sys; print("PASS" if float(sys.argv[1]) <= float(sys.argv[2]) else "MISS")' "$1" "$2"; }
echo
echo "load average: $load_before before, $load_after after ($(nproc) CPUs, shared)"
printf '%-52s %10s   %s\n' "scenario (1M-line log, median of $runs)" "median" "target"
printf '%-52s %7s ms   <= 10 ms  %s\n' "logs --since 1m (100 lines)" "$since" "$(verdict "$since" 10)"
printf '%-52s %7s ms   <= 500 ms %s\n' "logs --grep ERROR (100 lines)" "$rare" "$(verdict "$rare" 500)"
printf '%-52s %7s ms   <= 500 ms %s\n' "logs --grep 'user=4[0-9]{2}\$' (100k lines, piped)" "$common" "$(verdict "$common" 500)"
printf '%-52s %7s ms   (reference)\n' "logs, whole log (1M lines, piped)" "$whole"

stamp="$(date +%Y-%m-%dT%H%M%S)"
out="$ROOT/bench/results/log_search-$stamp.json"
mkdir -p "$(dirname "$out")"
python3 - "$out" "$work" "$runs" "$load_before" "$load_after" <<'PY'
import json, sys
out, work, runs, before, after = sys.argv[1:]
results = {}
for name in ("since", "grep_rare", "grep_common", "whole"):
    r = json.load(open(f"{work}/{name}.json"))["results"][0]
    results[name] = {"median_ms": r["median"] * 1000, "mean_ms": r["mean"] * 1000,
                     "min_ms": r["min"] * 1000, "max_ms": r["max"] * 1000, "command": r["command"]}
json.dump({"runs": int(runs), "loadavg_before": before, "loadavg_after": after,
           "targets_ms": {"since": 10, "grep_rare": 500, "grep_common": 500},
           "results": results}, open(out, "w"), indent=1)
PY
echo "raw numbers: $out"
