"""The drain verdict is the same whichever engine carries the traffic (issue #9: built-in and HAProxy).

Each case drives the same clients through a built-in bridge and a HAProxy-engine bridge side by side,
then asks `opskit traffic wait` about both and compares the verdicts. Quiet windows are 1-2 s.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.clients import GET, http_get, read_response
from tests.proxy.conftest import StartForwarder
from tests.servers.common import wait_stats
from tests.servers.haproxy import engine_config, start_engine, stop_engine
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy

LONG_AGO = (datetime.now(UTC) - timedelta(hours=2)).isoformat()


@dataclass(frozen=True)
class Bridge:
    """One running bridge, whatever its engine."""

    engine: str
    host: str
    port: int
    stats_file: Path

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stats_file.read_text())
        return data

    def wait(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return wait_stats(self.stats_file, predicate)


@pytest.fixture
def bridges(tmp_path: Path, nginx: Nginx, forwarder: StartForwarder) -> Iterator[list[Bridge]]:
    """A built-in and a HAProxy-engine bridge to the same nginx, both polled every 100 ms."""
    builtin = forwarder(nginx.http)
    config = engine_config(tmp_path / "hap.json", nginx.http)
    haproxy = start_engine(config)
    try:
        yield [
            Bridge("builtin", builtin.host, builtin.port, builtin.stats_file),
            Bridge("haproxy", *config.listen_host_port, config.stats_file),
        ]
    finally:
        stop_engine(haproxy)


def verdicts(
    opskit: Invoke, bridges: list[Bridge], *flags: str, expect: ExitCode
) -> dict[str, tuple[bool, list[str]]]:
    """Each engine's verdict as (safe, reasons with numbers blanked), asserting the exit code."""
    found = {}
    for bridge in bridges:
        result = opskit(
            "traffic", "wait", "--stats-file", str(bridge.stats_file), "--switched-at", LONG_AGO,
            "--old-ttl", "1s", "--margin", "0s", "--interval", "100ms", "--json", *flags,
            expect=expect,
        )  # fmt: skip
        verdict = json.loads(result.stdout)
        found[bridge.engine] = (
            verdict["safe"],
            [re.sub(r"\d+(\.\d+)?", "N", r) for r in verdict["reasons"]],
        )
    return found


def test_idle_bridges_are_safe_after_the_quiet_window(
    opskit: Invoke, bridges: list[Bridge]
) -> None:
    """With nobody connected, both engines say SAFE once the quiet window has passed."""
    found = verdicts(opskit, bridges, "--quiet", "1s", "--timeout", "8s", expect=ExitCode.OK)

    assert found["builtin"] == found["haproxy"]
    assert found["haproxy"][0] is True


def test_connected_client_is_not_safe_on_either_engine(
    opskit: Invoke, bridges: list[Bridge]
) -> None:
    """A client still connected keeps both engines from saying SAFE, with the same reason."""
    conns = [
        socket.create_connection((b.host, b.port), source_address=("127.0.0.71", 0))
        for b in bridges
    ]
    try:
        for bridge in bridges:
            bridge.wait(lambda s: s["active"] == 1)

        found = verdicts(
            opskit, bridges, "--quiet", "0s", "--timeout", "0s", expect=ExitCode.NEGATIVE
        )
    finally:
        for conn in conns:
            conn.close()

    assert found["builtin"] == found["haproxy"]
    assert found["haproxy"][1][0].startswith("N connection still active")


def test_traffic_on_a_long_lived_tunnel_keeps_the_quiet_window_open(
    opskit: Invoke, bridges: list[Bridge]
) -> None:
    """Bytes on a connection that stays open count as activity on both engines (an allowed straggler)."""
    conns = [
        socket.create_connection((b.host, b.port), source_address=("127.0.0.72", 0))
        for b in bridges
    ]
    try:
        for conn in conns:
            conn.settimeout(5)
            conn.sendall(GET)
            read_response(conn)
        before = {b.engine: b.wait(lambda s: s["active"] == 1)["last_activity"] for b in bridges}
        time.sleep(2.3)  # longer than the quiet window: only the next bytes can keep it open
        for conn in conns:
            conn.sendall(GET)
            read_response(conn)
        for bridge in bridges:
            bridge.wait(lambda s, b=bridge: s["last_activity"] > before[b.engine])

        found = verdicts(
            opskit, bridges, "--max-active", "1", "--quiet", "2s", "--timeout", "0s",
            expect=ExitCode.NEGATIVE,
        )  # fmt: skip
    finally:
        for conn in conns:
            conn.close()

    assert found["builtin"] == found["haproxy"]
    assert found["haproxy"][1][0].startswith("quiet for ")


def test_a_client_during_the_quiet_window_resets_it(opskit: Invoke, bridges: list[Bridge]) -> None:
    """A short visit while the bridges are quiet holds both verdicts back, then both say SAFE."""
    time.sleep(1.2)
    for bridge in bridges:
        assert http_get(bridge.host, bridge.port, "/1k.txt", bind="127.0.0.73")[0] == 200
        bridge.wait(lambda s: s["total"] >= 1 and s["active"] == 0)

    held = verdicts(opskit, bridges, "--quiet", "1s", "--timeout", "0s", expect=ExitCode.NEGATIVE)
    later = verdicts(opskit, bridges, "--quiet", "1s", "--timeout", "8s", expect=ExitCode.OK)

    assert held["builtin"] == held["haproxy"]
    assert held["haproxy"][1][0].startswith("quiet for ")
    assert later["builtin"] == later["haproxy"]
