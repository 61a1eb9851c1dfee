#!/usr/bin/env bash
# Scale benchmark: one config of N `sleep` services, N = 100, 1,000 and 10,000 (issue #16).
# Times `start -d --wait`, `ps`, `ps --json`, `logs --tail`, a whole `logs`, `stop` (wall and
# daemon CPU), and the daemon's RSS with all N running; prints the medians and the 10k/1k growth
# ratios against the targets. Repetitions go round the sizes, so drift in the machine's speed
# weighs on every size alike.
#   sudo bench/scale_services.sh [--reps N] [--sizes "100 1000 10000"] [--floor] [--logging]
# --floor: after each measurement, the same start and stop with no supervisor (kernel_floor.c).
# --logging: each service writes a line before it becomes the sleep, so each keeps a log file open.
# Raw numbers go to bench/results/scale-services-<date>.json. bench/kernel_floor.sh measures the
# same start and stop with no supervisor, the kernel's own growth to read these ratios against.
set -euo pipefail

reps=3 sizes="100 1000 10000" floor="" logging=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="${2:?--reps needs a number}"; shift ;;
    --sizes) sizes="${2:?--sizes needs a list}"; shift ;;
    --floor) floor=1 ;;
    --logging) logging=1 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale_services: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
# The CLI's own limit does not matter, but the daemon starts with ours.
ulimit -n 20000 2>/dev/null || true
start_daemon
export SC_KEPLER="$KEPLER" SC_WORK="$BENCH_DIR/work" SC_REPS="$reps" SC_SIZES="$sizes" SC_FLOOR=""
export SC_LOGGING="$logging"
if [ -n "$floor" ]; then
  cc -O2 -Wall -o "$BENCH_DIR/kernel_floor" "$here/kernel_floor.c"
  SC_FLOOR="$BENCH_DIR/kernel_floor"
fi
export SC_RESULTS="$ROOT/bench/results/scale-services-$(date +%Y-%m-%dT%H%M%S).json"
mkdir -p "$SC_WORK" "$ROOT/bench/results"
python3 "$here/scale_services.py"
