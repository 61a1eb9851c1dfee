#!/usr/bin/env bash
# Watch and health-check benchmark, Kepler only: latency from writing a watched file to the
# restarted process's start, and the daemon's CPU while 100 services are probed over HTTP every
# second (against a local Python server, not counted). Run as root:
#   sudo bench/watch_health.sh [--quick]
# --quick: 10 file changes and a 10 s CPU window instead of 20 and 30 s.
# Prints a table; raw numbers go to bench/results/watch_health-<date>.json.
set -euo pipefail

quick=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=--quick ;;
    -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "watch_health: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM

export WH_WORK="$BENCH_DIR/run"
mkdir -p "$WH_WORK"
export WH_KEPLER_CLI="$KEPLER" WH_KEPLER_STATE="$KEPLER_DAEMON_PATH"
stamp="$(date +%Y-%m-%dT%H%M%S)"
export WH_RESULTS="$ROOT/bench/results/watch_health-$stamp.json"
python3 "$here/watch_health.py" $quick
