#!/usr/bin/env bash
# Lifecycle benchmark, Kepler against supervisord and pm2: start/stop of 100 and 1000 services,
# a 20-service dependency chain, idle daemon CPU, crash-to-respawn latency. Run as root:
#   sudo bench/lifecycle.sh [--quick] [--only kepler|supervisord|pm2] [--peers-dir DIR]
# --quick: 3 repetitions and no 1000-service runs. supervisor (PyPI, in a venv) and pm2 (npm)
# are installed into a temp dir, or into --peers-dir DIR and reused from there next time.
# Prints a table; raw numbers go to bench/results/lifecycle-<date>.json.
set -euo pipefail

quick="" only="" peers_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=--quick ;;
    --only) only="${2:-}"; shift ;;
    --peers-dir) peers_dir="${2:?--peers-dir needs a directory}"; shift ;;
    -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "lifecycle: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in
  "" | kepler | supervisord | pm2) ;;
  *) echo "lifecycle: --only takes kepler, supervisord or pm2 (got '$only')" >&2; exit 2 ;;
esac
wants() { [ -z "$only" ] || [ "$only" = "$1" ]; }
die() { echo "lifecycle: $*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if wants kepler; then
  # Root check, release build, BENCH_DIR and KEPLER_DAEMON_PATH, need_apt.
  source "$here/lib.sh"
else
  # The peers alone need neither cargo nor a Kepler build.
  [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0"
  ROOT="$(cd "$here/.." && pwd)"
  BENCH_DIR="$(mktemp -d /tmp/kepler-bench-XXXXXX)"
  chmod 755 "$BENCH_DIR"
fi
export LC_WORK="$BENCH_DIR/run"
mkdir -p "$LC_WORK"

# Kills everything this run started, whatever state the driver left it in.
cleanup_all() {
  set +e
  if [ -d "$LC_WORK/pm2-home" ] && [ -n "${LC_PM2_PREFIX:-}" ]; then
    PM2_HOME="$LC_WORK/pm2-home" timeout 30 "$LC_PM2_PREFIX/node_modules/.bin/pm2" kill >/dev/null 2>&1
  fi
  if [ -n "${KEPLER:-}" ]; then
    local kpid
    kpid="$(cat "$KEPLER_DAEMON_PATH/kepler.pid" 2>/dev/null)"
    timeout 30 "$KEPLER" daemon stop >/dev/null 2>&1
    [ -n "$kpid" ] && kill -KILL "$kpid" 2>/dev/null
  fi
  # supervisord, the pm2 daemon and every benchmarked process name our scratch dir.
  local proc cmd
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" = "$$" ] && continue
    cmd="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
    case "$cmd" in *"$BENCH_DIR/"*) kill -KILL "${proc#/proc/}" 2>/dev/null ;; esac
  done
  rm -rf "$BENCH_DIR"
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM

peers="${peers_dir:-$BENCH_DIR/peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"

if wants supervisord; then
  if [ ! -x "$peers/venv/bin/supervisord" ]; then
    echo "installing supervisor from PyPI into $peers/venv ..." >&2
    if ! python3 -m venv "$peers/venv" 2>/dev/null; then
      # Debian splits venv out of python3.
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
        || die "python3 -m venv is unavailable and python3-venv could not be installed"
      python3 -m venv "$peers/venv" || die "python3 -m venv failed"
    fi
    "$peers/venv/bin/pip" install -q --disable-pip-version-check supervisor \
      || die "could not install supervisor from PyPI (pip install supervisor failed)"
  fi
  export LC_SUPERVISOR_BIN="$peers/venv/bin"
fi

if wants pm2; then
  command -v npm >/dev/null || die "npm is not installed (pm2 comes from npm; install nodejs/npm)"
  if [ ! -x "$peers/npm/node_modules/.bin/pm2" ]; then
    echo "installing pm2 from npm into $peers/npm ..." >&2
    npm install --prefix "$peers/npm" --no-audit --no-fund --loglevel=error pm2 >&2 \
      || die "could not install pm2 from npm (npm install pm2 failed)"
  fi
  export LC_PM2_PREFIX="$peers/npm"
fi

if wants kepler; then
  export LC_KEPLER_CLI="$KEPLER" LC_KEPLER_STATE="$KEPLER_DAEMON_PATH"
fi

# supervisord asks for ~6 fds per program; 1000 services with captured output need a few thousand fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

export LC_RESULTS="$ROOT/bench/results/lifecycle-$(date +%Y-%m-%dT%H%M%S).json"
python3 "$here/lifecycle.py" $quick ${only:+--only "$only"}
