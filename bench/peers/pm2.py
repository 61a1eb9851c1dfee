"""pm2 as a benchmark peer: a private PM2_HOME, one ecosystem file per set.

pm2 has no dependencies; a chain is only the order of the apps in the ecosystem file. After
each stop the apps are deleted (untimed) so that every start registers them from the file,
the way `pm2 start eco.config.js` is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import Peer, PeerError, ServiceSet, alive, kill_and_wait, read_pid, run, wait_until


def render_ecosystem(services: ServiceSet) -> str:
    apps = []
    for svc in services.services:
        app = {
            "name": svc.name,
            "script": svc.argv[0],
            "args": list(svc.argv[1:]),
            "interpreter": "none",
            "exec_mode": "fork",
            "autorestart": svc.restart_always,
        }
        if svc.restart_always:
            # min_uptime 0 turns off pm2's "too many unstable restarts" guard (16 by default).
            app.update(restart_delay=0, min_uptime=0, max_restarts=1_000_000)
        apps.append(app)
    return "module.exports = " + json.dumps({"apps": apps}, indent=1) + ";\n"


class Pm2(Peer):
    name = "pm2"

    def __init__(self, prefix: Path, work: Path):
        self.pm2 = prefix / "node_modules" / ".bin" / "pm2"
        self.package = prefix / "node_modules" / "pm2" / "package.json"
        self.home = work / "pm2-home"
        self.work = work
        self.env = {**os.environ, "PM2_HOME": str(self.home)}
        self.ecosystem: Path | None = None
        self.names: set[str] = set()

    def version(self) -> str:
        node = run(["node", "--version"]).stdout.strip()
        return f"pm2 {json.loads(self.package.read_text())['version']} (node {node})"

    def _pm2(self, *args, timeout: float = 300, check: bool = True):
        return run([self.pm2, *args], env=self.env, timeout=timeout, check=check)

    def open(self, services: ServiceSet) -> None:
        directory = self.work / "pm2" / services.label
        directory.mkdir(parents=True, exist_ok=True)
        self.ecosystem = directory / "eco.config.js"
        self.ecosystem.write_text(render_ecosystem(services))
        self.names = {s.name for s in services.services}
        self._pm2("ping", timeout=60)  # spawns the God daemon
        wait_until(lambda: alive(self.daemon_pid()), "the pm2 daemon's pid file", timeout=30)

    def start(self) -> None:
        self._pm2("start", self.ecosystem)

    def running(self) -> bool:
        out = self._pm2("jlist", timeout=60).stdout
        try:
            apps = json.loads(out[out.index("["):])
        except ValueError as err:
            raise PeerError(f"`pm2 jlist` printed something that is not JSON ({err})") from None
        states = {a["name"]: a["pm2_env"]["status"] for a in apps}
        return all(states.get(name) == "online" for name in self.names)

    def stop(self) -> None:
        self._pm2("stop", "all")

    def after_stop(self) -> None:
        self._pm2("delete", "all")

    def daemon_pid(self) -> int | None:
        return read_pid(self.home / "pm2.pid")

    def close(self) -> None:
        pid = self.daemon_pid()
        try:
            self._pm2("kill", timeout=60, check=False)
        except PeerError:
            pass
        kill_and_wait(pid)
