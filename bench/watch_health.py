#!/usr/bin/env python3
"""Watch and health-check benchmark driver (Kepler only): file-change-to-restart latency, and
the daemon's CPU while it probes 100 services over HTTP every second.

Run it through bench/watch_health.sh, which builds Kepler and passes WH_WORK (scratch dir),
WH_RESULTS (JSON output path), WH_KEPLER_CLI and WH_KEPLER_STATE in the environment.
`watch_health.py serve PORT_FILE` is the HTTP server the health checks probe; it runs as its
own process so its CPU is not the daemon's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lifecycle import idle_cpu_ms  # noqa: E402
from peers.base import PeerError, Service, ServiceSet, marked_pids, wait_until  # noqa: E402
from peers.kepler import Kepler  # noqa: E402

DEBOUNCE_MS = 100  # kepler-daemon/src/watcher/mod.rs DEFAULT_DEBOUNCE


@dataclasses.dataclass
class Plan:
    watch_iterations: int = 20
    services: int = 100
    # More than root's 128 inotify instances, each service watching a tree of its own.
    watched_services: int = 130
    dirs_per_tree: int = 20
    cpu_seconds: float = 30.0
    baseline_seconds: float = 10.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def inotify_use(pid: int) -> tuple[int, int]:
    """(inotify instances, inotify watches) the process holds, from /proc/<pid>/fd{,info}."""
    instances = watches = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            if "inotify" not in os.readlink(fd.path):
                continue
            instances += 1
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        watches += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return instances, watches


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def thread_ns(pid: int) -> dict[int, tuple[str, int]]:
    """Per live thread: (name, on-CPU ns from schedstat)."""
    threads = {}
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            name = Path(task.path, "comm").read_text().strip()
            threads[int(task.name)] = (name, int(Path(task.path, "schedstat").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return threads


def cpu_by_thread_name(before: dict, after: dict) -> dict[str, float]:
    """ms on CPU per thread name between two thread_ns snapshots (threads that died are missed)."""
    by_name: dict[str, float] = {}
    for tid, (name, ns) in after.items():
        by_name[name] = by_name.get(name, 0) + (ns - before.get(tid, (name, 0))[1]) / 1e6
    return dict(sorted(((n, round(ms, 1)) for n, ms in by_name.items()), key=lambda kv: -kv[1]))


class KeplerYaml(Kepler):
    """Kepler with a kepler.yaml written whole, for keys the shared renderer has no field for.
    The daemon reads the file at `start`, so it replaces the one the base peer wrote in `open`."""

    def __init__(self, cli: Path, state_dir: Path, work: Path, yaml: str, working_dir: Path):
        super().__init__(cli, state_dir, work)
        self.yaml = yaml
        self.working_dir = working_dir

    def open(self, services: ServiceSet) -> None:
        super().open(services)
        self.config = self.working_dir / "kepler.yaml"
        self.config.write_text(self.yaml)

    def statuses(self) -> list[str]:
        out = self._kepler("-f", self.config, "ps", "--json", timeout=30).stdout
        return [row.get("status") for row in json.loads(out)]


# --- the probed HTTP server ----------------------------------------------------------------


class Probed(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/count":
            body = str(Probed.hits).encode()
        else:
            Probed.hits += 1
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port_file: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probed)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(port_file)  # the driver never reads a half-written port
    server.serve_forever()


def probe_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as answer:
        return int(answer.read())


# --- scenarios -----------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, cli: Path, state: Path, plan: Plan):
        self.work, self.cli, self.state, self.plan = work, cli, state, plan
        bin_dir = work / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        # A private copy of sleep marks our processes in /proc.
        self.sleep = bin_dir / "sleep"
        shutil.copy2(shutil.which("sleep"), self.sleep)

    def kepler(self, label: str, yaml: str, names: list[str]) -> KeplerYaml:
        directory = self.work / label
        directory.mkdir(parents=True, exist_ok=True)
        peer = KeplerYaml(self.cli, self.state, self.work, yaml, directory)
        peer.open(ServiceSet(label, tuple(Service(n, ("true",)) for n in names)))
        return peer

    def watch_latency(self) -> dict:
        """Write a watched file, then read the new process's own start time."""
        directory = self.work / "watch"
        (directory / "watched").mkdir(parents=True, exist_ok=True)
        starts = directory / "starts"
        script = directory / "record-start.sh"
        # The new process stamps its start before anything else, then becomes the long sleep.
        script.write_text(f'date +%s%N >> "{starts}"\nexec "{self.sleep}" 1000\n')
        yaml = (f"services:\n  app:\n    command: [\"sh\", \"{script}\"]\n"
                f"    working_dir: \"{directory}\"\n"
                "    restart: {policy: always, watch: [\"watched/*.txt\"]}\n")
        peer = self.kepler("watch", yaml, ["app"])

        def started() -> list[int]:
            try:
                return [int(x) for x in starts.read_text().split()]
            except FileNotFoundError:
                return []

        latencies = []
        try:
            peer.launch()
            wait_until(lambda: len(started()) == 1 and peer.running(), "the watched service to run")
            for i in range(self.plan.watch_iterations):
                seen = len(started())
                time.sleep(0.3)  # well past the previous burst's debounce window
                written = time.time_ns()
                (directory / "watched" / "change.txt").write_text(f"change {i}\n")
                wait_until(lambda: len(started()) > seen, f"a restart after write {i + 1}", timeout=10,
                           every=0.002)
                latencies.append((started()[seen] - written) / 1e6)
                log(f"  watch {i + 1}/{self.plan.watch_iterations}: {latencies[-1]:.1f} ms")
                wait_until(peer.running, "the restarted service to run")
            extra = len(started()) - 1 - len(latencies)
        finally:
            peer.close()
        log(f"  watch: median {statistics.median(latencies):.1f} ms over {len(latencies)} changes")
        return {"median": statistics.median(latencies), "unit": "ms", "max": max(latencies),
                "extra_restarts": extra, "samples": [round(x, 2) for x in latencies]}

    def watch_many(self) -> dict:
        """Many services, each watching a tree of its own: start time, the daemon's inotify
        use, and one write-to-restart latency among them all."""
        root = self.work / "many"
        names = [f"w{i}" for i in range(1, self.plan.watched_services + 1)]
        lines = ["services:"]
        for name in names:
            for d in range(self.plan.dirs_per_tree):
                (root / name / "src" / f"d{d}").mkdir(parents=True, exist_ok=True)
            lines += [f"  {name}:",
                      f"    command: [\"sh\", \"-c\", \"date +%s%N >> starts; exec {self.sleep} 1000\"]",
                      f"    working_dir: \"{root / name}\"",
                      "    restart: {policy: always, watch: [\"src/**/*.txt\"]}"]
        peer = self.kepler("many", "\n".join(lines) + "\n", names)
        last = root / names[-1]

        def started() -> list[int]:
            try:
                return [int(x) for x in (last / "starts").read_text().split()]
            except FileNotFoundError:
                return []

        try:
            began = time.monotonic()
            peer.launch()
            wait_until(lambda: peer.statuses().count("running") == len(names),
                       f"{len(names)} watched services to run", timeout=120, every=0.2)
            start_s = time.monotonic() - began
            wait_until(lambda: len(started()) == 1, "the last service's first start")
            instances, watches = inotify_use(peer.daemon_pid())
            time.sleep(0.3)
            written = time.time_ns()
            (last / "src" / "d0" / "change.txt").write_text("change\n")
            wait_until(lambda: len(started()) > 1, "a restart of the last service", timeout=10,
                       every=0.002)
            latency = (started()[1] - written) / 1e6
        finally:
            peer.close()
        log(f"  {len(names)} watched services: running after {start_s:.2f} s, {instances} inotify "
            f"instance(s), {watches} watches; write -> restart {latency:.1f} ms")
        return {"median": latency, "unit": "ms", "start_s": round(start_s, 3),
                "inotify_instances": instances, "inotify_watches": watches,
                "expected_watches": len(names) * (self.plan.dirs_per_tree + 1)}

    def health_yaml(self, port: int | None) -> tuple[str, list[str]]:
        names = [f"s{i}" for i in range(1, self.plan.services + 1)]
        lines = ["services:"]
        for name in names:
            lines += [f"  {name}:", f"    command: [\"{self.sleep}\", \"1000\"]"]
            if port is not None:
                lines.append(f"    healthcheck: {{http: \"http://127.0.0.1:{port}/\", interval: 1s}}")
        return "\n".join(lines) + "\n", names

    def daemon_cpu(self, label: str, port: int | None, seconds: float) -> dict:
        """Daemon CPU over `seconds` with the services up (and healthy, when probed)."""
        yaml, names = self.health_yaml(port)
        peer = self.kepler(label, yaml, names)
        want = "healthy" if port is not None else "running"
        try:
            peer.launch()
            wait_until(lambda: peer.statuses().count(want) == len(names),
                       f"{len(names)} services to be {want}", timeout=120, every=0.5)
            time.sleep(2)  # past the start-up burst
            hits0 = probe_count(port) if port else 0
            threads0 = thread_ns(peer.daemon_pid())
            cpu = idle_cpu_ms(peer.daemon_pid(), seconds)
            by_thread = cpu_by_thread_name(threads0, thread_ns(peer.daemon_pid()))
            hits = (probe_count(port) - hits0) if port else 0
            still = peer.statuses().count(want)
        finally:
            peer.close()
        percent = cpu["ms"] / (seconds * 1000) * 100
        log(f"  [{label}] daemon CPU {cpu['ms']:.0f} ms over {seconds:.0f} s = {percent:.2f}% of a core"
            + (f", {hits} probes answered" if port else "") + f"; ms by thread: {by_thread}")
        return {"median": percent, "unit": "% of one core", "cpu_ms": cpu, "seconds": seconds,
                "cpu_ms_by_thread_name": by_thread,
                "probes": hits, f"{want}_at_end": still}

    def health_cost(self) -> dict:
        port_file = self.work / "http.port"
        server = subprocess.Popen([sys.executable, __file__, "serve", str(port_file)],
                                  stdin=subprocess.DEVNULL)
        try:
            wait_until(port_file.exists, "the HTTP server's port", timeout=15)
            port = int(port_file.read_text())
            return self.daemon_cpu("health", port, self.plan.cpu_seconds)
        finally:
            server.kill()
            server.wait()


def guarded(results: dict, key: str, body) -> None:
    try:
        results[key] = body()
    except (PeerError, subprocess.SubprocessError, OSError, ValueError) as err:
        log(f"  {key}: {err}")
        results[key] = {"error": str(err)}


ROWS = [
    ("watch: file write -> new process", "watch_latency", "ms", DEBOUNCE_MS + 50),
    ("watch: the same among 130 watchers", "watch_many", "ms", DEBOUNCE_MS + 50),
    ("daemon CPU, 100 HTTP checks / 1 s", "health_cpu", "%", 2.0),
    ("daemon CPU, same 100 without checks", "idle_cpu", "%", None),
]


def report(results: dict) -> str:
    header = f"{'scenario':<40}{'median':>12}   target"
    lines = [header, "-" * (len(header) + 16)]
    for label, key, unit, target in ROWS:
        entry = results.get(key, {})
        value = entry.get("median")
        if value is None:
            lines.append(f"{label:<40}{'error' if 'error' in entry else '-':>12}")
            continue
        shown = f"{value:.1f} ms" if unit == "ms" else f"{value:.2f} %"
        verdict = "(reference)" if target is None else \
            f"<= {target:g} {unit}  " + ("PASS" if value <= target else "MISS")
        lines.append(f"{label:<40}{shown:>12}   {verdict}")
    return "\n".join(lines)


NOTES = """\
Notes: watch latency = the restarted process's own `date +%s%N` minus the time just before the
file was written: Kepler's 100 ms trailing debounce, stopping the old process, spawning `sh`
and one `date` exec. "Among 130 watchers": the same for one of 130 services that each watch a
tree of their own (the JSON also has their start time and the daemon's inotify instances and
watches: expected 1 instance, 130 x 21 watches). Health CPU = the daemon's utime+stime over
the window, or the sum of its threads' schedstat if larger (stat counts in 10 ms ticks), in %
of one core; the HTTP server is a separate Python process and not counted. "probes" in the
JSON counts the requests it answered during the window (100 services x 1/s expected)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 watch changes, 10 s CPU window")
    args = parser.parse_args()
    plan = Plan(watch_iterations=10, cpu_seconds=10, baseline_seconds=5) if args.quick else Plan()
    env = os.environ
    work = Path(env["WH_WORK"])
    bench = Bench(work, Path(env["WH_KEPLER_CLI"]), Path(env["WH_KEPLER_STATE"]), plan)
    load_before = loadavg()
    log(f"load average before the run: {load_before}, {os.cpu_count()} CPUs")

    results: dict = {}
    log("== watch latency")
    guarded(results, "watch_latency", bench.watch_latency)
    guarded(results, "watch_many", bench.watch_many)
    log("== health-check cost")
    guarded(results, "health_cpu", bench.health_cost)
    guarded(results, "idle_cpu", lambda: bench.daemon_cpu("idle", None, plan.baseline_seconds))
    if leftovers := marked_pids(str(bench.sleep).encode()):
        log(f"  {len(leftovers)} sleep processes outlived their daemon")

    load_after = loadavg()
    print()
    print(f"load average: {' '.join(load_before)} before, {' '.join(load_after)} after "
          f"({os.cpu_count()} CPUs, shared)")
    print(report(results))
    print()
    print(NOTES)
    for key, entry in results.items():
        if "error" in entry:
            print(f"error: {key}: {entry['error']}")

    out = Path(env["WH_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_before": load_before, "loadavg_after": load_after},
        "plan": dataclasses.asdict(plan),
        "targets": {key: {"value": target, "unit": unit} for _, key, unit, target in ROWS if target},
        "results": results,
    }, indent=1))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(Path(sys.argv[2]))
    else:
        sys.exit(main())
