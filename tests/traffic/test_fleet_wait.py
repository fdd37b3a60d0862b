"""`opskit traffic wait` over several real bridges: SAFE only when every one is, the busy ones named."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.conftest import StartForwarder
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy

LONG_AGO = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
POLICY = (
    "--switched-at",
    LONG_AGO,
    "--old-ttl",
    "1s",
    "--margin",
    "0s",
    "--quiet",
    "0s",
    "--interval",
    "100ms",
)


def test_one_busy_bridge_of_two_is_not_safe_and_named(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """Two bridges, one with a client still connected: NOT SAFE, naming that bridge only; idle, SAFE."""
    idle, busy = forwarder(nginx.http), forwarder(nginx.http)
    with socket.create_connection((busy.host, busy.port), source_address=("127.0.0.53", 0)) as sock:
        sock.sendall(b"GET /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)
        busy.wait_stats(lambda s: s["active"] == 1)

        result = opskit("traffic", "wait", "--stats-file", str(idle.stats_file), "--stats-file",
                        str(busy.stats_file), *POLICY, "--timeout", "300ms", expect=ExitCode.NEGATIVE)  # fmt: skip
        as_json = opskit("traffic", "wait", "--stats-file", str(idle.stats_file), "--stats-file",
                         str(busy.stats_file), *POLICY, "--timeout", "0s", "--json", expect=ExitCode.NEGATIVE)  # fmt: skip

    assert f"1 of 2 bridges still busy: {busy.stats_file}" in result.stdout
    assert "127.0.0.53" in result.stdout
    verdict = json.loads(as_json.stdout)
    assert verdict["safe"] is False
    assert verdict["busy"] == [str(busy.stats_file)]
    busy.wait_stats(lambda s: s["active"] == 0)

    safe = opskit("traffic", "wait", "--stats-file", str(idle.stats_file), "--stats-file", str(busy.stats_file),
                  *POLICY, "--timeout", "5s", expect=ExitCode.OK)  # fmt: skip

    assert "SAFE to shut down the old hosts: all 2 bridges are safe" in safe.stdout


def test_a_dead_bridge_among_several_is_cannot_tell(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder, tmp_path: object
) -> None:
    """A bridge without live stats makes the whole answer exit 3, never SAFE."""
    idle = forwarder(nginx.http)

    opskit("traffic", "wait", "--stats-file", str(idle.stats_file), "--stats-file", "/nonexistent/bridge.json",
           *POLICY, "--timeout", "0s", expect=ExitCode.BLOCKED)  # fmt: skip
