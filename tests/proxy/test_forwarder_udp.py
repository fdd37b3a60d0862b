"""`--udp`: the built-in bridge carries datagrams too, one flow per client, with the same counters."""

from __future__ import annotations

import socket

import pytest

from tests.proxy.clients import udp_echo_backend
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port

pytestmark = pytest.mark.proxy


def _ask(client: socket.socket, port: int, payload: bytes) -> bytes:
    client.sendto(payload, ("127.0.0.1", port))
    data, _ = client.recvfrom(65536)
    return data


def test_udp_datagrams_are_carried_and_counted_per_flow(forwarder: StartForwarder) -> None:
    """Two UDP clients get their echoes through the bridge; flows, bytes and carries are in the stats."""
    with udp_echo_backend() as backend:
        port = free_port(udp_too=True)
        fwd = forwarder(f"127.0.0.1:{backend}", "--udp", "--udp-idle-timeout", "1s", port=port)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as two,
        ):
            one.settimeout(5)
            two.settimeout(5)
            two.bind(("127.0.0.2", 0))

            assert _ask(one, port, b"ping") == b"ping"
            assert _ask(one, port, b"ping again") == b"ping again"
            assert _ask(two, port, b"x" * 1000) == b"x" * 1000

            live = fwd.wait_stats(lambda s: s["udp"]["active_flows"] == 2 and s["active"] == 2)

    assert live["carries"] == ["tcp", "udp"]
    assert live["udp"]["flows"] == 2
    assert live["udp"]["bytes_in"] == live["udp"]["bytes_out"] == 4 + 10 + 1000
    assert {c["address"]: c["bytes_in"] for c in live["clients"]} == {
        "127.0.0.1": 14,
        "127.0.0.2": 1000,
    }
    # An idle flow ends after --udp-idle-timeout: the clients are no longer active.
    idle = fwd.wait_stats(lambda s: s["udp"]["active_flows"] == 0 and s["active"] == 0)
    assert idle["total"] == 2


def test_without_udp_the_stats_say_tcp_only(forwarder: StartForwarder) -> None:
    """A bridge started without --udp says it carries TCP only, so the verdict can name UDP unwatched."""
    with udp_echo_backend() as backend:
        fwd = forwarder(f"127.0.0.1:{backend}")

    assert fwd.stats()["carries"] == ["tcp"]
    assert "udp" not in fwd.stats()
