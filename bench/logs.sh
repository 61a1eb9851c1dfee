#!/usr/bin/env bash
# Log benchmark: capture throughput of 1M lines (Kepler with and without a write buffer,
# supervisord, a raw pipe), `kepler logs --tail 100` and the whole log to a pipe on that log,
# and `kepler logs --follow` latency. Run as root:
#   sudo bench/logs.sh [--quick] [--peers-dir DIR]
# --quick: 3 repetitions and fewer hyperfine runs. supervisor (PyPI) goes into a venv in a temp
# dir, or into --peers-dir DIR and is reused from there next time.
# Prints a table; raw numbers go to bench/results/logs-<date>.json.
set -euo pipefail

quick="" peers_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=--quick ;;
    --peers-dir) peers_dir="${2:?--peers-dir needs a directory}"; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "logs: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, need_apt, need_supervisor, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM

need_apt hyperfine gcc
peers="${peers_dir:-$BENCH_DIR/peers}"
mkdir -p "$peers"
need_supervisor "$(cd "$peers" && pwd)"

export LG_WORK="$BENCH_DIR/run"
mkdir -p "$LG_WORK"
gcc -O2 -o "$LG_WORK/logwriter" "$here/logwriter.c"

export LG_WRITER="$LG_WORK/logwriter" LG_SUPERVISOR_BIN="$SUPERVISOR_BIN"
export LG_KEPLER_CLI="$KEPLER" LG_KEPLER_STATE="$KEPLER_DAEMON_PATH"
stamp="$(date +%Y-%m-%dT%H%M%S)"
export LG_RESULTS="$ROOT/bench/results/logs-$stamp.json"
python3 "$here/logs.py" $quick
