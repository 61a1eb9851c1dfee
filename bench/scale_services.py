"""Driver of bench/scale_services.sh: start/ps/logs/stop of N sleep services, RSS, ratios."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.base import marked_pids  # noqa: E402

KEPLER = os.environ["SC_KEPLER"]
WORK = Path(os.environ["SC_WORK"])
REPS = int(os.environ["SC_REPS"])
SIZES = [int(n) for n in os.environ["SC_SIZES"].split()]
RESULTS = Path(os.environ["SC_RESULTS"])
# kernel_floor.c built by the shell script when --floor is given: the same start and stop
# with no supervisor, run in the same rounds so both meet the same machine.
FLOOR = os.environ.get("SC_FLOOR") or None
STATE = Path(os.environ["KEPLER_DAEMON_PATH"])
# Services that write a line first (through a shell that then becomes the sleep), so each
# keeps a log file open while it runs, as most real services do.
LOGGING = bool(os.environ.get("SC_LOGGING"))

# A private copy of sleep marks the services' processes in /proc.
SLEEP = WORK / "scale-sleep"
shutil.copy2(shutil.which("sleep"), SLEEP)
MARKER = str(SLEEP).encode() + b"\0"


def kepler(*args: str, timeout: float = 300) -> float:
    """Runs the CLI, returns its wall time in ms; output is discarded."""
    t0 = time.monotonic()
    done = subprocess.run([KEPLER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    ms = (time.monotonic() - t0) * 1000
    if done.returncode != 0:
        raise SystemExit(f"kepler {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return ms


def daemon_pid() -> str:
    return (STATE / "kepler.pid").read_text().strip()


def daemon_cpu_ms() -> float:
    """User + system CPU time the daemon used so far (a loaded machine stretches wall time)."""
    fields = Path(f"/proc/{daemon_pid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def daemon_rss_mb() -> float:
    pid = daemon_pid()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS for the daemon")


def service_cgroups() -> Path | None:
    """The daemon's cgroup subtree, or None in process-group mode."""
    done = subprocess.run([KEPLER, "daemon", "status"], capture_output=True, text=True, timeout=60)
    for line in done.stdout.splitlines():
        if "containment: cgroup v2 at " in line:
            return Path(line.split(" at ", 1)[1].strip())
    return None


def settle(subtree: Path | None) -> None:
    """Waits until the last stop's cgroups are removed (the daemon does that in
    the background, after the stop has answered), so the next measurement does
    not share the machine with that clean-up."""
    if subtree is None:
        return
    def holds_services(config_dir: Path) -> bool:
        try:
            return any(e.is_dir() for e in config_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return False  # removed while we looked

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(holds_services(d) for d in subtree.iterdir()):
            return
        time.sleep(0.05)
    raise SystemExit(f"service cgroups under {subtree} still there 60 s after the stop")


def config(n: int) -> Path:
    path = WORK / f"scale-{n}.yaml"
    lines = ["services:"]
    for i in range(n):
        if LOGGING:
            command = ["sh", "-c", f"echo s{i} up; exec {SLEEP} 1000"]
        else:
            command = [str(SLEEP), "1000"]
        lines += [f"  s{i}:", f"    command: {json.dumps(command)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_sleeps(n: int) -> int:
    """How many services run the marked sleep; with --logging, a service is running
    before its shell has become the sleep, so wait for that (up to 30 s)."""
    deadline = time.monotonic() + (30 if LOGGING else 0)
    while True:
        running = len(marked_pids(MARKER))
        if running == n or time.monotonic() >= deadline:
            return running
        time.sleep(0.05)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_rep(n: int, cfg: str, out: dict, rep: int) -> None:
    """One start / ps / logs / stop of the n-service config, appended to out."""
    cpu0 = daemon_cpu_ms()
    out["start"].append(kepler("-f", cfg, "start", "-d", "--wait", "--timeout", "600s", timeout=900))
    out["start_cpu"].append(daemon_cpu_ms() - cpu0)
    running = wait_for_sleeps(n)
    if running != n:
        raise SystemExit(f"{n} services: {running} processes running after start, not {n}")
    out["rss_mb"].append(daemon_rss_mb())
    out["ps"].append(kepler("-f", cfg, "ps"))
    out["ps_json"].append(kepler("-f", cfg, "ps", "--json"))
    out["logs_tail"].append(kepler("-f", cfg, "logs", "--tail", "10"))
    out["logs_all"].append(kepler("-f", cfg, "logs"))
    cpu0 = daemon_cpu_ms()
    out["stop"].append(kepler("-f", cfg, "stop", timeout=900))
    out["stop_cpu"].append(daemon_cpu_ms() - cpu0)
    left = len(marked_pids(MARKER))
    if left:
        raise SystemExit(f"{n} services: {left} processes left after stop")
    print(f"  {n:>6} rep {rep + 1}: start {out['start'][-1]:.0f} ms, stop {out['stop'][-1]:.0f} ms, "
          f"ps {out['ps'][-1]:.0f} ms, RSS {out['rss_mb'][-1]:.1f} MB", flush=True)


def floor_target(subtree: Path | None) -> tuple[str, Path | None]:
    """Where the floor puts its processes: "group" in process-group mode, else a
    scratch cgroup beside the daemon's subtree, as the daemon's services have
    a cgroup each."""
    if subtree is None:
        return "group", None
    scratch = subtree.parent / f"kepler-floor-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    return str(scratch), scratch


def run_floor(n: int, target: str, out: dict) -> None:
    """The kernel's own start and stop of n sleeps (see kernel_floor.c)."""
    done = subprocess.run([FLOOR, str(n), target, "any", str(SLEEP)], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"kernel_floor {n} failed: {done.stderr[-2000:]}")
    start, stop = (float(x) for x in done.stdout.split())
    out["floor_start"].append(start)
    out["floor_stop"].append(stop)


def run_all() -> dict:
    """Repetitions go round the sizes (100, 1k, 10k, 100, 1k, ...), so a machine
    that speeds up or slows down during the run weighs on every size alike and
    the 10k/1k ratios compare like with like."""
    configs = {n: str(config(n)) for n in SIZES}
    subtree = service_cgroups()
    keys = ("start", "start_cpu", "ps", "ps_json", "logs_tail", "logs_all", "stop", "stop_cpu", "rss_mb")
    keys += ("floor_start", "floor_stop") if FLOOR else ()
    raw = {n: {k: [] for k in keys} for n in SIZES}
    target, scratch = floor_target(subtree) if FLOOR else ("", None)
    try:
        for rep in range(REPS):
            print(f"round {rep + 1} of {REPS} ...", flush=True)
            for n in SIZES:
                run_rep(n, configs[n], raw[n], rep)
                settle(subtree)
                if FLOOR:
                    run_floor(n, target, raw[n])
    finally:
        if scratch is not None:
            scratch.rmdir()
    results = {n: {k: median(v) for k, v in raw[n].items()} | {"raw": raw[n]} for n in SIZES}
    # A daemon keeps the heap of its largest start, so RSS is taken from round 1,
    # where no larger config ran before; the largest figure of any round is kept too.
    for n in SIZES:
        results[n]["rss_mb"] = raw[n]["rss_mb"][0]
        results[n]["rss_max_mb"] = max(raw[n]["rss_mb"])
    return results


def main() -> None:
    results = run_all()
    keys = [("start", "ms"), ("start_cpu", "ms"), ("stop", "ms"), ("stop_cpu", "ms"), ("ps", "ms"),
            ("ps_json", "ms"), ("logs_tail", "ms"), ("logs_all", "ms"), ("rss_mb", "MB")]
    if FLOOR:
        keys += [("floor_start", "ms"), ("floor_stop", "ms")]
    print()
    if LOGGING:
        print("(--logging: each service wrote a line, so each holds a log file open)")
    print(f"{'':>15}" + "".join(f"{n:>12}" for n in SIZES) + ("   10k/1k" if 1000 in results and 10_000 in results else ""))
    for key, unit in keys:
        row = f"{key + ' ' + unit:>15}" + "".join(f"{results[n][key]:>12.1f}" for n in SIZES)
        if 1000 in results and 10_000 in results:
            row += f"{results[10_000][key] / results[1000][key]:>9.2f}x"
        print(row)
    if 10_000 in results:
        r = results[10_000]
        print()
        print("(start_cpu/stop_cpu: the daemon's own CPU time, less stretched by a loaded machine)")
        if FLOOR:
            print("(floor_start/floor_stop: the same with no supervisor, bench/kernel_floor.c)")
        print(f"targets: start 10k {r['start']:.0f} ms (<= 8000), stop 10k {r['stop']:.0f} ms (<= 2000), "
              f"RSS 10k {r['rss_mb']:.1f} MB, largest of any round {r['rss_max_mb']:.1f} MB (<= 120)")
        if 1000 in results:
            for key in ("start", "stop"):
                ratio = r[key] / results[1000][key]
                floor = ""
                if FLOOR:
                    floor = f", kernel floor {r['floor_' + key] / results[1000]['floor_' + key]:.2f}"
                print(f"  {key} 10k/1k = {ratio:.2f} (<= 10.5){floor}")
    workload = {"workload": "logging" if LOGGING else "sleep"}
    RESULTS.write_text(json.dumps(workload | {str(n): v for n, v in results.items()}, indent=2))
    print(f"\nraw results: {RESULTS}")


main()
