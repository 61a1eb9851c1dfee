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
KEPLER="$ROOT/target/release/kepler"
KEPLER_DAEMON="$ROOT/target/release/kepler-daemon"
BENCH_DIR="$(mktemp -d /tmp/kepler-bench-XXXXXX)"
chmod 755 "$BENCH_DIR"
export KEPLER_DAEMON_PATH="$BENCH_DIR/state"
export KEPLER_LOG=warn

start_daemon() { "$KEPLER" daemon start -d >/dev/null; }
stop_daemon() { "$KEPLER" daemon stop >/dev/null 2>&1 || true; }
cleanup() { stop_daemon; rm -rf "$BENCH_DIR"; }
trap cleanup EXIT

# median_ms FILE.json: the median of a hyperfine export, in milliseconds.
median_ms() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.2f" % (r["median"]*1000))' "$1"
}
