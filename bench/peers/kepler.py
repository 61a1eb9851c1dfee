"""Kepler as a benchmark peer: a scratch daemon (KEPLER_DAEMON_PATH) and one kepler.yaml per set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .base import Peer, PeerError, ServiceSet, alive, kill_and_wait, read_pid, run, wait_until


def render_config(services: ServiceSet) -> str:
    # Scalars are JSON-quoted, which YAML reads as plain strings.
    lines = ["services:"]
    for svc in services.services:
        lines.append(f"  {svc.name}:")
        lines.append(f"    command: {json.dumps(list(svc.argv))}")
        if svc.after:
            lines.append(f"    depends_on: {{{svc.after}: {{condition: service_started}}}}")
        if svc.restart_always:
            lines.append("    restart: {policy: always, delay: 0s}")
    return "\n".join(lines) + "\n"


class Kepler(Peer):
    name = "kepler"

    def __init__(self, cli: Path, state_dir: Path, work: Path):
        self.cli = cli
        self.state_dir = state_dir
        self.work = work
        self.env = {**os.environ, "KEPLER_DAEMON_PATH": str(state_dir), "KEPLER_LOG": "warn"}
        self.config: Path | None = None
        self.count = 0

    def version(self) -> str:
        # The repo this file is in: the binary may live in any CARGO_TARGET_DIR.
        repo = Path(__file__).resolve().parents[2]
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return f"git {rev.stdout.strip() or '?'}"

    def _kepler(self, *args, timeout: float = 180, check: bool = True):
        return run([self.cli, *args], env=self.env, timeout=timeout, check=check)

    def open(self, services: ServiceSet) -> None:
        directory = self.work / "kepler" / services.label
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "kepler.yaml"
        self.config.write_text(render_config(services))
        self.count = len(services)
        self._kepler("daemon", "start", "-d", timeout=30)
        wait_until(lambda: alive(self.daemon_pid()), "the kepler daemon's pid file", timeout=15)

    def start(self) -> None:
        self._kepler("-f", self.config, "start", "-d", "--wait", "--timeout", "120s")

    def launch(self) -> None:
        self._kepler("-f", self.config, "start", "-d")

    def running(self) -> bool:
        out = self._kepler("-f", self.config, "ps", "--json", timeout=30).stdout
        try:
            rows = json.loads(out)
        except json.JSONDecodeError as err:
            raise PeerError(f"`kepler ps --json` printed something that is not JSON ({err})") from None
        return len(rows) == self.count and all(r.get("status") == "running" for r in rows)

    def stop(self) -> None:
        self._kepler("-f", self.config, "stop")

    def daemon_pid(self) -> int | None:
        return read_pid(self.state_dir / "kepler.pid")

    def close(self) -> None:
        pid = self.daemon_pid()
        try:
            self._kepler("daemon", "stop", timeout=60)
        except PeerError:
            pass
        kill_and_wait(pid)
        # The daemon restores what was wanted from its state dir; each scenario starts blank.
        shutil.rmtree(self.state_dir, ignore_errors=True)
