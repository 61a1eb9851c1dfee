# Shared set-up for the bench scripts: release build, tools, a scratch daemon.
# Source it; it defines KEPLER, KEPLER_DAEMON, BENCH_DIR and start/stop helpers.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (the daemon must run as root): sudo $0" >&2
  exit 1
fi

need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

(cd "$ROOT" && cargo build --release --workspace --bins -q)
# Follow cargo's own choice of target dir, so a worktree with its own CARGO_TARGET_DIR works.
KEPLER="${CARGO_TARGET_DIR:-$ROOT/target}/release/kepler"
KEPLER_DAEMON="${CARGO_TARGET_DIR:-$ROOT/target}/release/kepler-daemon"
BENCH_DIR="$(mktemp -d /tmp/kepler-bench-XXXXXX)"
chmod 755 "$BENCH_DIR"
export KEPLER_DAEMON_PATH="$BENCH_DIR/state"
export KEPLER_LOG=warn

# need_supervisor DIR: supervisor from PyPI in DIR/venv (kept there for the next run);
# sets SUPERVISOR_BIN to the venv's bin dir.
need_supervisor() {
  local dir="$1"
  if [ ! -x "$dir/venv/bin/supervisord" ]; then
    echo "installing supervisor from PyPI into $dir/venv ..." >&2
    # Debian splits venv out of python3.
    python3 -m venv "$dir/venv" 2>/dev/null || { need_apt python3-venv && python3 -m venv "$dir/venv"; }
    "$dir/venv/bin/pip" install -q --disable-pip-version-check supervisor
  fi
  SUPERVISOR_BIN="$dir/venv/bin"
}

start_daemon() { "$KEPLER" daemon start -d >/dev/null; }
stop_daemon() {
  local pid
  pid="$(cat "$KEPLER_DAEMON_PATH/kepler.pid" 2>/dev/null)" || true
  timeout 30 "$KEPLER" daemon stop >/dev/null 2>&1 || true
  # A daemon that would not stop when asked must not outlive the bench.
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kepler-daemon ]; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
}
# Everything a bench starts (peer daemons, writers, servers) names BENCH_DIR on its command line.
kill_bench_processes() {
  local proc cmd
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" = "$$" ] && continue
    cmd="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
    case "$cmd" in *"$BENCH_DIR/"*) kill -KILL "${proc#/proc/}" 2>/dev/null || true ;; esac
  done
}
cleanup() { stop_daemon; kill_bench_processes; rm -rf "$BENCH_DIR"; }
trap cleanup EXIT

# median_ms FILE.json: the median of a hyperfine export, in milliseconds.
median_ms() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.2f" % (r["median"]*1000))' "$1"
}
