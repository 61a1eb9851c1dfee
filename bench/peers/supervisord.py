"""supervisord as a benchmark peer: one supervisord per set, programs started with supervisorctl.

supervisord has no dependencies; a chain becomes `priority` ordering, which only orders the
spawns and does not wait for the previous program to run. Programs use startsecs=0, so
`supervisorctl start` returns as soon as each process is spawned and marked RUNNING.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .base import Peer, ServiceSet, alive, kill_and_wait, read_pid, run, wait_until


def render_config(services: ServiceSet, directory: Path) -> str:
    conf = f"""\
[unix_http_server]
file={directory}/supervisor.sock

[supervisord]
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
childlogdir={directory}/logs
loglevel=warn
; supervisord closes fds up to minfds in every child it forks, so a needlessly large value
; slows spawning; ~5 fds per program (pipes and log files) is what it really holds.
minfds={max(1024, 6 * len(services) + 256)}
minprocs=4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{directory}/supervisor.sock
"""
    chained = any(s.after for s in services.services)
    for priority, svc in enumerate(services.services, start=1):
        # supervisord expands %(name)s in values, so a literal % must be doubled.
        command = shlex.join(svc.argv).replace("%", "%%")
        conf += f"\n[program:{svc.name}]\ncommand={command}\nautostart=false\nstartsecs=0\n"
        if svc.restart_always:
            conf += "autorestart=true\nstartretries=1000000\n"
        else:
            conf += "autorestart=false\n"
        if chained:
            conf += f"priority={priority}\n"
    return conf


class Supervisord(Peer):
    name = "supervisord"

    def __init__(self, bin_dir: Path, work: Path):
        self.supervisord = bin_dir / "supervisord"
        self.ctl = bin_dir / "supervisorctl"
        self.work = work
        self.directory: Path | None = None
        self.names: set[str] = set()

    def version(self) -> str:
        return run([self.supervisord, "--version"]).stdout.strip()

    def _ctl(self, *args, timeout: float = 300, check: bool = True):
        return run([self.ctl, "-c", self.directory / "supervisord.conf", *args], timeout=timeout, check=check)

    def open(self, services: ServiceSet) -> None:
        self.directory = self.work / "supervisord" / services.label
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.directory / "supervisord.conf"
        conf.write_text(render_config(services, self.directory))
        self.names = {s.name for s in services.services}
        run([self.supervisord, "-c", conf], timeout=30)
        wait_until(lambda: self._ctl("pid", timeout=30, check=False).returncode == 0,
                   "supervisord to answer on its socket", timeout=30, every=0.1)

    def start(self) -> None:
        self._ctl("start", "all")

    def running(self) -> bool:
        out = self._ctl("status", timeout=60, check=False).stdout
        states = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
        return all(states.get(name) == "RUNNING" for name in self.names)

    def stop(self) -> None:
        self._ctl("stop", "all")

    def daemon_pid(self) -> int | None:
        return read_pid(self.directory / "supervisord.pid") if self.directory else None

    def close(self) -> None:
        if self.directory is None:
            return
        pid = self.daemon_pid()
        try:
            self._ctl("shutdown", timeout=60, check=False)
            wait_until(lambda: not alive(pid), "supervisord to exit", timeout=30)
        except Exception:
            pass
        kill_and_wait(pid)
        self.directory = None
