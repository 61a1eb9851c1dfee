#!/usr/bin/env python3
"""Resource benchmark driver: daemon memory with idle and flooding services, write
amplification of log storage, and `kepler ps` latency under a log flood.

Run it through bench/resources.sh, which builds Kepler and passes RS_WORK (scratch dir),
RS_RESULTS (JSON output path), RS_KEPLER_CLI and RS_KEPLER_STATE in the environment.

Each scenario gets a fresh daemon. Memory comes from /proc/<daemon>/status (VmRSS, and VmHWM
for the peak). Write amplification: bytes the daemon passed to write() (wchar of
/proc/<daemon>/io; it writes nothing else during a flood) per byte of records logged. Bytes
logged come from the floods' own wchar (what they wrote into their pipes), each 100-byte line
stored as a record 18 bytes longer (timestamp, origin tag, separators). write_bytes (what
reached the block layer) is recorded too.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import PeerError, Service, ServiceSet, marked_pids, run, wait_until  # noqa: E402
from peers.kepler import Kepler, render_config  # noqa: E402

LINE = 100  # bytes per flood line, newline included
RECORD_OVERHEAD = 18  # record bytes beyond the line's own (kepler-daemon/src/logs/record.rs)


@dataclasses.dataclass
class Plan:
    idle_services: int = 100
    flood_services: int = 6
    flood_seconds: float = 12.0
    flood_max_size: str = "20M"
    ps_floods: int = 10
    ps_runs: int = 60


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise PeerError(f"no {key} for pid {pid}")


def proc_io(pid: int) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())}


def written_by(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += proc_io(pid)["wchar"]
        except (OSError, KeyError):
            pass
    return total


class Resources:
    def __init__(self, work: Path, kepler: Kepler, plan: Plan):
        self.work, self.kepler, self.plan = work, kepler, plan
        bin_dir = work / "bin"
        bin_dir.mkdir(exist_ok=True)
        # Private copies mark our processes in /proc.
        self.sleep, self.yes = bin_dir / "sleep", bin_dir / "yes"
        shutil.copy2(shutil.which("sleep"), self.sleep)
        shutil.copy2(shutil.which("yes"), self.yes)

    def open(self, services: ServiceSet, logs: str = "") -> None:
        self.kepler.open(services)
        self.kepler.config.write_text((f"kepler:\n  logs: {logs}\n" if logs else "") + render_config(services))

    def floods(self, label: str, n: int) -> ServiceSet:
        return ServiceSet(label, tuple(Service(f"flood{i}", (str(self.yes), "x" * (LINE - 2)))
                                       for i in range(1, n + 1)))

    def logs_dir(self) -> Path:
        found = next(self.kepler.state_dir.glob("configs/*/logs"), None)
        if found is None:
            raise PeerError("no logs directory in the daemon's state dir")
        return found

    def idle(self) -> dict:
        n = self.plan.idle_services
        services = ServiceSet(f"idle{n}", tuple(Service(f"s{i}", (str(self.sleep), "1000"))
                                                  for i in range(1, n + 1)))
        self.open(services)
        try:
            pid = self.kepler.daemon_pid()
            self.kepler.start()
            wait_until(lambda: len(marked_pids(str(self.sleep).encode() + b"\0")) == n,
                       f"{n} sleep processes", timeout=60)
            samples = []
            for _ in range(5):
                time.sleep(1.0)
                samples.append(status_kb(pid, "VmRSS") / 1024)
            threads = status_kb(pid, "Threads")
            self.kepler.stop()
        finally:
            self.kepler.close()
        log(f"  idle {n}: RSS median {statistics.median(samples):.1f} MB, {threads} threads")
        return {"median": statistics.median(samples), "unit": "MB", "samples": samples, "threads": threads}

    def flood(self) -> dict:
        plan = self.plan
        max_bytes = int(plan.flood_max_size.rstrip("M")) << 20
        self.open(self.floods("flood", plan.flood_services), f"{{max_size: {plan.flood_max_size}}}")
        marker = str(self.yes).encode() + b"\0"
        try:
            pid = self.kepler.daemon_pid()
            io0 = proc_io(pid)
            self.kepler.launch()
            logs = None
            largest = 0
            deadline = time.monotonic() + plan.flood_seconds
            while time.monotonic() < deadline:
                logs = logs or next(self.kepler.state_dir.glob("configs/*/logs"), None)
                if logs:
                    per_stream: dict[str, int] = {}
                    for f in logs.iterdir():
                        try:
                            size = f.stat().st_size
                        except FileNotFoundError:
                            continue
                        stream = f.name.split(".log")[0]
                        per_stream[stream] = per_stream.get(stream, 0) + size
                    largest = max([largest, *per_stream.values()])
                time.sleep(0.05)
            io1 = proc_io(pid)
            produced = written_by(marked_pids(marker))
            hwm = status_kb(pid, "VmHWM") / 1024
            rss_flooding = status_kb(pid, "VmRSS") / 1024
            self.kepler.stop()
            wait_until(lambda: len(marked_pids(marker)) == 0, "the floods to stop", timeout=60)
            time.sleep(1.0)
            rss_after = status_kb(pid, "VmRSS") / 1024
        finally:
            self.kepler.close()
        logged = produced // LINE * (LINE + RECORD_OVERHEAD)
        wchar = io1["wchar"] - io0["wchar"]
        disk = io1["write_bytes"] - io0["write_bytes"]
        result = {
            "peak_rss": {"median": hwm, "unit": "MB"},
            "rss_flooding": rss_flooding, "rss_after_stop": rss_after,
            "logged_mb": logged / 2**20, "lines_per_s": produced / LINE / plan.flood_seconds,
            "write_amplification": {"median": wchar / logged if logged else None, "unit": "x",
                                    "write_bytes_ratio": disk / logged if logged else None},
            "largest_stream": {"median": largest / 2**20, "unit": "MB", "max_size_mb": max_bytes / 2**20},
        }
        log(f"  flood x{plan.flood_services}: peak RSS {hwm:.1f} MB, after stop {rss_after:.1f} MB, "
            f"{logged / 2**20:.0f} MB logged, disk/logged {result['write_amplification']['median']:.3f}, "
            f"largest stream {largest / 2**20:.1f} MB")
        return result

    def ps_under_flood(self) -> dict:
        plan = self.plan
        self.open(self.floods("psflood", plan.ps_floods), f"{{max_size: {plan.flood_max_size}}}")
        export = self.work / "hyperfine-ps.json"
        try:
            self.kepler.launch()
            marker = str(self.yes).encode() + b"\0"
            wait_until(lambda: len(marked_pids(marker)) == plan.ps_floods, "the floods to run", timeout=60)
            time.sleep(1.0)
            cmd = f"'{self.kepler.cli}' -f '{self.kepler.config}' ps"
            run(["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(plan.ps_runs),
                 "--export-json", export, cmd], env=self.kepler.env, timeout=600)
            self.kepler.stop()
        finally:
            self.kepler.close()
        times = sorted(t * 1000 for t in json.loads(export.read_text())["results"][0]["times"])
        result = {"median": statistics.median(times), "unit": "ms",
                  "p90": statistics.quantiles(times, n=10)[-1], "max": times[-1], "runs": len(times)}
        log(f"  ps with {plan.ps_floods} floods: p50 {result['median']:.2f} ms, p90 {result['p90']:.2f} ms, "
            f"max {result['max']:.1f} ms")
        return result


def guarded(results: dict, key: str, body) -> None:
    try:
        results[key] = body()
    except (PeerError, subprocess.SubprocessError, OSError, ValueError) as err:
        log(f"  {key}: {err}")
        results[key] = {"error": str(err)}


# (label, key, sub-key or None, unit, target)
ROWS = [
    ("RSS, 100 idle services", "idle", None, "MB", 12),
    ("peak RSS, 6 floods at max_size 20M, 12 s", "flood", "peak_rss", "MB", 64),
    ("bytes written per byte logged (6 floods)", "flood", "write_amplification", "x", 1.05),
    ("largest stream on disk (max_size 20M)", "flood", "largest_stream", "MB", 20),
    ("kepler ps p50, 10 floods", "ps_flood", None, "ms", 10),
]


def report(results: dict) -> str:
    lines = [f"{'scenario':<45}{'median':>12}   target", "-" * 70]
    for label, key, sub, unit, target in ROWS:
        entry = results.get(key, {})
        entry = entry.get(sub, {}) if sub and "error" not in entry else entry
        value = entry.get("median")
        if value is None:
            lines.append(f"{label:<45}{'error':>12}")
            continue
        verdict = "PASS" if value <= target else "MISS"
        lines.append(f"{label:<45}{value:>9.2f} {unit:<2}   <= {target} {unit}  {verdict}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 6 s flood and fewer `ps` runs")
    args = parser.parse_args()
    plan = Plan(flood_seconds=6.0, ps_runs=30) if args.quick else Plan()
    env = os.environ
    work = Path(env["RS_WORK"])
    kepler = Kepler(Path(env["RS_KEPLER_CLI"]), Path(env["RS_KEPLER_STATE"]), work)
    bench = Resources(work, kepler, plan)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    log(f"load average before the run: {load_before}, {os.cpu_count()} CPUs")
    results: dict = {}
    log("== idle services")
    guarded(results, "idle", bench.idle)
    log("== floods")
    guarded(results, "flood", bench.flood)
    log("== ps under a flood")
    guarded(results, "ps_flood", bench.ps_under_flood)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print()
    print(f"load average: {' '.join(load_before)} before, {' '.join(load_after)} after "
          f"({os.cpu_count()} CPUs, shared)")
    print(report(results))
    for key, entry in results.items():
        if "error" in entry:
            print(f"error: {key}: {entry['error']}")
    out = Path(env["RS_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_before": load_before, "loadavg_after": load_after},
        "plan": dataclasses.asdict(plan), "version": kepler.version(), "results": results,
    }, indent=1))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
