#!/usr/bin/env bash
# Times loading + validating a generated 1000-service kepler.yaml.
#
# The config has dependency chains (each service waits for the previous one
# to be healthy and starts after one ten places back), environment entries
# with expansion, and a healthcheck on every service. It is timed twice:
#   1. `kepler-daemon check FILE` under hyperfine (--runs 30), end to end;
#   2. the in-process `bake_bench` example (bake only, no process start-up).
# Usage: bench/config_load.sh [SERVICES]   (default 1000)
set -euo pipefail

services=${1:-1000}
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config=$work/kepler.yaml

{
  echo "kepler:"
  echo "  timeout: 30s"
  echo "  logs: {max_size: 10MB}"
  echo "services:"
  for ((i = 0; i < services; i++)); do
    echo "  svc$i:"
    echo "    command: [\"./server\", \"--id\", \"$i\"]"
    echo "    working_dir: ./svc/$i"
    echo "    environment:"
    echo "      - SERVICE_ID=$i"
    echo "      - DATA_DIR=\${HOME:-/tmp}/data/$i"
    echo "      - URL=http://localhost:\${PORT:-8000}/svc$i"
    echo "    restart: {policy: on-failure, delay: 1s, max_attempts: 5}"
    echo "    healthcheck:"
    echo "      test: [\"CMD-SHELL\", \"test -f /tmp/ready-$i\"]"
    echo "      interval: 5s"
    if ((i > 0)); then
      echo "    depends_on:"
      echo "      svc$((i - 1)): {condition: service_healthy, restart: true}"
      if ((i >= 10)); then
        echo "      svc$((i - 10)): {condition: service_started}"
      fi
    fi
  done
} >"$config"
echo "generated $services services ($(wc -l <"$config") lines) in $config"

cargo build --release --quiet -p kepler-daemon --bin kepler-daemon --example bake_bench \
  --manifest-path "$repo/Cargo.toml"

if ! command -v hyperfine >/dev/null; then
  apt-get install -y hyperfine >/dev/null
fi

daemon=$target/release/kepler-daemon
# The config must bake cleanly for the timing to mean anything.
if "$daemon" check "$config" >/dev/null; then
  hyperfine --runs 30 --warmup 3 --export-json "$work/hyperfine.json" "$daemon check $config" >/dev/null
  median=$(grep -o '"median": *[0-9.e-]*' "$work/hyperfine.json" | head -1 | sed 's/.*: *//')
  awk -v s="$median" 'BEGIN { printf "kepler-daemon check: median %.2f ms over 30 runs\n", s * 1000 }'
else
  echo "kepler-daemon check rejected the generated config; timing bake in-process only"
fi
"$target/release/examples/bake_bench" "$config" 30
