"""Driven by bench/upgrade.sh: see there. Prints a table and writes raw numbers as JSON."""
import json
import os
import statistics
import subprocess
import threading
import time

KEPLER = os.environ["UP_KEPLER"]
STATE = os.environ["UP_STATE"]
WORK = os.environ["UP_WORK"]
SERVICES = int(os.environ["UP_SERVICES"])
UPGRADES = int(os.environ["UP_UPGRADES"])
RESULTS = os.environ["UP_RESULTS"]
PS_TARGET_MS = 100.0
PAD = "x" * 40


def kepler(*args, check=True):
    return subprocess.run([KEPLER, "-f", CONFIG, *args], capture_output=True, text=True,
                          check=check, cwd=WORK)


def write_config():
    lines = ["services:"]
    for i in range(1, SERVICES + 1):
        name = f"w{i}"
        lines += [
            f"  {name}:",
            # A line every 5 ms per service; the work dir is on the command line so the
            # bench's cleanup finds the writers.
            f"    command: [perl, -e, '$|=1; while (1) {{ print \"{name} line \", ++$i, "
            f"\" {PAD}\\n\"; select(undef,undef,undef,0.005) }}', '{WORK}/']",
            "    logs:",
            "      retention:",
            "        on_stop: retain",
        ]
    path = os.path.join(WORK, "kepler.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


CONFIG = write_config()


def ps():
    return {row["name"]: row for row in json.loads(kepler("ps", "--json").stdout)}


def daemon_pid():
    with open(os.path.join(STATE, "kepler.pid")) as f:
        return int(f.read().strip())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


FAILURES = []


def ps_during(stop, samples):
    """Runs `kepler ps` back to back; records each one's latency (ms) and success."""
    while not stop.is_set():
        start = time.monotonic()
        run = kepler("ps", check=False)
        samples.append(((time.monotonic() - start) * 1000, run.returncode == 0))
        if run.returncode != 0:
            FAILURES.append(f"exit {run.returncode}: {run.stderr.strip()}")


def stored_lines(service):
    configs = os.path.join(STATE, "configs")
    (config,) = [d for d in os.listdir(configs) if not d.startswith(".")]
    with open(os.path.join(configs, config, "logs", f"{service}.stdout.log"), "rb") as f:
        for raw in f:
            parts = raw.rstrip(b"\n").split(b" ", 2)
            if len(parts) == 3 and parts[1] == b"-":
                yield parts[2].decode()


def check_log(service):
    """(lines, problems): every line whole and numbered 1, 2, 3, ... without gap or repeat."""
    expected = 1
    problems = 0
    for line in stored_lines(service):
        if line != f"{service} line {expected} {PAD}":
            problems += 1
            try:
                expected = int(line.split()[2])
            except (IndexError, ValueError):
                pass
        expected += 1
    return expected - 1, problems


def main():
    kepler("start", "-d", "--wait")
    time.sleep(1)
    before = ps()
    pid = daemon_pid()
    rss = [rss_kib(pid)]
    worst_ps, failed_ps, upgrade_ms = [], 0, []
    for n in range(UPGRADES):
        samples = []
        stop = threading.Event()
        prober = threading.Thread(target=ps_during, args=(stop, samples))
        prober.start()
        time.sleep(0.2)  # a few ordinary answers first
        start = time.monotonic()
        run = subprocess.run([KEPLER, "daemon", "upgrade"], capture_output=True, text=True)
        upgrade_ms.append((time.monotonic() - start) * 1000)
        time.sleep(0.2)
        stop.set()
        prober.join()
        if run.returncode != 0:
            raise SystemExit(f"upgrade {n + 1} failed: {run.stdout}{run.stderr}")
        worst_ps.append(max(ms for ms, _ in samples))
        failed_ps += sum(1 for _, ok in samples if not ok)
        rss.append(rss_kib(pid))
    after = ps()
    restarted = [s for s in before if after[s]["restarts"] != before[s]["restarts"]]
    new_pid = [s for s in before if after[s]["pid"] != before[s]["pid"]]
    kepler("stop")
    lines, problems = 0, 0
    for i in range(1, SERVICES + 1):
        count, bad = check_log(f"w{i}")
        lines += count
        problems += bad
    result = {
        "services": SERVICES,
        "upgrades": UPGRADES,
        "daemon_pid_kept": daemon_pid() == pid,
        "ps_worst_ms_per_upgrade": worst_ps,
        "ps_failed": failed_ps,
        "upgrade_command_ms": upgrade_ms,
        "lines_checked": lines,
        "lines_lost_or_repeated_or_torn": problems,
        "services_restarted": restarted,
        "services_with_new_pid": new_pid,
        "rss_kib": rss,
        "ps_failures": FAILURES,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(result, f, indent=1)
    median = statistics.median(worst_ps)
    print(f"{SERVICES} services, {UPGRADES} upgrades (noisy machine: compare with care)")
    print(f"  ps wait during an upgrade: median {median:.1f} ms, max {max(worst_ps):.1f} ms"
          f"  (target <= {PS_TARGET_MS:.0f} ms) {'ok' if median <= PS_TARGET_MS else 'OVER'}")
    print(f"  ps requests that failed:   {failed_ps}")
    for failure in sorted(set(FAILURES)):
        print(f"    {failure}")
    print(f"  kepler daemon upgrade:     median {statistics.median(upgrade_ms):.1f} ms")
    print(f"  lines checked:             {lines}, lost/repeated/torn: {problems}  (target 0)")
    print(f"  restarted: {len(restarted)}, new pids: {len(new_pid)}  (target 0)")
    print(f"  daemon pid kept:           {result['daemon_pid_kept']}")
    print(f"  daemon RSS:                {rss[1]} KiB after the first upgrade, "
          f"{rss[-1]} KiB after the last ({rss[-1] - rss[1]:+d} KiB)")
    print(f"  raw: {RESULTS}")


main()
