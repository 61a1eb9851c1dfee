#!/usr/bin/env bash
# Observability benchmark:
#   - the daemon's CPU with 100 services sampled every 5 s (target <= 0.5 % of a core);
#   - GET /metrics with 1000 services (target <= 20 ms);
#   - a `kepler top` frame with 1000 services (target <= 16 ms), and `kepler top --once`
#     with 1000 services, whole path, for reference.
# Run as root:
#   sudo bench/observability.sh [--quick] [--reference]
# --quick: a 30 s CPU window (60 s otherwise) and fewer runs. --reference: also the daemon's
# CPU with sampling off. Prints a table; raw numbers go to bench/results/observability-<date>.json.
set -euo pipefail

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick | --reference) args+=("$1") ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "observability: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, need_apt, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM
need_apt hyperfine

export OB_WORK="$BENCH_DIR/run" OB_KEPLER_CLI="$KEPLER" OB_KEPLER_STATE="$KEPLER_DAEMON_PATH" OB_ROOT="$ROOT"
export OB_RESULTS="$ROOT/bench/results/observability-$(date +%Y-%m-%dT%H%M%S).json"
mkdir -p "$OB_WORK"
python3 "$here/observability.py" "${args[@]}"
