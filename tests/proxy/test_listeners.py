"""Who holds an address: the check every engine runs before it binds (issue #9 point 4)."""

from __future__ import annotations

import os
import socket

import pytest

from opskit.errors import Blocked
from opskit.proxy.listeners import address_taken, refuse_taken


def test_ipv6_listener_is_named_with_its_pid() -> None:
    """A listener on [::1] is found through /proc/net/tcp6 and named with its process."""
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as server:
        port = server.getsockname()[1]

        assert f"(pid {os.getpid()})" in (address_taken("::1", port) or "")


def test_dual_stack_wildcard_takes_the_ipv4_address_too() -> None:
    """Something on [::] (dual-stack) holds 127.0.0.1 on the same port, and is named."""
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        port = server.getsockname()[1]

        with pytest.raises(Blocked, match=rf"address already in use by .*\(pid {os.getpid()}\)"):
            refuse_taken(f"127.0.0.1:{port}", "127.0.0.1", port)


def test_port_held_by_a_connection_is_not_called_a_listener() -> None:
    """An outgoing connection's local port is refused too, and said to be a connection."""
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as conn:
        local_port = conn.getsockname()[1]

        assert "a connection of" in (address_taken("127.0.0.1", local_port) or "")


def test_free_address_is_not_taken() -> None:
    """A port nobody holds passes the check."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert address_taken("127.0.0.1", port) is None
