#!/usr/bin/env python3
"""Soak driver: cycles `kepler start -d --wait` / `kepler stop` of one config on one daemon and
records the daemon's RSS after every cycle.

Run it through bench/soak.sh, which builds Kepler and passes SK_WORK (scratch dir), SK_RESULTS
(JSON output path), SK_KEPLER_CLI and SK_KEPLER_STATE in the environment.

RSS is read from /proc/<daemon>/status once the stop has returned and every service process is
gone, after a settle of a second, so tasks finishing their last work (and the trim that follows a
burst) are not counted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import PeerError, Service, ServiceSet, marked_pids, wait_until  # noqa: E402
from peers.kepler import Kepler  # noqa: E402

GROWTH_LIMIT_MB = 4.0
SETTLE_S = 1.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise PeerError(f"no {key} for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=16)
    args = parser.parse_args()
    env = os.environ
    work = Path(env["SK_WORK"])
    kepler = Kepler(Path(env["SK_KEPLER_CLI"]), Path(env["SK_KEPLER_STATE"]), work)
    # A private copy of sleep marks our processes in /proc.
    (work / "bin").mkdir(exist_ok=True)
    sleep = work / "bin" / "sleep"
    shutil.copy2(shutil.which("sleep"), sleep)
    marker = str(sleep).encode() + b"\0"
    services = ServiceSet(f"soak{args.services}", tuple(
        Service(f"s{i}", (str(sleep), "1000")) for i in range(1, args.services + 1)))

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    log(f"load average before the run: {load_before}, {os.cpu_count()} CPUs")
    kepler.open(services)
    cycles = []
    try:
        pid = kepler.daemon_pid()
        base = status_kb(pid, "VmRSS") / 1024
        log(f"daemon pid {pid}, RSS before the first start: {base:.1f} MB")
        for cycle in range(1, args.cycles + 1):
            t0 = time.perf_counter()
            kepler.start()
            up = time.perf_counter() - t0
            running = len(marked_pids(marker))
            if running != args.services:
                raise PeerError(f"cycle {cycle}: {running}/{args.services} services running after start")
            t1 = time.perf_counter()
            kepler.stop()
            down = time.perf_counter() - t1
            wait_until(lambda: len(marked_pids(marker)) == 0, "every service to be gone", timeout=60)
            time.sleep(SETTLE_S)
            rss = status_kb(pid, "VmRSS") / 1024
            cycles.append({"cycle": cycle, "rss_mb": rss, "start_s": up, "stop_s": down,
                           "threads": status_kb(pid, "Threads"), "hwm_mb": status_kb(pid, "VmHWM") / 1024})
            print(f"cycle {cycle:3d}: RSS {rss:7.1f} MB   start {up * 1000:6.0f} ms   stop {down * 1000:6.0f} ms",
                  flush=True)
    finally:
        kepler.close()

    rss = {c["cycle"]: c["rss_mb"] for c in cycles}
    last = max(rss)
    growth_15 = rss[15] - rss[3] if 15 in rss else None
    growth_last = rss[last] - rss[3]
    per_start_kb = growth_last * 1024 / ((last - 3) * args.services)
    print()
    print(f"{args.services} services, {len(cycles)} cycles; load average "
          f"{' '.join(load_before)} before, {' '.join(Path('/proc/loadavg').read_text().split()[:3])} after")
    if growth_15 is not None:
        verdict = "PASS" if growth_15 <= GROWTH_LIMIT_MB else "MISS"
        print(f"RSS growth cycle 3 -> 15: {growth_15:+.1f} MB  (target <= {GROWTH_LIMIT_MB} MB: {verdict})")
    print(f"RSS growth cycle 3 -> {last}: {growth_last:+.1f} MB ({per_start_kb:+.2f} KB per service start)")
    print(f"median start {statistics.median(c['start_s'] for c in cycles) * 1000:.0f} ms, "
          f"median stop {statistics.median(c['stop_s'] for c in cycles) * 1000:.0f} ms")

    out = Path(env["SK_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg_before": load_before},
        "services": args.services, "version": kepler.version(), "rss_before_mb": base,
        "growth_3_15_mb": growth_15, "growth_3_last_mb": growth_last, "cycles": cycles,
    }, indent=1))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
