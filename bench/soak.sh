#!/usr/bin/env bash
# Soak benchmark: start and stop one config of many `sleep` services over and over on one
# daemon, printing the daemon's RSS after each cycle. Memory kept per start shows up as growth.
# Run as root:
#   sudo bench/soak.sh [--services N] [--cycles C] [--quick]
# Defaults: 300 services, 16 cycles (target: RSS after cycle 15 at most 4 MB above cycle 3).
# --quick: 100 services, 8 cycles. `--services 1000 --cycles 30` is the long soak.
# Prints one line per cycle and a verdict; raw numbers go to bench/results/soak-<date>.json.
set -euo pipefail

services=300 cycles=16
while [ $# -gt 0 ]; do
  case "$1" in
    --services) services="${2:?--services needs a number}"; shift ;;
    --cycles) cycles="${2:?--cycles needs a number}"; shift ;;
    --quick) services=100 cycles=8 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$services$cycles" in *[!0-9]*) echo "soak: --services and --cycles take whole numbers" >&2; exit 2 ;; esac
[ "$cycles" -ge 4 ] || { echo "soak: at least 4 cycles (growth is measured from cycle 3)" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, start/stop_daemon, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

export SK_WORK="$BENCH_DIR/run" SK_KEPLER_CLI="$KEPLER" SK_KEPLER_STATE="$KEPLER_DAEMON_PATH"
export SK_RESULTS="$ROOT/bench/results/soak-$(date +%Y-%m-%dT%H%M%S).json"
mkdir -p "$SK_WORK"
python3 "$here/soak.py" --services "$services" --cycles "$cycles"
