"""Commands on this machine: `bash -c` under a supervisor that ends the step's whole process tree with opskit.

The supervisor (supervisor.py) holds the read end of a pipe whose only write end is ours: when opskit dies,
by kill -9 included, or closes it for a timeout or Ctrl-C, every process the step started is stopped, however
it used exec, nohup, setsid or its own process group (issue #10).

Each command's supervisor is a keeper forked by the transport's zygote (zygote.py), one Python start per
transport rather than per step (issue #3's overhead goal); a per-step supervisor process is the fallback
when no zygote can be started, or with OPSKIT_ZYGOTE=0.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Protocol

from opskit.transport.base import CommandResult, OutputSink, StartSink
from opskit.transport.streams import TAIL_BYTES, StreamTail, command_result, open_tails
from opskit.transport.zygote import SUPERVISOR, Zygote

# After the shell exits, a background child (`daemon &`) may keep our pipes open forever; stop
# reading once they have been quiet this long instead of waiting for an EOF that never comes.
_DRAIN_QUIET_S = 0.5
# SIGTERM first so the step can clean up; SIGKILL if the group is still there after this.
_KILL_GRACE_S = 2.0
# The supervisor needs its grace period plus a sweep for late forks before we stop waiting for it.
_SUPERVISOR_WAIT_S = _KILL_GRACE_S + 6.0


def _shell() -> list[str]:
    bash = shutil.which("bash")
    return [bash, "-c"] if bash else ["/bin/sh", "-c"]


class _Step(Protocol):
    """What run() needs of a step's supervisor: a `subprocess.Popen`, or a zygote's `Keeper`."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class _Lifeline:
    """Our end of the supervisor's lifeline pipe; closing it (once) tells the supervisor to end the step."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _stop_step(proc: _Step, lifeline: _Lifeline) -> None:
    """Close the lifeline (the supervisor ends the tree), wait for it; kill its session as a last resort."""
    lifeline.close()
    try:
        proc.wait(timeout=_SUPERVISOR_WAIT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _feed_stdin(pipe: IO[bytes], data: bytes) -> None:
    # A command that exits without reading its stdin is not an error.
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


class LocalTransport:
    """Runs commands on this machine (the runbook steps without `on:`)."""

    def __init__(self, *, cap_bytes: int | None = None) -> None:
        self._cap = cap_bytes
        self._zygote = (
            Zygote(_KILL_GRACE_S) if os.environ.get("OPSKIT_ZYGOTE", "1") != "0" else None
        )

    @property
    def label(self) -> str:
        return "local"

    def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
        on_output: OutputSink | None = None,
        on_start: StartSink | None = None,
    ) -> CommandResult:
        """Run `command` through bash; the timeout, Ctrl-C and opskit's death stop its whole tree."""
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        proc, lifeline = self._start(
            command, {**os.environ, **(env or {})}, stdin=stdin is not None
        )
        tails = open_tails(on_output, TAIL_BYTES if self._cap is None else self._cap)
        timed_out = False
        try:
            if on_start is not None:
                on_start(proc.pid)
            if stdin is not None and proc.stdin is not None:
                threading.Thread(
                    target=_feed_stdin, args=(proc.stdin, stdin.encode()), daemon=True
                ).start()
            timed_out = self._pump(proc, tails, deadline)
            if timed_out:
                _stop_step(proc, lifeline)
            rc = proc.wait()
        except BaseException:
            # Ctrl-C (or any error here) must not leave the step running behind the operator's back.
            _stop_step(proc, lifeline)
            raise
        finally:
            lifeline.close()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for tail in tails.values():
            tail.close()
        return command_result(command, rc, tails, started=started, timed_out=timed_out)

    def _start(self, command: str, env: dict[str, str], *, stdin: bool) -> tuple[_Step, _Lifeline]:
        """The step's supervisor, started, and our end of its lifeline."""
        argv = [*_shell(), command]
        if self._zygote is not None:
            lifeline_r, lifeline_w = os.pipe()
            lifeline = _Lifeline(lifeline_w)
            try:
                keeper = self._zygote.start(argv, env, lifeline_r, stdin=stdin)
            except BaseException:
                lifeline.close()  # Ctrl-C while it started: a keeper that did start ends at once
                raise
            finally:
                os.close(lifeline_r)
            if keeper is not None:
                return keeper, lifeline
            lifeline.close()  # a keeper that starts late anyway finds it closed and ends at once
        return _supervised(argv, env, stdin=stdin)

    @staticmethod
    def _pump(proc: _Step, tails: dict[str, StreamTail], deadline: float | None) -> bool:
        """Stream both pipes until they close (or go quiet after exit); True when the deadline hit."""
        sel = selectors.DefaultSelector()
        for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            if pipe is not None:
                sel.register(pipe, selectors.EVENT_READ, tails[name])
        exited_at: float | None = None
        try:
            while sel.get_map():
                now = time.monotonic()
                if deadline is not None and now >= deadline and proc.poll() is None:
                    return True
                wait_s = 0.2 if deadline is None else max(0.02, min(0.2, deadline - now))
                events = sel.select(wait_s)
                for key, _ in events:
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.feed(data)
                    else:
                        sel.unregister(key.fileobj)
                if proc.poll() is not None:
                    if events or exited_at is None:
                        exited_at = time.monotonic()
                    elif time.monotonic() - exited_at > _DRAIN_QUIET_S:
                        break
            return False
        finally:
            sel.close()

    def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        """Copy `local` to the path `remote` on this machine with `mode` (set before any byte lands)."""
        target = Path(remote).expanduser()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            with open(local, "rb") as src, os.fdopen(fd, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst)
        finally:
            os.close(fd)

    def check_reachable(self) -> None:
        """This machine is always reachable."""

    def close(self) -> None:
        """End the zygote; running steps are not affected."""
        if self._zygote is not None:
            self._zygote.close()


def _supervised(argv: list[str], env: dict[str, str], *, stdin: bool) -> tuple[_Step, _Lifeline]:
    """A supervisor process of its own for one step (the fallback: a Python start per step)."""
    lifeline_r, lifeline_w = os.pipe()
    lifeline = _Lifeline(lifeline_w)
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                str(SUPERVISOR),
                str(lifeline_r),
                str(_KILL_GRACE_S),
                *argv,
            ],
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(lifeline_r,),
            start_new_session=True,
        )
    except BaseException:
        lifeline.close()
        raise
    finally:
        os.close(lifeline_r)
    return proc, lifeline
