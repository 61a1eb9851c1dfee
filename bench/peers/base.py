"""What the lifecycle benchmark asks of every supervisor it compares.

A peer turns a ServiceSet into its own config format, runs its own daemon, and brings the whole
set up or down with its own CLI. The driver (bench/lifecycle.py) times those calls and checks
the processes itself through /proc, so a peer only knows *what* to run, never how long it took.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    # Start only once this service runs (Kepler: `condition: service_started`).
    after: str | None = None
    # Respawn on every exit, without delay.
    restart_always: bool = False


@dataclasses.dataclass(frozen=True)
class ServiceSet:
    label: str  # names the config directory, e.g. "sleep100"
    services: tuple[Service, ...]

    def __len__(self) -> int:
        return len(self.services)


class PeerError(RuntimeError):
    """A peer's command failed or never answered; the message says which and why."""


def run(argv, *, env=None, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    """Runs a peer's CLI, turning failures into a PeerError that names the command."""
    argv = [str(a) for a in argv]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise PeerError(f"`{shlex.join(argv)}` gave no answer within {timeout:.0f}s") from None
    except OSError as err:
        raise PeerError(f"`{shlex.join(argv)}` could not run: {err}") from None
    if check and done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-600:]
        raise PeerError(f"`{shlex.join(argv)}` exited {done.returncode}: {said}")
    return done


def wait_until(condition, what: str, timeout: float = 30, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PeerError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def marked_pids(marker: bytes) -> list[int]:
    """Live processes, other than this one, whose command line contains `marker` (zombies have
    none, so never match)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if marker in f.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_and_wait(pid: int | None, timeout: float = 5) -> None:
    """Last resort for a daemon that would not stop when asked: TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not alive(pid), f"pid {pid} to exit", timeout=timeout)
        except PeerError:
            pass


class Peer:
    """One supervisor. Calls come in this order: open, (start, stop, after_stop)*, close."""

    name = "?"

    def version(self) -> str:
        raise NotImplementedError

    def open(self, services: ServiceSet) -> None:
        """Writes the config for `services` and starts a fresh daemon for it (not timed)."""
        raise NotImplementedError

    def start(self) -> None:
        """The command that brings the whole set up: this is what gets timed."""
        raise NotImplementedError

    def launch(self) -> None:
        """Starts the set without waiting for readiness (used for the crash-loop service)."""
        self.start()

    def running(self) -> bool:
        """True when the peer itself reports every service of the set as running."""
        raise NotImplementedError

    def stop(self) -> None:
        """The command that takes the whole set down: timed."""
        raise NotImplementedError

    def after_stop(self) -> None:
        """Untimed housekeeping so the next start begins from the same state."""

    def daemon_pid(self) -> int | None:
        raise NotImplementedError

    def close(self) -> None:
        """Stops the daemon and everything under it. Never raises."""
        raise NotImplementedError
