#!/usr/bin/env python3
"""Lifecycle benchmark driver: Kepler against supervisord and pm2.

Run it through bench/lifecycle.sh, which installs the peers and passes their locations in the
environment: LC_WORK (scratch dir), LC_RESULTS (JSON output path), and for each peer it set up
LC_KEPLER_CLI + LC_KEPLER_STATE, LC_SUPERVISOR_BIN, LC_PM2_PREFIX.

Every peer gets a fresh daemon per scenario; starting that daemon is never timed. Processes are
counted through /proc by a marker in their command line (a private copy of `sleep`, or the
crash-loop's output file), so one peer's leftovers can neither hide nor inflate another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import Peer, PeerError, Service, ServiceSet, marked_pids, wait_until  # noqa: E402
from peers.kepler import Kepler  # noqa: E402
from peers.pm2 import Pm2  # noqa: E402
from peers.supervisord import Supervisord  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PEER_ORDER = ("kepler", "supervisord", "pm2")


@dataclasses.dataclass
class Plan:
    reps: int = 5
    reps_1000: int = 3
    with_1000: bool = True
    idle_windows: int = 5
    idle_seconds: float = 10.0
    respawns: int = 50


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ms_since(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


# --- /proc -------------------------------------------------------------------------------


def kill_marked(marker: bytes) -> int:
    pids = marked_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise PeerError(f"no VmRSS for pid {pid}")


def cpu_snapshot(pid: int) -> tuple[int, dict[int, int]]:
    """(utime+stime in clock ticks for the whole process, on-CPU ns per live thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    threads = {}
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            threads[int(task.name)] = int(Path(task.path, "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return ticks, threads


def idle_cpu_ms(pid: int, seconds: float) -> dict:
    """Daemon CPU over a window. utime+stime comes in 10 ms ticks, too coarse for a 5 ms target,
    so per-thread schedstat (ns) is summed too; it misses threads that exited inside the window,
    which stat still counts. Both undercount, so the larger is kept."""
    ticks0, threads0 = cpu_snapshot(pid)
    time.sleep(seconds)
    ticks1, threads1 = cpu_snapshot(pid)
    stat_ms = (ticks1 - ticks0) * 1000 / CLK_TCK
    sched_ms = sum(ns - threads0.get(tid, 0) for tid, ns in threads1.items()) / 1e6
    return {"ms": max(stat_ms, sched_ms), "stat_ms": stat_ms, "schedstat_ms": sched_ms,
            "threads_changed": threads0.keys() != threads1.keys()}


# --- measurements ------------------------------------------------------------------------


def time_start(peer: Peer, services: ServiceSet, marker: bytes) -> dict:
    """Times the peer's start command; if it returned before everything was up, times until it is."""
    if left := marked_pids(marker):
        raise PeerError(f"{len(left)} processes from an earlier run are still alive")
    t0 = time.perf_counter_ns()
    peer.start()
    cmd_ms = ms_since(t0)
    polled = False
    deadline = time.monotonic() + 120
    while not (len(marked_pids(marker)) == len(services) and peer.running()):
        polled = True
        if time.monotonic() > deadline:
            n = len(marked_pids(marker))
            raise PeerError(f"only {n}/{len(services)} processes up 120 s after `start`")
        time.sleep(0.002)
    total = ms_since(t0)
    return {"ms": total if polled else cmd_ms, "cmd_ms": cmd_ms, "returned_early": polled}


def time_stop(peer: Peer, marker: bytes) -> dict:
    """Times the stop command; if processes outlive it, keeps timing until the last one is gone."""
    t0 = time.perf_counter_ns()
    peer.stop()
    cmd_ms = ms_since(t0)
    left = len(marked_pids(marker))
    if left:
        wait_until(lambda: not marked_pids(marker), f"{left} processes to exit after stop",
                   timeout=120, every=0.001)
    return {"ms": ms_since(t0) if left else cmd_ms, "cmd_ms": cmd_ms, "left_after_cmd": left}


def summary(samples: list[dict], unit: str = "ms") -> dict:
    values = [s["ms"] if "ms" in s else s["value"] for s in samples]
    return {"median": statistics.median(values), "unit": unit, "samples": samples}


class Bench:
    def __init__(self, work: Path, plan: Plan):
        self.work = work
        self.plan = plan
        bin_dir = work / "bin"
        bin_dir.mkdir(exist_ok=True)
        # A private copy of sleep (not a symlink: a peer may resolve links) marks our processes.
        self.sleep = bin_dir / "sleep"
        shutil.copy2(shutil.which("sleep"), self.sleep)
        self.sleep_marker = str(self.sleep).encode() + b"\0"
        self.sh = shutil.which("sh")
        self.date = shutil.which("date")

    def sleepers(self, label: str, n: int, chained: bool = False) -> ServiceSet:
        return ServiceSet(label, tuple(
            Service(f"s{i}", (str(self.sleep), "1000"), after=f"s{i - 1}" if chained and i > 1 else None)
            for i in range(1, n + 1)))

    def crash_loop(self, out: Path) -> ServiceSet:
        script = (f"echo s $({self.date} +%s%N) >> {out}; "
                  f"echo e $({self.date} +%s%N) >> {out}; exit 1")
        return ServiceSet("respawn", (Service("crasher", (self.sh, "-c", script), restart_always=True),))

    # Each scenario opens the peer on its own set and always closes it, whatever happened.
    def scenario(self, peer: Peer, services: ServiceSet, body, results: dict, keys: list[str]) -> None:
        try:
            peer.open(services)
            results.update(body())
        except PeerError as err:
            log(f"  [{peer.name}] {services.label}: {err}")
            for key in keys:
                results.setdefault(key, {"error": str(err)})
        finally:
            peer.close()  # every peer's daemon stops its services on the way out
            stray = kill_marked(str(self.work).encode() + b"/")
            if stray:
                log(f"  [{peer.name}] killed {stray} processes left over after {services.label}")
                for key in keys:
                    results.setdefault(key, {}).setdefault("leftovers_killed", stray)

    def start_stop(self, peer: Peer, services: ServiceSet, reps: int, tag: str, rss: bool = False):
        def body():
            starts, stops, rsses = [], [], []
            for rep in range(1, reps + 1):
                starts.append(time_start(peer, services, self.sleep_marker))
                if rss:
                    time.sleep(1)  # let the daemon settle after the burst
                    rsses.append({"value": rss_mb(peer.daemon_pid())})
                stops.append(time_stop(peer, self.sleep_marker))
                peer.after_stop()
                log(f"  [{peer.name}] {tag} rep {rep}/{reps}: start {starts[-1]['ms']:.1f} ms, "
                    f"stop {stops[-1]['ms']:.1f} ms" + (f", rss {rsses[-1]['value']:.1f} MB" if rss else ""))
            out = {f"start_{tag}": summary(starts), f"stop_{tag}": summary(stops)}
            if rss:
                out[f"rss_{tag}"] = summary(rsses, "MB")
            return out
        return body

    def chain(self, peer: Peer, services: ServiceSet, reps: int):
        def body():
            starts = []
            for rep in range(1, reps + 1):
                starts.append(time_start(peer, services, self.sleep_marker))
                time_stop(peer, self.sleep_marker)
                peer.after_stop()
                log(f"  [{peer.name}] chain rep {rep}/{reps}: {starts[-1]['ms']:.1f} ms")
            return {"chain_20": summary(starts)}
        return body

    def idle(self, peer: Peer, services: ServiceSet):
        def body():
            time_start(peer, services, self.sleep_marker)
            time.sleep(2)  # past the start-up burst
            windows = []
            for _ in range(self.plan.idle_windows):
                windows.append(idle_cpu_ms(peer.daemon_pid(), self.plan.idle_seconds))
                log(f"  [{peer.name}] idle CPU over {self.plan.idle_seconds:.0f} s: {windows[-1]['ms']:.2f} ms "
                    f"(utime+stime {windows[-1]['stat_ms']:.0f} ms)")
            time_stop(peer, self.sleep_marker)
            return {"idle_cpu_100": summary(windows, "ms/10s")}
        return body

    def respawn(self, peer: Peer, out: Path):
        marker = str(out).encode()

        def starts() -> int:
            try:
                return out.read_text().count("s ")
            except FileNotFoundError:
                return 0

        def body():
            peer.launch()
            wait_until(lambda: starts() > self.plan.respawns, f"{self.plan.respawns} respawns", timeout=120)
            # A crash loop may be between runs when stop lands; ask again until nothing respawns.
            for _ in range(3):
                try:
                    peer.stop()
                except PeerError as err:
                    log(f"  [{peer.name}] stop during crash loop: {err}")
                seen = starts()
                time.sleep(1)
                if starts() == seen and not marked_pids(marker):
                    break
            else:
                raise PeerError("the crash loop kept respawning after stop")
            events = [line.split() for line in out.read_text().splitlines()]
            latencies = [(int(cur[1]) - int(prev[1])) / 1e6
                         for prev, cur in zip(events, events[1:]) if prev[0] == "e" and cur[0] == "s"]
            latencies = latencies[: self.plan.respawns]
            log(f"  [{peer.name}] respawn: median {statistics.median(latencies):.2f} ms "
                f"over {len(latencies)} respawns")
            return {"respawn": {"median": statistics.median(latencies), "unit": "ms",
                                "p90": statistics.quantiles(latencies, n=10)[-1],
                                "samples": [round(x, 3) for x in latencies]}}
        return body

    def run_peer(self, peer: Peer) -> dict:
        plan, results = self.plan, {}
        log(f"== {peer.name}: {peer.version()}")
        s100 = self.sleepers("sleep100", 100)
        self.scenario(peer, s100, self.start_stop(peer, s100, plan.reps, "100"), results,
                      ["start_100", "stop_100"])
        self.scenario(peer, s100, self.idle(peer, s100), results, ["idle_cpu_100"])
        if plan.with_1000:
            s1000 = self.sleepers("sleep1000", 1000)
            self.scenario(peer, s1000, self.start_stop(peer, s1000, plan.reps_1000, "1000", rss=True),
                          results, ["start_1000", "stop_1000", "rss_1000"])
        chain = self.sleepers("chain20", 20, chained=True)
        self.scenario(peer, chain, self.chain(peer, chain, plan.reps), results, ["chain_20"])
        out = self.work / f"respawn-{peer.name}.log"
        self.scenario(peer, self.crash_loop(out), self.respawn(peer, out), results, ["respawn"])
        return results


# --- report ------------------------------------------------------------------------------

# (label, result key, unit, Kepler target; lower is better everywhere)
ROWS = [
    ("start 100 (--wait)", "start_100", "ms", 100),
    ("stop 100", "stop_100", "ms", 150),
    ("start 1000 (--wait)", "start_1000", "ms", 1500),
    ("stop 1000", "stop_1000", "ms", 1500),
    ("daemon RSS, 1000 running", "rss_1000", "MB", 60),
    ("chain of 20 (service_started)", "chain_20", "ms", 30),
    ("daemon CPU, 100 idle / 10 s", "idle_cpu_100", "ms", 5),
    ("crash-to-respawn", "respawn", "ms", 5),
]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.1f}x"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def median_of(results: dict, peer: str, key: str) -> float | None:
    entry = results.get(peer, {}).get(key, {})
    return entry.get("median")


def compare(kepler: float | None, peers: list[float], key: str) -> str:
    if kepler is None or not peers:
        return ""
    best = min(peers)
    timed = key.startswith(("start", "stop", "chain", "respawn"))
    better, worse = ("faster", "slower") if timed else ("less", "more")
    if kepler <= 0:
        return f"{better} (kepler ~0)"
    factor = best / kepler
    return f"{factor:.1f}x {better}" if factor >= 1 else f"{1 / factor:.1f}x {worse}"


def report(results: dict, peers: list[str]) -> str:
    header = f"{'scenario':<32}" + "".join(f"{p:>13}" for p in peers) + f"   {'kepler vs best peer':<22}{'kepler target'}"
    lines = [header, "-" * len(header)]
    for label, key, unit, target in ROWS:
        cells = []
        for p in peers:
            entry = results.get(p, {}).get(key)
            cells.append("error" if entry and "error" in entry else fmt(median_of(results, p, key), unit))
        k = median_of(results, "kepler", key)
        others = [v for p in peers if p != "kepler" and (v := median_of(results, p, key)) is not None]
        verdict = ""
        if "kepler" in peers:
            verdict = f"<= {target} {unit}  " + ("-" if k is None else "PASS" if k <= target else "MISS")
        lines.append(f"{label:<32}" + "".join(f"{c:>13}" for c in cells)
                     + f"   {compare(k, others, key) if 'kepler' in peers else '':<22}{verdict}")
    for what in ("start", "stop"):
        ratios = []
        for p in peers:
            small, big = median_of(results, p, f"{what}_100"), median_of(results, p, f"{what}_1000")
            ratios.append(big / small if small and big else None)
        k = ratios[peers.index("kepler")] if "kepler" in peers else None
        shape = "" if k is None else ("linear or better" if k <= 12 else "superlinear")
        lines.append(f"{what + ' cost 100 -> 1000':<32}" + "".join(f"{fmt(r, 'x'):>13}" for r in ratios)
                     + f"   {'':<22}" + (f"~10x = linear  {shape}" if "kepler" in peers else ""))
    return "\n".join(lines)


NOTES = """\
Notes: medians; daemons (kepler-daemon, supervisord, pm2 God) are started before timing and
not counted. Start = the start command until it returns, or until every process is up if it
returned earlier; stop likewise until the last process is gone (checked in /proc). pm2 timings
include its node CLI start-up; each pm2 start registers the apps from eco.config.js anew.
supervisord/pm2 have no dependencies: their chain is priority/list order, not equivalent.
Idle CPU is the daemon's on-CPU time: utime+stime, or the per-thread schedstat sum if larger
(stat counts in 10 ms ticks).
Respawn latency includes sh start-up and one `date` exec (the same for every peer)."""


def peers_from_env(work: Path, only: str | None) -> list[Peer]:
    env, peers = os.environ, []
    if env.get("LC_KEPLER_CLI") and only in (None, "kepler"):
        peers.append(Kepler(Path(env["LC_KEPLER_CLI"]), Path(env["LC_KEPLER_STATE"]), work))
    if env.get("LC_SUPERVISOR_BIN") and only in (None, "supervisord"):
        peers.append(Supervisord(Path(env["LC_SUPERVISOR_BIN"]), work))
    if env.get("LC_PM2_PREFIX") and only in (None, "pm2"):
        peers.append(Pm2(Path(env["LC_PM2_PREFIX"]), work))
    return peers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, skip the 1000-service runs")
    parser.add_argument("--only", choices=PEER_ORDER)
    args = parser.parse_args()
    work = Path(os.environ["LC_WORK"])
    plan = Plan(reps=3, with_1000=False, idle_windows=1, respawns=20) if args.quick else Plan()
    peers = peers_from_env(work, args.only)
    if not peers:
        log("lifecycle: no peer to measure")
        return 1
    log(f"load average before the run: {Path('/proc/loadavg').read_text().split()[:3]}, "
        f"{os.cpu_count()} CPUs")
    bench = Bench(work, plan)
    results, versions = {}, {}
    for peer in peers:
        try:
            versions[peer.name] = peer.version()
        except PeerError as err:
            versions[peer.name] = f"? ({err})"
        results[peer.name] = bench.run_peer(peer)

    names = [p.name for p in peers]
    print()
    print(report(results, names))
    print()
    print(NOTES)
    for peer in names:
        for key, entry in results[peer].items():
            if "error" in entry:
                print(f"error: {peer} {key}: {entry['error']}")

    out = Path(os.environ["LC_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_after": Path("/proc/loadavg").read_text().split()[:3]},
        "plan": dataclasses.asdict(plan),
        "versions": versions,
        "targets": {key: {"value": target, "unit": unit} for _, key, unit, target in ROWS},
        "results": results,
    }, indent=1))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
