#!/usr/bin/env python3
"""Observability benchmark driver: what sampling costs the daemon, how fast `/metrics`
answers, and how long `kepler top` takes to draw a frame.

Run it through bench/observability.sh, which builds Kepler and passes OB_WORK (scratch dir),
OB_RESULTS (JSON output path), OB_KEPLER_CLI, OB_KEPLER_STATE and OB_ROOT (the repository) in
the environment.

- Sampling: 100 idle services with `kepler.metrics.interval: 5s`; the daemon's own CPU time
  (utime + stime of /proc/<daemon>/stat) over a window of whole ticks, as a share of one core.
  With --reference, the same window with sampling off, to show what sampling adds.
- /metrics: 1000 idle services, sampled at least once; wall time of a GET on a fresh
  connection (the endpoint serves one request per connection), as a scraper sees it.
- top frame: kepler-cli/benches/top_frame.rs, `kepler top`'s own model and drawing code
  with 1000 services and full sparklines: one sampling tick applied and the screen (200x60,
  scrolled half-way) drawn, per frame, as the view does on each update.
- top --once: against the same 1000 services (hyperfine), the whole path for reference:
  the CLI's start, handshake, the daemon's first frame (with the history read for the
  sparklines), all 1000 rows drawn and printed.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import PeerError, Service, ServiceSet, marked_pids, run, wait_until  # noqa: E402
from peers.kepler import Kepler, render_config  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces) start at state; utime, stime are 14, 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Observability:
    def __init__(self, work: Path, kepler: Kepler, quick: bool):
        self.work, self.kepler, self.quick = work, kepler, quick
        bin_dir = work / "bin"
        bin_dir.mkdir(exist_ok=True)
        # A private copy marks our processes in /proc.
        self.sleep = bin_dir / "sleep"
        shutil.copy2(shutil.which("sleep"), self.sleep)

    def open(self, n: int, interval: str) -> ServiceSet:
        services = ServiceSet(f"sleep{n}-{interval}", tuple(
            Service(f"s{i:04}", (str(self.sleep), "100000")) for i in range(1, n + 1)))
        self.kepler.open(services)
        self.kepler.config.write_text(f"kepler:\n  metrics:\n    interval: {interval}\n"
                                      + render_config(services))
        return services

    def start_all(self, n: int) -> None:
        self.kepler.start()
        marker = str(self.sleep).encode() + b"\0"
        wait_until(lambda: len(marked_pids(marker)) == n, f"{n} sleep processes", timeout=120)

    def sampling_window(self, interval: str, window: float) -> dict:
        n = 100
        self.open(n, interval)
        try:
            pid = self.kepler.daemon_pid()
            self.start_all(n)
            # Let the start's own work settle before measuring.
            time.sleep(2.0)
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            time.sleep(window)
            t1, c1 = time.monotonic(), cpu_seconds(pid)
            self.kepler.stop()
        finally:
            self.kepler.close()
        share = (c1 - c0) / (t1 - t0) * 100
        log(f"  {n} services, interval {interval}: daemon CPU {share:.3f} % of a core "
            f"({c1 - c0:.2f} s over {t1 - t0:.0f} s)")
        return {"median": share, "unit": "% of a core", "cpu_seconds": c1 - c0, "window_s": t1 - t0}

    def endpoint_and_top(self) -> tuple[dict, dict]:
        n = 1000
        port = free_port()
        self.kepler.env["KEPLER_METRICS_LISTEN"] = f"127.0.0.1:{port}"
        self.open(n, "1s")
        try:
            self.start_all(n)
            # Every service sampled at least once: a memory gauge for each.
            wait_until(lambda: self.scrape(port)[1].count(b"\nkepler_service_memory_bytes{") == n,
                       f"{n} services sampled in /metrics", timeout=60, every=0.5)
            runs = 30 if self.quick else 100
            for _ in range(5):
                self.scrape(port)
            times, size = [], 0
            for _ in range(runs):
                elapsed, body = self.scrape(port)
                times.append(elapsed * 1000)
                size = len(body)
            times.sort()
            metrics = {"median": statistics.median(times), "unit": "ms",
                       "p95": times[int(len(times) * 0.95) - 1], "runs": runs, "body_bytes": size}
            log(f"  /metrics, {n} services: median {metrics['median']:.2f} ms, "
                f"p95 {metrics['p95']:.2f} ms, {size} bytes")
            top = self.top_once(n)
            self.kepler.stop()
        finally:
            self.kepler.close()
            del self.kepler.env["KEPLER_METRICS_LISTEN"]
        return metrics, top

    @staticmethod
    def scrape(port: int) -> tuple[float, bytes]:
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise PeerError(f"GET /metrics answered {response.status}")
        return elapsed, body

    def top_once(self, n: int) -> dict:
        command = [str(self.kepler.cli), "-f", str(self.kepler.config), "top", "--once"]
        frame = run(command, env=self.kepler.env, timeout=30).stdout
        rows = sum(1 for line in frame.splitlines() if re.search(r" s\d{4} ", line))
        if rows != n:
            raise PeerError(f"`kepler top --once` listed {rows} of {n} services")
        export = self.work / "hyperfine-top.json"
        runs = 20 if self.quick else 50
        run(["hyperfine", "--shell=none", "--warmup", "3", "--runs", str(runs),
             "--export-json", str(export), subprocess.list2cmdline(command)],
            env=self.kepler.env, timeout=600)
        result = json.loads(export.read_text())["results"][0]
        median = result["median"] * 1000
        log(f"  top --once, {n} services: median {median:.2f} ms")
        return {"median": median, "unit": "ms", "runs": runs,
                "min": result["min"] * 1000, "max": result["max"] * 1000}


def top_frame(quick: bool) -> dict:
    frames = 100 if quick else 300
    done = run(["cargo", "bench", "-q", "-p", "kepler-cli", "--bench", "top_frame", "--", "1000",
                str(frames)], env={**os.environ}, timeout=1800)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"  top frame, 1000 services: median {result['median_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms")
    return {"median": result["median_ms"], "unit": "ms", "p95": result["p95_ms"], "frames": frames,
            "screen": f"{result['width']}x{result['height']}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 30 s sampling window, fewer runs")
    parser.add_argument("--reference", action="store_true",
                        help="also measure the daemon's CPU with sampling off")
    args = parser.parse_args()

    work = Path(os.environ["OB_WORK"])
    kepler = Kepler(Path(os.environ["OB_KEPLER_CLI"]), Path(os.environ["OB_KEPLER_STATE"]), work)
    bench = Observability(work, kepler, args.quick)
    window = 30.0 if args.quick else 60.0

    results: dict = {}
    try:
        log("sampling cost:")
        results["sampling_cpu_100"] = bench.sampling_window("5s", window)
        if args.reference:
            results["idle_cpu_100_unsampled"] = bench.sampling_window("0", window)
        log("/metrics and top:")
        results["metrics_1000"], results["top_once_1000"] = bench.endpoint_and_top()
        log("top frame:")
        os.chdir(os.environ["OB_ROOT"])
        results["top_frame_1000"] = top_frame(args.quick)
    except PeerError as err:
        log(f"observability: {err}")
        return 1

    rows = [
        ("daemon CPU, 100 services sampled every 5 s", results["sampling_cpu_100"], "<= 0.5 % of a core"),
        ("GET /metrics, 1000 services", results["metrics_1000"], "<= 20 ms"),
        ("kepler top frame, 1000 services", results["top_frame_1000"], "<= 16 ms"),
        ("kepler top --once, 1000 services (whole path)", results["top_once_1000"], "reference"),
    ]
    if "idle_cpu_100_unsampled" in results:
        rows.insert(1, ("daemon CPU, 100 services, sampling off", results["idle_cpu_100_unsampled"], "reference"))
    print()
    for name, result, target in rows:
        print(f"{name:<50} {result['median']:9.3f} {result['unit']:<12} (target {target})")

    out = Path(os.environ["OB_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "host": platform.node(), "cpus": os.cpu_count(), "quick": args.quick,
        "kepler": kepler.version(), "results": results,
    }, indent=2))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
