#!/usr/bin/env python3
"""Log benchmark driver: capture throughput (Kepler against supervisord and a raw pipe), reading
the stored log back (`logs --tail 100`, the whole log to a pipe) and `logs --follow` latency.

Run it through bench/logs.sh, which builds Kepler, installs supervisor and compiles
bench/logwriter.c, and passes their locations in the environment: LG_WORK (scratch dir),
LG_RESULTS (JSON output path), LG_KEPLER_CLI + LG_KEPLER_STATE, LG_SUPERVISOR_BIN, LG_WRITER.

Throughput is timed from the start command until the writer has exited and every line is in
the stored file: its size is polled (Kepler's records are a fixed 19 bytes longer than the
line) and the lines are counted once at the end. Each run gets a fresh daemon, not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import PeerError, Service, ServiceSet, run, wait_until  # noqa: E402
from peers.kepler import Kepler, render_config as kepler_config  # noqa: E402
from peers.supervisord import Supervisord, render_config as supervisord_config  # noqa: E402

# `<16 hex digits> - ` before each line of the service's own output (kepler-daemon/src/logs/record.rs).
KEPLER_RECORD_OVERHEAD = 19


@dataclasses.dataclass
class Plan:
    reps: int = 5
    lines: int = 1_000_000
    line_bytes: int = 90  # newline included
    tail_runs: int = 20
    cat_runs: int = 10
    follow_lines: int = 100
    tick_ms: int = 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


class KeplerLogs(Kepler):
    """Kepler with a `kepler.logs` block. The daemon reads kepler.yaml at `start`, so the block
    is added to the file the base peer wrote in `open`."""

    def __init__(self, cli: Path, state_dir: Path, work: Path, buffer_size: int = 0):
        super().__init__(cli, state_dir, work)
        self.buffer_size = buffer_size
        self.name = f"kepler (buffer_size {buffer_size})"

    def open(self, services: ServiceSet) -> None:
        super().open(services)
        self.config.write_text(f"kepler:\n  logs: {{buffer_size: {self.buffer_size}}}\n"
                               + kepler_config(services))

    def log_file(self, service: str) -> Path | None:
        return next(self.state_dir.glob(f"configs/*/logs/{service}.stdout.log"), None)

    def expected_bytes(self, plan: Plan) -> int:
        return plan.lines * (plan.line_bytes + KEPLER_RECORD_OVERHEAD)


class SupervisordLogs(Supervisord):
    """supervisord writing each program's stdout to one file that never rotates."""

    def open(self, services: ServiceSet) -> None:
        self.directory = self.work / "supervisord" / services.label
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        # supervisord appends to its log files; each run counts its own lines from zero.
        for old in (self.directory / "logs").glob("*.log"):
            old.unlink()
        conf = supervisord_config(services, self.directory)
        for svc in services.services:
            conf = conf.replace(
                f"[program:{svc.name}]\n",
                f"[program:{svc.name}]\nstdout_logfile={self.directory}/logs/{svc.name}.stdout.log\n"
                "stdout_logfile_maxbytes=0\nstdout_logfile_backups=0\n")
        path = self.directory / "supervisord.conf"
        path.write_text(conf)
        self.names = {s.name for s in services.services}
        run([self.supervisord, "-c", path], timeout=30)
        wait_until(lambda: self._ctl("pid", timeout=30, check=False).returncode == 0,
                   "supervisord to answer on its socket", timeout=30, every=0.1)

    def log_file(self, service: str) -> Path | None:
        path = self.directory / "logs" / f"{service}.stdout.log"
        return path if path.exists() else None

    def expected_bytes(self, plan: Plan) -> int:
        return plan.lines * plan.line_bytes


class Bench:
    def __init__(self, work: Path, writer: Path, plan: Plan):
        self.work = work
        self.writer = writer
        self.plan = plan
        self.done = work / "writer.done"

    def writer_set(self) -> ServiceSet:
        argv = (str(self.writer), "lines", str(self.plan.lines), str(self.plan.line_bytes), str(self.done))
        return ServiceSet("throughput", (Service("writer", argv),))

    def ticker_set(self) -> ServiceSet:
        argv = (str(self.writer), "ticks", "1000000", str(self.plan.tick_ms))
        return ServiceSet("follow", (Service("ticker", argv),))

    def writer_times(self, t0_wall: int) -> dict:
        start, end = (int(x) for x in self.done.read_text().split())
        return {"spawn_ms": (start - t0_wall) / 1e6, "writer_ms": (end - start) / 1e6}

    # --- 1. throughput --------------------------------------------------------------------

    def drain(self, peer) -> dict:
        """One run: start the writer and wait until its last line is stored."""
        self.done.unlink(missing_ok=True)
        expected = peer.expected_bytes(self.plan)
        t0_wall, t0 = time.time_ns(), time.perf_counter_ns()
        peer.launch()
        cmd_ms = (time.perf_counter_ns() - t0) / 1e6
        path, size = None, 0
        deadline = time.monotonic() + 120
        while not (size >= expected and self.done.exists()):
            if time.monotonic() > deadline:
                raise PeerError(f"120 s after start: {size}/{expected} bytes stored, "
                                f"writer {'finished' if self.done.exists() else 'still writing'}")
            time.sleep(0.001)
            path = path or peer.log_file("writer")
            size = path.stat().st_size if path else 0
        total_ms = (time.perf_counter_ns() - t0) / 1e6
        stored = count_lines(path)
        if stored != self.plan.lines or size != expected:
            raise PeerError(f"stored {stored} lines / {size} bytes, expected {self.plan.lines} / {expected}")
        times = self.writer_times(t0_wall)
        return {"ms": total_ms, "cmd_ms": cmd_ms, **times, "from_writer_start_ms": total_ms - times["spawn_ms"]}

    def raw_pipe(self) -> dict:
        out = self.work / "raw.out"
        self.done.unlink(missing_ok=True)
        t0_wall, t0 = time.time_ns(), time.perf_counter_ns()
        with open(out, "wb") as sink:
            writer = subprocess.Popen(
                [self.writer, "lines", str(self.plan.lines), str(self.plan.line_bytes), self.done],
                stdout=subprocess.PIPE)
            cat = subprocess.Popen(["cat"], stdin=writer.stdout, stdout=sink)
            writer.stdout.close()
            writer.wait()
            cat.wait()
        total_ms = (time.perf_counter_ns() - t0) / 1e6
        stored = count_lines(out)
        out.unlink()
        if stored != self.plan.lines:
            raise PeerError(f"raw pipe stored {stored} lines, expected {self.plan.lines}")
        times = self.writer_times(t0_wall)
        return {"ms": total_ms, **times, "from_writer_start_ms": total_ms - times["spawn_ms"]}

    def throughput(self, peer, keep_last_open: bool = False) -> dict:
        samples = []
        for rep in range(1, self.plan.reps + 1):
            peer.open(self.writer_set())
            try:
                samples.append(self.drain(peer))
            finally:
                if not (keep_last_open and rep == self.plan.reps):
                    peer.close()
            log(f"  [{peer.name}] throughput rep {rep}/{self.plan.reps}: {samples[-1]['ms']:.0f} ms "
                f"({samples[-1]['from_writer_start_ms']:.0f} ms from writer start)")
        return summarize(samples)

    # --- 2, 3. reading the stored log -----------------------------------------------------

    def hyperfine(self, argv: list[str], runs: int, name: str, output: str = "null") -> dict:
        export = self.work / f"hyperfine-{name}.json"
        cmd = " ".join(f"'{a}'" for a in argv)
        run(["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(runs),
             "--output", output, "--export-json", export, cmd], timeout=600)
        result = json.loads(export.read_text())["results"][0]
        return {"median": result["median"] * 1000, "unit": "ms",
                "mean": result["mean"] * 1000, "stddev": (result["stddev"] or 0) * 1000,
                "min": result["min"] * 1000, "max": result["max"] * 1000, "runs": len(result["times"])}

    def read_back(self, kepler: KeplerLogs) -> dict:
        base = [str(kepler.cli), "-f", str(kepler.config), "logs"]
        tail = self.hyperfine([*base, "--tail", "100"], self.plan.tail_runs, "tail")
        log(f"  [kepler] logs --tail 100: median {tail['median']:.2f} ms over {tail['runs']} runs")
        whole = self.hyperfine(base, self.plan.cat_runs, "cat", output="pipe")
        printed = subprocess.run(base, env=kepler.env, capture_output=True, timeout=120).stdout.count(b"\n")
        whole["lines_printed"] = printed
        log(f"  [kepler] logs | pipe: median {whole['median']:.0f} ms over {whole['runs']} runs, "
            f"{printed} lines")
        if printed != self.plan.lines:
            whole["error"] = f"`kepler logs` printed {printed} lines, expected {self.plan.lines}"
        return {"tail_100": tail, "cat_all": whole}

    # --- 4. follow latency ----------------------------------------------------------------

    def follow(self, peer: KeplerLogs) -> dict:
        """Receive time minus the ticker's write time, for lines read by `logs --follow`."""
        skip = 3  # the first lines may be joined with the (empty) tail
        peer.open(self.ticker_set())
        follower = None
        try:
            peer.launch()
            wait_until(lambda: peer.log_file("ticker") is not None, "the ticker's first line", timeout=30)
            follower = subprocess.Popen(
                [peer.cli, "-f", peer.config, "logs", "--follow", "--tail", "0", "ticker"],
                env=peer.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            fd = follower.stdout.fileno()
            latencies, pending = [], b""
            deadline = time.monotonic() + 60 + self.plan.follow_lines * self.plan.tick_ms / 1000
            while len(latencies) < self.plan.follow_lines + skip:
                if time.monotonic() > deadline:
                    raise PeerError(f"`logs --follow` gave {len(latencies)} lines in time")
                chunk = os.read(fd, 65536)
                received = time.time_ns()
                if not chunk:
                    raise PeerError(f"`logs --follow` exited ({follower.wait()}) after {len(latencies)} lines")
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    # `ticker | <write time ns>`
                    latencies.append((received - int(line.rsplit(b" ", 1)[-1])) / 1e6)
            latencies = latencies[skip:][: self.plan.follow_lines]
        finally:
            if follower:
                follower.send_signal(signal.SIGINT)
                try:
                    follower.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    follower.kill()
            peer.close()
        log(f"  [{peer.name}] follow: median {statistics.median(latencies):.2f} ms over {len(latencies)} lines")
        return {"median": statistics.median(latencies), "unit": "ms",
                "p90": statistics.quantiles(latencies, n=10)[-1], "max": max(latencies),
                "samples": [round(x, 3) for x in latencies]}


def summarize(samples: list[dict]) -> dict:
    return {"median": statistics.median(s["ms"] for s in samples), "unit": "ms",
            "from_writer_start_median": statistics.median(s["from_writer_start_ms"] for s in samples),
            "samples": samples}


def guarded(results: dict, key: str, body) -> None:
    """Runs one scenario; a failure is recorded under its key and the others still run."""
    try:
        results[key] = body()
    except (PeerError, subprocess.SubprocessError, OSError, ValueError) as err:
        log(f"  {key}: {err}")
        results[key] = {"error": str(err)}


# --- report --------------------------------------------------------------------------------

# (label, result key, unit, Kepler target or None for a reference row)
ROWS = [
    ("throughput, kepler buffer_size 0", "throughput_kepler_buf0", "ms", 300),
    ("throughput, kepler buffer_size 16384", "throughput_kepler_buf16k", "ms", 300),
    ("throughput, supervisord", "throughput_supervisord", "ms", None),
    ("throughput, raw pipe (writer | cat)", "throughput_raw_pipe", "ms", None),
    ("logs --tail 100 (1M-line log)", "tail_100", "ms", 5),
    ("logs > pipe (1M lines)", "cat_all", "ms", 300),
    ("logs --follow latency, buffer 0", "follow_buf0", "ms", 10),
    ("logs --follow latency, buffer 16384", "follow_buf16k", "ms", None),
]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def report(results: dict) -> str:
    header = f"{'scenario':<40}{'median':>10}{'from writer start':>20}   target"
    lines = [header, "-" * (len(header) + 14)]
    for label, key, _unit, target in ROWS:
        entry = results.get(key, {})
        if "error" in entry and "median" not in entry:
            lines.append(f"{label:<40}{'error':>10}")
            continue
        median = entry.get("median")
        writer = entry.get("from_writer_start_median")
        verdict = "(reference)" if target is None else \
            f"<= {target} ms  " + ("-" if median is None else "PASS" if median <= target else "MISS")
        lines.append(f"{label:<40}{fmt(median):>10}{fmt(writer) if writer else '':>20}   {verdict}")
    return "\n".join(lines)


NOTES = """\
Notes: medians. Throughput = 1M lines of 90 bytes from a C writer (64 KiB writes), timed from the
start command (`kepler start -d` / `supervisorctl start`, or spawning the pipe) until the writer
has finished and every line is in the stored file; "from writer start" leaves out the start
command and spawn, which for supervisord includes supervisorctl's Python start-up. Daemons are
started fresh for each run and not timed. Reading back uses hyperfine (3 warm-up runs);
`logs > pipe` goes through a pipe to hyperfine, and its line count is checked separately.
Follow latency = time a line is read from `kepler logs --follow --tail 0` minus the
CLOCK_REALTIME the ticker stamped into it just before write(), one line every 20 ms."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, fewer hyperfine runs and lines followed")
    args = parser.parse_args()
    plan = Plan(reps=3, tail_runs=10, cat_runs=5, follow_lines=50) if args.quick else Plan()
    env = os.environ
    work = Path(env["LG_WORK"])
    cli, state = Path(env["LG_KEPLER_CLI"]), Path(env["LG_KEPLER_STATE"])
    bench = Bench(work, Path(env["LG_WRITER"]), plan)
    load_before = loadavg()
    log(f"load average before the run: {load_before}, {os.cpu_count()} CPUs")

    results: dict = {}
    log("== raw pipe")
    guarded(results, "throughput_raw_pipe", lambda: summarize(
        [bench.raw_pipe() for _ in range(plan.reps)]))
    log(f"  [raw pipe] median {results['throughput_raw_pipe'].get('median', 0):.0f} ms")

    supervisord = SupervisordLogs(Path(env["LG_SUPERVISOR_BIN"]), work)
    log(f"== supervisord: {supervisord.version()}")
    guarded(results, "throughput_supervisord", lambda: bench.throughput(supervisord))

    kepler16k = KeplerLogs(cli, state, work, buffer_size=16384)
    log(f"== kepler: {kepler16k.version()}")
    guarded(results, "throughput_kepler_buf16k", lambda: bench.throughput(kepler16k))
    # The last buffer-0 run's daemon stays up: its 1M-line log is what gets read back.
    kepler0 = KeplerLogs(cli, state, work, buffer_size=0)
    guarded(results, "throughput_kepler_buf0", lambda: bench.throughput(kepler0, keep_last_open=True))
    if "error" not in results["throughput_kepler_buf0"]:
        try:
            results.update(bench.read_back(kepler0))
        except (PeerError, subprocess.SubprocessError, OSError) as err:
            log(f"  read back: {err}")
            results["tail_100"] = results["cat_all"] = {"error": str(err)}
    kepler0.close()
    guarded(results, "follow_buf0", lambda: bench.follow(kepler0))
    guarded(results, "follow_buf16k", lambda: bench.follow(kepler16k))

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

    out = Path(env["LG_RESULTS"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_before": load_before, "loadavg_after": load_after},
        "plan": dataclasses.asdict(plan),
        "versions": {"kepler": kepler0.version(), "supervisord": supervisord.version()},
        "targets": {key: {"value": target, "unit": unit} for _, key, unit, target in ROWS if target},
        "results": results,
    }, indent=1))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
