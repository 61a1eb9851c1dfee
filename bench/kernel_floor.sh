#!/usr/bin/env bash
# The kernel's own floor under the scale and cgroup benches: a small C program (kernel_floor.c)
# starts N `sleep` processes one after another and stops them, the way Kepler does, with no
# supervisor in between. Read Kepler's figures (and the issues' growth targets) against it: what
# grows faster than linearly here grows so for any supervisor on this machine.
#   sudo bench/kernel_floor.sh [--reps N] [--sizes "1000 10000"]
# Modes: each process in its own process group, or also in a cgroup v2 of its own (where a
# writable cgroup2 is mounted); reaping by waiting for any child, or by pid (the lower bound).
set -euo pipefail

reps=3 sizes="1000 10000"
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="${2:?--reps needs a number}"; shift ;;
    --sizes) sizes="${2:?--sizes needs a list}"; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kernel_floor: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" -ne 0 ]; then
  echo "kernel_floor: run as root (it makes cgroups): sudo $0" >&2
  exit 1
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d /tmp/kepler-floor-XXXXXX)"
scratch=""
cleanup() {
  # An interrupted run leaves its sleeps behind; they run a private copy, so none other is hit.
  pkill -KILL -f "^$work/floor-sleep " 2>/dev/null || true
  if [ -n "$scratch" ]; then
    # A cgroup can be removed once its killed members have left it: retry for up to 5 s.
    for _ in $(seq 50); do
      find "$scratch" -mindepth 1 -maxdepth 1 -type d -exec rmdir {} + 2>/dev/null || true
      rmdir "$scratch" 2>/dev/null || true
      [ -d "$scratch" ] || break
      sleep 0.1
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -Wall -o "$work/kernel_floor" "$here/kernel_floor.c"
cp "$(command -v sleep)" "$work/floor-sleep"

modes="group"
mount="$(findmnt -n -t cgroup2 -o TARGET | head -n 1 || true)"
if [ -n "$mount" ] && scratch="$mount/kepler-floor-$$" && mkdir "$scratch" 2>/dev/null; then
  modes="group cgroup"
else
  scratch=""
  echo "kernel_floor: no writable cgroup2 mount; measuring process groups only" >&2
fi

raw="$work/raw.txt"
: >"$raw"
for rep in $(seq 1 "$reps"); do
  for n in $sizes; do
    for mode in $modes; do
      for reap in any pid; do
        target=group
        [ "$mode" = cgroup ] && target="$scratch"
        read -r start stop < <("$work/kernel_floor" "$n" "$target" "$reap" "$work/floor-sleep")
        echo "$mode $reap $n $start $stop" >>"$raw"
      done
    done
  done
done

python3 - "$raw" "$sizes" <<'EOF'
import collections, statistics, sys
raw, sizes = sys.argv[1], [int(n) for n in sys.argv[2].split()]
runs = collections.defaultdict(list)
for line in open(raw):
    mode, reap, n, start, stop = line.split()
    runs[(mode, reap, int(n))].append((float(start), float(stop)))
small, big = sizes[0], sizes[-1]
print(f"kernel floor, medians of {len(next(iter(runs.values())))} (ms):")
print(f"{'mode':<8} {'reap':<4} " + " ".join(f"{'start ' + str(n):>11}" for n in sizes)
      + " " + " ".join(f"{'stop ' + str(n):>11}" for n in sizes) + f"  growth {big}/{small}: start, stop")
for mode, reap in sorted({(m, r) for (m, r, _) in runs}):
    start = {n: statistics.median(s for s, _ in runs[(mode, reap, n)]) for n in sizes}
    stop = {n: statistics.median(t for _, t in runs[(mode, reap, n)]) for n in sizes}
    print(f"{mode:<8} {reap:<4} " + " ".join(f"{start[n]:>11.1f}" for n in sizes)
          + " " + " ".join(f"{stop[n]:>11.1f}" for n in sizes)
          + f"  {start[big] / start[small]:6.2f}x {stop[big] / stop[small]:6.2f}x")
EOF
