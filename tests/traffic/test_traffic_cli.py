"""`opskit traffic wait` and `watch` against a real running bridge, with short durations."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.clients import http_get
from tests.proxy.conftest import StartForwarder
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy

LONG_AGO = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
SHORT = ("--old-ttl", "1s", "--margin", "0s", "--interval", "100ms")


def test_no_stats_file_is_blocked(opskit: Invoke, tmp_path: Path) -> None:
    """Without a stats file (no bridge) the wait exits 3 and says how to start one."""
    result = opskit(
        "traffic", "wait", "--stats-file", str(tmp_path / "none.json"), expect=ExitCode.BLOCKED
    )

    assert "opskit proxy start" in result.stderr


def test_bad_duration_is_bad_input(opskit: Invoke, tmp_path: Path) -> None:
    """A duration that does not parse exits 2 and names the flag."""
    result = opskit(
        "traffic",
        "wait",
        "--stats-file",
        str(tmp_path / "s.json"),
        "--quiet",
        "soon",
        expect=ExitCode.BAD_INPUT,
    )

    assert "--quiet" in result.stderr


def test_open_connection_times_out_naming_the_client(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """While a client stays connected the wait times out with exit 1 and names who a shutdown would cut."""
    bridge = forwarder(nginx.http)
    with socket.create_connection(
        (bridge.host, bridge.port), source_address=("127.0.0.51", 0)
    ) as sock:
        sock.sendall(b"GET /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)
        bridge.wait_stats(lambda s: s["active"] == 1)

        result = opskit(
            "traffic", "wait", "--stats-file", str(bridge.stats_file), "--switched-at", LONG_AGO,
            *SHORT, "--quiet", "0s", "--timeout", "500ms", expect=ExitCode.NEGATIVE,
        )  # fmt: skip

    assert "NOT SAFE" in result.stdout
    assert "timed out" in result.stdout
    assert "1 connection still active: 127.0.0.51" in result.stdout
    assert "a shutdown now would cut: 127.0.0.51" in result.stdout


def test_quiet_window_then_safe_with_json(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """Right after a request the quiet window holds the verdict back; once it passes the wait exits 0."""
    bridge = forwarder(nginx.http)
    assert http_get(bridge.host, bridge.port, "/1k.txt", bind="127.0.0.52")[0] == 200
    bridge.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)
    args = (
        "traffic",
        "wait",
        "--stats-file",
        str(bridge.stats_file),
        "--switched-at",
        LONG_AGO,
        *SHORT,
    )

    early = opskit(*args, "--quiet", "1h", "--timeout", "0s", "--json", expect=ExitCode.NEGATIVE)
    started = time.monotonic()
    safe = opskit(*args, "--quiet", "1500ms", "--timeout", "10s", "--json", expect=ExitCode.OK)

    waiting = json.loads(early.stdout)
    assert waiting["safe"] is False
    assert waiting["reasons"][0].startswith("quiet for ")
    verdict = json.loads(safe.stdout)
    assert {"safe", "reasons", "active", "last_activity", "earliest_safe_at", "clients"} <= set(
        verdict
    )
    assert verdict["safe"] is True
    assert verdict["active"] == 0
    assert verdict["clients"][0]["address"] == "127.0.0.52"
    assert time.monotonic() - started < 8


def test_before_ttl_and_margin_is_not_safe(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """Just after the switch an idle bridge is still not safe: caches may hold the old address."""
    bridge = forwarder(nginx.http)
    just_now = datetime.now(UTC).isoformat()

    result = opskit(
        "traffic", "wait", "--stats-file", str(bridge.stats_file), "--switched-at", just_now,
        "--old-ttl", "30m", "--quiet", "0s", "--timeout", "0s", "--json", expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    verdict = json.loads(result.stdout)
    assert verdict["reasons"][0].startswith("caches may still hold the old address until")
    assert verdict["caches"] == "waiting"


def test_unknown_switch_time_is_not_safe(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """Without --switched-at the verdict is unknown (exit 1) and says which flag to pass."""
    bridge = forwarder(nginx.http)

    result = opskit(
        "traffic", "wait", "--stats-file", str(bridge.stats_file), "--quiet", "0s", "--timeout", "0s",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    assert "--switched-at" in result.stdout


def test_stopped_bridge_is_blocked(opskit: Invoke, nginx: Nginx, forwarder: StartForwarder) -> None:
    """A bridge that has stopped gives no live counters: exit 3, not a verdict."""
    bridge = forwarder(nginx.http)
    assert bridge.terminate() == 0

    result = opskit(
        "traffic", "wait", "--stats-file", str(bridge.stats_file), expect=ExitCode.BLOCKED
    )

    assert "stopped" in result.stderr


def test_watch_once_shows_clients_and_verdict(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """One dashboard snapshot lists the newest client and the verdict below it."""
    bridge = forwarder(nginx.http)
    assert http_get(bridge.host, bridge.port, "/1k.txt", bind="127.0.0.53")[0] == 200
    bridge.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)

    result = opskit(
        "traffic", "watch", "--stats-file", str(bridge.stats_file), "--once", "--quiet", "1h",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    assert "127.0.0.53" in result.stdout
    assert "NOT SAFE to shut down" in result.stdout
    assert "open ▁" in result.stdout
    assert "new  ▁" in result.stdout
