"""The run lock: one process at a time drives a run, and a refused second one learns who holds it.

flock(2) on runs/<RUN_ID>/lock: the kernel drops it when the holder dies (even by kill -9), so a crashed
run never needs a manual unlock; the file's content names the last holder (host, pid, operator, since).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from opskit.errors import Blocked
from opskit.runbook.journal import iso, utc_now

LOCK = "lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run's lock."""

    host: str
    pid: int
    operator: str
    since: str

    def __str__(self) -> str:
        return f"{self.operator} on {self.host} (pid {self.pid}, since {self.since})"


class RunLock:
    """Held for the life of a run/resume/rollback process; `release()` or process exit frees it."""

    def __init__(self, run_dir: Path, operator: str) -> None:
        self.path = run_dir / LOCK
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(run_dir)
            os.close(fd)
            who = str(holder) if holder else "another process"
            raise Blocked(
                f"run {run_dir.name} is being driven by {who}; wait for it, or ask them to stop it"
            ) from None
        os.fchmod(fd, 0o600)
        self.holder = Holder(socket.gethostname(), os.getpid(), operator, iso(utc_now()))
        # The holder's name is a courtesy to whoever is refused; a full disk must not stop the run here
        # (the journal, written next, is what refuses to go on).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.holder.__dict__).encode())
            os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def read_holder(run_dir: Path) -> Holder | None:
    """The holder written in the lock file (maybe stale: check `is_locked`)."""
    try:
        data = json.loads((run_dir / LOCK).read_text())
        return Holder(
            str(data["host"]), int(data["pid"]), str(data["operator"]), str(data["since"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_locked(run_dir: Path) -> bool:
    """True while some live process holds the run's lock."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class RunbookLock:
    """One live run per runbook file in a state directory: a second `run` (or a `resume` of another run
    of it) is refused, naming the live run. flock again, so a holder that died frees it by itself."""

    def __init__(self, state_dir: Path, runbook: Path, operator: str) -> None:
        key = hashlib.sha256(str(runbook.resolve()).encode()).hexdigest()[:16]
        locks = state_dir / "locks"
        self.path = locks / f"runbook-{key}.lock"
        try:
            locks.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Blocked(
                f"cannot open the runbook lock {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live = _read_json(self.path)
            os.close(fd)
            who = (
                f"run {live.get('run_id')} by {live.get('operator')} on {live.get('host')} "
                f"(pid {live.get('pid')}, since {live.get('since')})"
                if live
                else "another run"
            )
            raise Blocked(
                f"{runbook} is already being run: {who}; wait for it, or pass --allow-concurrent "
                "if two runs at once are really meant"
            ) from None
        self._fd = fd
        self._who = {"host": socket.gethostname(), "pid": os.getpid(), "operator": operator,
                     "since": iso(utc_now())}  # fmt: skip

    def name_run(self, run_id: str) -> None:
        """Record which run holds the runbook, for whoever is refused next."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps({"run_id": run_id, **self._who}).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
