"""tcp_accepts: a port that accepts, one that refuses, one that never answers, in words."""

from __future__ import annotations

import socket

from opskit.net.tcp import from_remote, tcp_accepts
from opskit.transport.base import CommandResult
from tests.servers.common import free_port


def test_listening_port_accepts_with_a_connect_time() -> None:
    """A listening port is reported as accepting, with how long the connection took."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        result = tcp_accepts("127.0.0.1", port, timeout_s=2)

    assert result.accepts
    assert result.error is None
    assert result.connect_s is not None
    assert 0 <= result.connect_s < 2
    assert result.describe().startswith(f"127.0.0.1:{port} accepts connections (")


def test_closed_port_refuses_connections() -> None:
    """A port where nothing listens reads 'refuses connections'."""
    port = free_port()

    result = tcp_accepts("127.0.0.1", port, timeout_s=2)

    assert not result.accepts
    assert result.connect_s is None
    assert result.describe() == f"127.0.0.1:{port} refuses connections"


def test_full_backlog_times_out_in_words() -> None:
    """A listener that never completes the handshake reads 'timed out after N s'."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the accept queue so the next SYN is dropped (Linux backlog 0 keeps one slot).
        fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        try:
            result = tcp_accepts("127.0.0.1", port, timeout_s=0.5)
        finally:
            for s in fillers:
                s.close()

    assert not result.accepts
    assert result.error == "timed out after 0.5 s"


def test_unknown_name_cannot_be_resolved() -> None:
    """A host name that does not resolve says so instead of a socket error code."""
    result = tcp_accepts("no-such-host.invalid", 80, timeout_s=2)

    assert result.error == "cannot resolve no-such-host.invalid"


def _remote(rc: int, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult("probe", rc, stdout, stderr, 0.1)


def test_remote_probe_outcomes_read_like_local_ones() -> None:
    """A probe made from another host reports the same words as a local one."""
    ok = from_remote("db", 5432, 3, _remote(0, "ok 1500\n"))
    refused = from_remote(
        "db",
        5432,
        3,
        _remote(
            1,
            stderr="bash: connect: Connection refused\nbash: /dev/tcp/db/5432: Connection refused\n",
        ),
    )
    late = from_remote("db", 5432, 3, _remote(124))
    no_route = from_remote("db", 5432, 3, _remote(1, stderr="bash: connect: No route to host\n"))

    assert (ok.accepts, ok.connect_s) == (True, 0.0015)
    assert refused.error == "refuses connections"
    assert late.error == "timed out after 3 s"
    assert no_route.error == "no route to host"
