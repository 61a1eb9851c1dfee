#!/usr/bin/env bash
# Resource benchmark: what the daemon costs while services idle or flood it with output.
#   - RSS with 100 idle `sleep` services;
#   - six `yes` floods (100-byte lines, logs.max_size 20M) for 12 s: peak daemon RSS, RSS
#     after they stop, disk bytes written per byte logged, the largest on-disk size of a stream;
#   - `kepler ps` latency while ten services flood.
# Run as root:
#   sudo bench/resources.sh [--quick]
# --quick: a 6 s flood and fewer `ps` runs. Prints a table; raw numbers go to
# bench/results/resources-<date>.json.
set -euo pipefail

quick=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=--quick ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "resources: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, need_apt, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM
need_apt hyperfine

export RS_WORK="$BENCH_DIR/run" RS_KEPLER_CLI="$KEPLER" RS_KEPLER_STATE="$KEPLER_DAEMON_PATH"
export RS_RESULTS="$ROOT/bench/results/resources-$(date +%Y-%m-%dT%H%M%S).json"
mkdir -p "$RS_WORK"
python3 "$here/resources.py" $quick
