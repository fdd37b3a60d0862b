"""Review fixes where the forwarder's branches met: listeners handed over, hot-restart writes."""

from __future__ import annotations

import asyncio
import io
import os
import socket

import pytest

from opskit.proxy import forwarder

pytestmark = pytest.mark.proxy


def _options(listen_port: int, to_port: int, *extra: str) -> forwarder.Options:
    argv = ["--listen", f"127.0.0.1:{listen_port}", "--to", f"127.0.0.1:{to_port}", *extra]
    return forwarder.Options(forwarder.build_parser().parse_args([*argv, "--no-uvloop"]))


def test_handed_over_listener_keeps_vanished_clients_reapable() -> None:
    """A bridge given its listener by proxy.start (--listen-fd) turns on TCP keepalive for its
    clients, as a bridge that binds its own port does: a client that vanishes is reaped."""
    backend = socket.create_server(("127.0.0.1", 0))
    handed = socket.create_server(("127.0.0.1", 0))  # as bind_when_free makes it: no options
    port, to_port = handed.getsockname()[1], backend.getsockname()[1]
    opts = _options(port, to_port, "--listen-fd", str(os.dup(handed.fileno())))

    async def accepted_keepalive() -> int:
        bridge = forwarder.Bridge(opts, asyncio.get_running_loop(), io.StringIO())
        await forwarder.start(bridge)
        assert bridge.server is not None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):  # bounded: 2 s
                if bridge.conns:
                    break
                await asyncio.sleep(0.01)
            conn = next(iter(bridge.conns))
            assert conn.t is not None
            sock = conn.t.get_extra_info("socket")
            value = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
            writer.close()
            return value
        finally:
            bridge.server.close()
            for conn in list(bridge.conns):
                conn.abort()
            await asyncio.sleep(0)

    try:
        assert asyncio.run(asyncio.wait_for(accepted_keepalive(), 10)) == 1
    finally:
        handed.close()
        backend.close()
