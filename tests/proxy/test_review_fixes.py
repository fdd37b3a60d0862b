"""Review fixes where the forwarder's branches met: listeners handed over, hot-restart writes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from opskit.errors import ExitCode
from opskit.proxy import forwarder, stats
from opskit.traffic.verdict import watch_gaps
from tests.conftest import Invoke
from tests.proxy.conftest import StartForwarder

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


def test_no_write_from_the_old_bridge_lands_after_the_hand_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stats write the old bridge had in flight at a hot restart never lands after the hand-over:
    the new bridge continues from the file written at the hand-over, and is its only writer."""
    real = forwarder.render_and_write

    def slow_disk(path: str, captured: tuple[Any, ...]) -> str | None:
        time.sleep(0.3)  # a loaded disk: the older snapshot lands late
        return real(path, captured)

    monkeypatch.setattr(forwarder, "render_and_write", slow_disk)
    stats_file = tmp_path / "bridge.json"
    opts = _options(1, 2, "--stats-file", str(stats_file))
    listener = socket.create_server(("127.0.0.1", 0))

    async def hand_over() -> None:
        loop = asyncio.get_running_loop()
        bridge = forwarder.Bridge(opts, loop, io.StringIO())
        bridge.write_stats_soon()  # in flight, with total 0
        bridge.total = 7  # connections counted since
        old_side, new_side = socket.socketpair()
        new_side.sendall(b"takeover 4242\n")
        handing = loop.create_task(forwarder._hand_over(bridge, old_side, [listener.fileno()]))
        new_side.settimeout(5)
        message, _, _, _ = await loop.run_in_executor(
            None, new_side.recvmsg, 64, socket.CMSG_SPACE(4)
        )
        assert message.startswith(b"listeners")
        restored = json.loads(stats_file.read_text())["total"]
        new_side.sendall(b"ready\n")
        stats_file.write_text(json.dumps({"total": restored, "writer": "new"}))
        await asyncio.sleep(0.6)  # past the slow write
        await asyncio.wait_for(handing, 5)
        new_side.close()
        old_side.close()
        assert restored == 7
        assert json.loads(stats_file.read_text())["writer"] == "new"

    try:
        asyncio.run(asyncio.wait_for(hand_over(), 15))
    finally:
        listener.close()


def test_a_hot_restart_leaves_no_gap_in_the_watch_history(
    opskit: Invoke, forwarder: StartForwarder
) -> None:
    """After `proxy restart` the stats file lists the old bridge, closed, and the new one, started
    before the old one stopped watching: the drain verdict sees no time nobody watched."""
    backend = socket.create_server(("127.0.0.1", 0))
    fwd = forwarder(f"127.0.0.1:{backend.getsockname()[1]}")
    new_pid = 0
    try:
        result = opskit("proxy", "restart", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK)
        new_pid = int(result.stdout.split("pid ")[1].split()[0])
        fwd.wait_stats(lambda s: s["pid"] == new_pid)
        watch = stats.load(fwd.stats_file).watch
        assert [w.pid for w in watch][-2:] == [fwd.pid, new_pid]
        assert watch[-2].stopped_at is not None
        assert watch_gaps(stats.load(fwd.stats_file)) == ()
    finally:
        backend.close()
        if new_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new_pid, signal.SIGTERM)
