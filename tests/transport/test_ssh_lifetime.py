"""A remote step never outlives the opskit that started it: kill -9 of opskit ends it on the host too."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from opskit.transport.ssh import SshTransport
from tests.conftest import REPO
from tests.servers.sleepers import alive, gone_within, kill_all, sleep_marker
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


ESCAPES = {
    "plain": "sleep {m}",
    "exec": "exec sleep {m}",
    "nohup": "nohup sleep {m} >/dev/null 2>&1 & echo started; wait",
    "setsid": "setsid sleep {m} & wait",
}


@pytest.mark.parametrize("how", sorted(ESCAPES))
def test_kill_9_of_opskit_ends_the_remote_command(sshd: Sshd, how: str) -> None:
    """kill -9 of the process driving an SSH step ends the command on the host within seconds."""
    marker = sleep_marker(800000)
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
        while not alive(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(marker)

        child.kill()
        child.wait(timeout=10)

        assert gone_within(marker, 6.0), f"still running on the host: {alive(marker)}"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        kill_all(marker)


def test_remote_timeout_stops_a_command_that_used_exec(sshd: Sshd) -> None:
    """A remote step that exec'd into another program (and one in its own session) ends at the timeout."""
    marker = sleep_marker(800000)
    transport = SshTransport(sshd.spec())
    started = time.monotonic()
    try:
        result = transport.run(f"setsid sleep {marker} & exec sleep {marker}", timeout_s=0.5)

        assert result.timed_out
        assert time.monotonic() - started < 6
        assert gone_within(marker, 4.0)
        assert transport.run("echo usable").stdout == "usable\n"
    finally:
        transport.close()
        kill_all(marker)
