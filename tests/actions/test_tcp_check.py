"""`uses: tcp.check`: a port probe, validated at load time, run here or from a runbook host."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit import actions
from opskit.actions import ActionKind, ParamError, Params
from opskit.actions.tcp_check import TcpCheck
from opskit.transport.ssh import SshTransport
from tests.actions.probe_context import ProbeContext
from tests.servers.common import free_port
from tests.servers.sshd import Sshd


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _action(**raw: object) -> actions.Action:
    return actions.load("tcp.check").from_params(Params(raw))


def test_tcp_check_is_a_registered_probe() -> None:
    """tcp.check is found by name and runs in a dry-run because it is a probe."""
    assert actions.load("tcp.check").kind is ActionKind.PROBE


def test_open_port_passes(listening_port: int, tmp_path: Path) -> None:
    """A port that accepts makes the step succeed with the connect time in its values."""
    result = _action(host="127.0.0.1", port=listening_port).run(ProbeContext(tmp_path))

    assert result.ok
    assert result.summary.startswith(f"127.0.0.1:{listening_port} accepts connections")
    assert result.values["accepts"] is True


def test_closed_port_fails_in_words(tmp_path: Path) -> None:
    """A closed port fails the step with 'refuses connections'."""
    port = free_port()

    result = _action(host="127.0.0.1", port=port, timeout="1s").rehearse(ProbeContext(tmp_path))

    assert not result.ok
    assert result.summary == f"127.0.0.1:{port} refuses connections"


def test_bad_params_are_caught_at_load_time() -> None:
    """A missing host, a bad port or an unknown key is a validation error naming the key."""
    with pytest.raises(ParamError, match=r"with\.host: is required"):
        _action(port=80)
    with pytest.raises(ParamError, match=r"with\.port"):
        _action(host="h", port=70000)
    with pytest.raises(ParamError, match=r"with\.prot: unknown parameter"):
        _action(host="h", port=80, prot=1)
    with pytest.raises(ParamError, match=r"with\.timeout"):
        _action(host="h", port=80, timeout="soon")


@pytest.mark.sshd
def test_check_runs_from_the_steps_host(sshd: Sshd, listening_port: int, tmp_path: Path) -> None:
    """With `on: HOST` the connection is attempted from that host, in the same words."""
    remote = SshTransport(sshd.spec(name="new"))
    try:
        ctx = ProbeContext(tmp_path, host="new", remote=remote)
        ok = _action(host="127.0.0.1", port=listening_port).run(ctx)
        closed_port = free_port()
        refused = _action(host="127.0.0.1", port=closed_port).run(ctx)
    finally:
        remote.close()

    assert ok.ok
    assert ok.summary.endswith("(from new)")
    assert not refused.ok
    assert refused.summary == f"127.0.0.1:{closed_port} refuses connections (from new)"


def test_a_host_with_shell_syntax_is_refused_at_load_time() -> None:
    """tcp.check refuses a host that a remote shell would read as a command, before anything runs."""
    with pytest.raises(ParamError, match="expected a host name or an address"):
        TcpCheck.from_params(Params({"host": "db;touch /tmp/pwned", "port": 22}))

    assert TcpCheck.from_params(Params({"host": "::1", "port": 22})).host == "::1"
