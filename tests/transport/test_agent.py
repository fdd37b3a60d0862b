"""The long-lived remote shell (agent) against a private OpenSSH server: one session, many commands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opskit.errors import TransportDropped
from opskit.transport.agent import AgentTransport
from opskit.transport.ssh import SshTransport
from tests.servers.sshd import Sshd, start_sshd

pytestmark = pytest.mark.sshd


def test_exit_code_stdout_stderr_and_env_per_command(agent: AgentTransport) -> None:
    """Each command gets its own exit code, separate streams (a last line without newline kept) and env."""
    lines: list[tuple[str, str]] = []

    first = agent.run(
        "echo out; echo err >&2; printf tail; exit 3", on_output=lambda s, ln: lines.append((s, ln))
    )
    second = agent.run('echo "$WHO"; cd /; pwd', env={"WHO": "it's me"})
    third = agent.run("pwd; echo ${WHO:-unset}")

    assert (first.rc, first.stdout, first.stderr) == (3, "out\ntail", "err\n")
    assert sorted(lines) == [("stderr", "err"), ("stdout", "out"), ("stdout", "tail")]
    assert (second.rc, second.stdout) == (0, "it's me\n/\n")
    assert third.stdout.splitlines()[1] == "unset"  # env and cwd never leak into the next command
    assert third.stdout.splitlines()[0] != "/"


def test_many_commands_cost_one_login(sshd: Sshd) -> None:
    """A hundred commands run through one SSH login and one remote shell."""
    before = sshd.logins()
    t = AgentTransport(SshTransport(sshd.spec()))
    try:
        results = [t.run(f"echo {i}") for i in range(100)]
    finally:
        t.close()

    assert [r.stdout for r in results] == [f"{i}\n" for i in range(100)]
    assert sshd.logins() - before == 1
    assert t.agents_started == 1


def test_timeout_kills_the_command_and_its_children_then_goes_on(
    agent: AgentTransport, tmp_path: Path
) -> None:
    """A timed-out command and the child it started are killed; the next command runs normally."""
    marker = tmp_path / "survived"

    started = time.monotonic()
    result = agent.run(f"(sleep 2; touch {marker}) & sleep 30", timeout_s=0.5)

    assert result.timed_out
    assert time.monotonic() - started < 5
    assert agent.run("echo next").stdout == "next\n"
    time.sleep(2.5)
    assert not marker.exists()


def test_dropped_connection_mid_command_is_in_doubt(tmp_path: Path) -> None:
    """A link that dies while a command runs through the agent is in doubt; the next command reconnects."""
    with start_sshd(tmp_path / "sshd") as server:
        t = AgentTransport(SshTransport(server.spec()))

        def cut(stream: str, line: str) -> None:
            if line == "started":
                server.kill_connections()

        with pytest.raises(TransportDropped, match="in doubt"):
            t.run("echo started; sleep 10", timeout_s=20, on_output=cut)

        assert t.run("echo again").stdout == "again\n"
        t.close()


def test_a_command_ends_when_opskit_goes_away(tmp_path: Path, sshd: Sshd) -> None:
    """The link closing under a running command (opskit killed) ends that command on the host."""
    marker = tmp_path / "ran-on"
    t = AgentTransport(SshTransport(sshd.spec()))

    def cut(stream: str, line: str) -> None:
        if line == "started":
            client = t._ssh._client  # the test plays a kill -9 of opskit
            assert client is not None
            client.close()

    with pytest.raises(TransportDropped):
        t.run(f"echo started; sleep 1.5; touch {marker}", timeout_s=20, on_output=cut)
    time.sleep(2.5)

    assert not marker.exists()
