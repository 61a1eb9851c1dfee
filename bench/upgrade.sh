#!/usr/bin/env bash
# Upgrade benchmark: 100 services writing numbered lines continuously; `kepler daemon
# upgrade` repeated N times (default 50) onto the same release binary. Measures how long a
# `kepler ps` issued during each hand-over waits (target <= 100 ms), lines lost or repeated
# (target 0), services restarted or given new pids (target 0), and the daemon's RSS after
# each upgrade (must not grow). Run as root:
#   sudo bench/upgrade.sh [--quick] [--services N] [--upgrades N]
# --quick: 10 upgrades. Raw numbers go to bench/results/upgrade-<date>.json.
set -euo pipefail

quick="" services=100 upgrades=50
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --services) services="${2:?--services needs a number}"; shift ;;
    --upgrades) upgrades="${2:?--upgrades needs a number}"; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "upgrade: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$quick" ] && upgrades=10

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Root check, release build, BENCH_DIR, KEPLER_DAEMON_PATH, cleanup trap.
source "$here/lib.sh"
trap 'exit 130' INT TERM

start_daemon
stamp="$(date +%Y-%m-%dT%H%M%S)"
mkdir -p "$ROOT/bench/results"
UP_KEPLER="$KEPLER" UP_STATE="$KEPLER_DAEMON_PATH" UP_WORK="$BENCH_DIR" \
  UP_SERVICES="$services" UP_UPGRADES="$upgrades" \
  UP_RESULTS="$ROOT/bench/results/upgrade-$stamp.json" \
  python3 "$here/upgrade.py"
