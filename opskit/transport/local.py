"""Commands on this machine: `bash -c` in its own process group, output streamed line by line."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from opskit.transport.base import CommandResult, OutputSink
from opskit.transport.streams import TAIL_BYTES, StreamTail, command_result, open_tails

# After the shell exits, a background child (`daemon &`) may keep our pipes open forever; stop
# reading once they have been quiet this long instead of waiting for an EOF that never comes.
_DRAIN_QUIET_S = 0.5
# SIGTERM first so the step can clean up; SIGKILL if the group is still there after this.
_KILL_GRACE_S = 2.0


def _shell() -> list[str]:
    bash = shutil.which("bash")
    return [bash, "-c"] if bash else ["/bin/sh", "-c"]


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = _KILL_GRACE_S) -> None:
    """Stop the command and everything it started (it leads its own process group)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children that ignored SIGTERM may still hold the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


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
    ) -> CommandResult:
        """Run `command` through bash; the timeout and Ctrl-C stop its whole process group."""
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        proc = subprocess.Popen(
            [*_shell(), command],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        tails = open_tails(on_output, TAIL_BYTES if self._cap is None else self._cap)
        timed_out = False
        try:
            if stdin is not None and proc.stdin is not None:
                threading.Thread(
                    target=_feed_stdin, args=(proc.stdin, stdin.encode()), daemon=True
                ).start()
            timed_out = self._pump(proc, tails, deadline)
            if timed_out:
                _kill_group(proc)
            rc = proc.wait()
        except BaseException:
            # Ctrl-C (or any error here) must not leave the step running behind the operator's back.
            _kill_group(proc, grace_s=0.5)
            raise
        finally:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for tail in tails.values():
            tail.close()
        return command_result(command, rc, tails, started=started, timed_out=timed_out)

    @staticmethod
    def _pump(
        proc: subprocess.Popen[bytes], tails: dict[str, StreamTail], deadline: float | None
    ) -> bool:
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
        """Nothing to release locally."""
