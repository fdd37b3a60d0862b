"""A remote step never outlives the opskit that started it: kill -9 of opskit ends it on the host too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from opskit.transport.ssh import SshTransport
from tests.conftest import REPO
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.sshd

CHILD = """
import sys
from opskit.transport.base import HostSpec
from opskit.transport.ssh import SshTransport

def show(stream, line):
    print(line, flush=True)

SshTransport({spec!r}).run(sys.argv[1], on_output=show, timeout_s=120)
"""


def _marker() -> str:
    return f"{uuid.uuid4().int % 100000 + 800000}.25"


def _alive(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if f"sleep {marker}" in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def _gone_within(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(marker)


def _cleanup(marker: str) -> None:
    for pid in _alive(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


ESCAPES = {
    "plain": "sleep {m}",
    "exec": "exec sleep {m}",
    "nohup": "nohup sleep {m} >/dev/null 2>&1 & echo started; wait",
    "setsid": "setsid sleep {m} & wait",
}


@pytest.mark.parametrize("how", sorted(ESCAPES))
def test_kill_9_of_opskit_ends_the_remote_command(sshd: Sshd, how: str) -> None:
    """kill -9 of the process driving an SSH step ends the command on the host within seconds."""
    marker = _marker()
    command = "echo started; " + ESCAPES[how].format(m=marker)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(spec=sshd.spec()), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started", child.stderr
        deadline = time.monotonic() + 10
        while not _alive(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(marker)

        child.kill()
        child.wait(timeout=10)

        assert _gone_within(marker, 6.0), f"still running on the host: {_alive(marker)}"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        _cleanup(marker)


def test_remote_timeout_stops_a_command_that_used_exec(sshd: Sshd) -> None:
    """A remote step that exec'd into another program (and one in its own session) ends at the timeout."""
    marker = _marker()
    transport = SshTransport(sshd.spec())
    started = time.monotonic()
    try:
        result = transport.run(f"setsid sleep {marker} & exec sleep {marker}", timeout_s=0.5)

        assert result.timed_out
        assert time.monotonic() - started < 6
        assert _gone_within(marker, 4.0)
        assert transport.run("echo usable").stdout == "usable\n"
    finally:
        transport.close()
        _cleanup(marker)
