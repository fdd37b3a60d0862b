"""One long-lived supervisor per `LocalTransport` (a "zygote") that forks a keeper for each command.

A per-step supervisor (supervisor.py main) costs a Python start, ~15 ms a step (issue #3's 30x goal lost to
issue #10). The zygote is that same program started once with `--zygote`: for each command it receives the
step's fds over a unix socket (SCM_RIGHTS) and forks a keeper, which does exactly what the per-step
supervisor does (own session, subreaper, lifeline, grace, sweep). A step costs a fork and the shell.

The keeper's parent is the zygote, so it reports to us itself on a pipe of its own: its pid (its session id,
which the journal records) as it starts, then its returncode as it exits. The zygote ends when our end of
the socket closes: `close()`, garbage collection, or opskit's death (kill -9 included). If it died meanwhile
the next command starts a new one; if that fails too, `start` returns None and the caller falls back to a
per-step supervisor.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

SUPERVISOR = Path(__file__).with_name("supervisor.py")
# The keeper writes its pid right after the fork; a zygote that stays silent this long is broken.
_START_TIMEOUT_S = 10.0
_ZYGOTE_EXIT_WAIT_S = 2.0
_HEADER_SIZE = 4  # supervisor.py's _HEADER: the JSON's length, big-endian


class _NoKeeper(enum.Enum):
    GONE = "the zygote died before the keeper started: safe to retry"
    # The zygote is killed and the step's lifeline closed before a per-step supervisor runs the
    # command: a keeper that wakes late finds its lifeline closed and never starts it (keep()).
    SILENT = "no word from the keeper in time"


class Keeper:
    """Our side of one command's keeper: the subset of `subprocess.Popen` that LocalTransport uses."""

    def __init__(  # noqa: PLR0917 - what Popen carries
        self, pid: int, report: int, early: bytes,
        stdin: IO[bytes] | None, stdout: IO[bytes], stderr: IO[bytes],
    ) -> None:  # fmt: skip
        self.pid = pid
        self.stdin = stdin
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None
        self._report = report
        self._buffer = b""
        if early:  # a quick command may have ended before we read the pid
            self._take(early)

    def poll(self) -> int | None:
        """The command's returncode once the keeper reported it (or died), else None."""
        if self.returncode is None:
            self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the keeper exits; TimeoutExpired after `timeout` seconds, as Popen.wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"keeper {self.pid}", timeout or 0.0)
            self._read(left)
        return self.returncode

    def _read(self, timeout: float | None) -> None:
        ready, _, _ = select.select([self._report], [], [], timeout)
        if not ready:
            return
        self._take(os.read(self._report, 64))

    def _take(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" in self._buffer:
            self._done(int(self._buffer.split(b"\n", 1)[0]))
        elif not data:
            # Gone without a word: only SIGKILL (or worse) does that to a keeper.
            self._done(-signal.SIGKILL)

    def _done(self, returncode: int) -> None:
        self.returncode = returncode
        os.close(self._report)
        self._report = -1


class Zygote:
    """Starts keepers through one supervisor process, started on first use and restarted if it died."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._finalizer: weakref.finalize[..., Zygote] | None = None

    def start(
        self, argv: Sequence[str], env: Mapping[str, str], lifeline: int, *, stdin: bool
    ) -> Keeper | None:
        """Start `argv` under a keeper watching `lifeline`; None when no zygote could take it."""
        spec = json.dumps(
            {"argv": list(argv), "env": dict(env), "cwd": _cwd(), "grace_s": self._grace_s}
        )
        with self._lock:
            for _ in range(2):  # a zygote found dead is replaced once
                if self._proc is None and not self._spawn():
                    return None
                try:
                    keeper = self._request(spec.encode(), lifeline, stdin=stdin)
                except BaseException:
                    # Ctrl-C halfway through a request: the zygote's stream is out of step, replace it.
                    self._stop(kill=True)
                    raise
                if isinstance(keeper, Keeper):
                    return keeper
                self._stop(kill=keeper is _NoKeeper.SILENT)
                if keeper is _NoKeeper.SILENT:
                    # A keeper may still start late: the caller closes this lifeline, which ends it at once.
                    return None
        return None

    def close(self) -> None:
        """End the zygote (running keepers are not affected: each watches its own lifeline)."""
        with self._lock:
            self._stop()

    def _spawn(self) -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR), "--zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Not opskit's stderr: `opskit run ... 2>&1 | tee` must never wait on it.
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C aimed at opskit's group never reaches it
            )
        except OSError:
            ours.close()
            return False
        finally:
            theirs.close()
        self._sock = ours
        # A transport dropped without close() (notify's one-off) must not leave its zygote behind.
        self._finalizer = weakref.finalize(self, _shut, ours, self._proc)
        return True

    def _request(self, spec: bytes, lifeline: int, *, stdin: bool) -> Keeper | _NoKeeper:
        """Send one command: the keeper once it reported its pid, or why there is none."""
        report_r, report_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if stdin else (-1, -1)
        theirs = [lifeline, report_w, out_w, err_w] + ([in_r] if stdin else [])
        ours = [report_r, out_r, err_r] + ([in_w] if stdin else [])
        got: tuple[int, bytes] | _NoKeeper = _NoKeeper.GONE
        try:
            if self._sock is not None:
                socket.send_fds(self._sock, [len(spec).to_bytes(_HEADER_SIZE, "big")], theirs)
                self._sock.sendall(spec)
                got = _read_pid(report_r)
        except OSError:
            got = _NoKeeper.GONE
        finally:
            for fd in theirs[1:]:  # the lifeline's read end is the caller's to close
                os.close(fd)
            if not isinstance(got, tuple):
                for fd in ours:
                    os.close(fd)
        if not isinstance(got, tuple):
            return got
        pid, early = got
        return Keeper(
            pid,
            report_r,
            early,
            os.fdopen(in_w, "wb") if stdin else None,
            os.fdopen(out_r, "rb", buffering=0),
            os.fdopen(err_r, "rb", buffering=0),
        )

    def _stop(self, *, kill: bool = False) -> None:
        if kill and self._proc is not None:  # stuck: it would not read the EOF either
            self._proc.kill()
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._sock = None
        self._proc = None


def _read_pid(report: int) -> tuple[int, bytes] | _NoKeeper:
    """The keeper's pid and what it wrote after; GONE when the pipe closed first, SILENT on timeout.

    The keeper writes its pid before it starts the command, so GONE means the command never started.
    """
    buffer = b""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while b"\n" not in buffer:
        ready, _, _ = select.select([report], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            return _NoKeeper.SILENT
        data = os.read(report, 64)
        if not data:
            return _NoKeeper.GONE
        buffer += data
    line, rest = buffer.split(b"\n", 1)
    return int(line), rest


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def _shut(sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    """Close our end of the socket (the zygote reads EOF and exits) and reap the zygote."""
    with contextlib.suppress(OSError):
        sock.close()
    try:
        proc.wait(timeout=_ZYGOTE_EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
