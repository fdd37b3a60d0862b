"""The built-in bridge's bookkeeping under restarts, unwritable stats, a full log disk and many clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.proxy.bridge import FORWARDER_PATH
from opskit.proxy.forwarder import WATCH_KEEP, previous_watch
from opskit.traffic.source import FileSource
from opskit.traffic.verdict import DrainPolicy
from opskit.traffic.wait import check
from tests.conftest import Invoke
from tests.proxy.clients import http_get
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy

LONG_AGO = datetime.now(UTC) - timedelta(hours=2)


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """The stats file cannot be replaced: immutable for root (chattr), a read-only directory otherwise."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        assert chattr, "chattr (e2fsprogs) is needed to make a file immutable for root"
        subprocess.run([chattr, "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(path)], check=True)
    else:
        path.parent.chmod(0o500)
        try:
            yield
        finally:
            path.parent.chmod(0o700)


def test_restart_with_a_refused_client_is_not_safe(nginx: Nginx, forwarder: StartForwarder) -> None:
    """Killed, down longer than the quiet window (a client refused meanwhile), restarted: not SAFE,
    and the gap in watching is shown (it used to say "quiet" over the downtime)."""
    quiet_s = 3.0
    first = forwarder(nginx.http)
    assert http_get(first.host, first.port, "/1k.txt", bind="127.0.0.61")[0] == 200
    first.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((first.host, first.port), 2, ("127.0.0.62", 0)).close()
    time.sleep(quiet_s + 0.5)

    second = forwarder(nginx.http, stats_file=first.stats_file, port=first.port)
    outcome = check(
        FileSource(second.stats_file),
        DrainPolicy(switched_at=LONG_AGO, old_ttl_s=1, margin_s=0, quiet_s=quiet_s),
    )

    verdict = outcome.verdict
    assert not verdict.safe
    assert len(verdict.gaps) == 1
    assert verdict.gaps[0].seconds >= quiet_s
    assert any("a gap is not quiet" in r for r in verdict.reasons)
    watch = second.stats()["watch"]
    assert [w["pid"] for w in watch] == [first.pid, second.pid]
    assert watch[0]["stopped_at"] is not None
    assert watch[1]["stopped_at"] is None


def test_unwritable_stats_is_cannot_tell_while_forwarding_continues(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """The bridge cannot replace its stats file while a client is connected: the wait exits 3 with
    the reason (never "gone" for a live pid), the bridge keeps forwarding and counts the failures."""
    bridge = forwarder(nginx.http)
    held = socket.create_connection((bridge.host, bridge.port), 5, ("127.0.0.63", 0))
    bridge.wait_stats(lambda s: s["active"] == 1)
    args = ("traffic", "wait", "--stats-file", str(bridge.stats_file), "--timeout", "0s")
    try:
        with unwritable(bridge.stats_file):
            time.sleep(3.5)  # longer than 2 heartbeats + 1 s
            blocked = opskit(*args, "--switched-at", LONG_AGO.isoformat(), expect=ExitCode.BLOCKED)
            status = opskit("proxy", "status", "--stats-file", str(bridge.stats_file), expect=3)
            assert http_get(bridge.host, bridge.port, "/1k.txt", bind="127.0.0.64")[0] == 200
    finally:
        held.close()

    assert "cannot tell" in blocked.stderr
    assert "could not write" in blocked.stderr
    assert "gone" not in blocked.stderr
    assert "failed to write" in status.stderr
    after = bridge.wait_stats(lambda s: s["write_errors"] >= 1 and s["total"] == 2)
    assert after["last_write_error"]
    assert "could not write the stats file" in bridge.log()
    assert bridge.terminate() == 0


def test_idle_bridge_rewrites_its_file_every_heartbeat(forwarder: StartForwarder) -> None:
    """With no traffic at all the file is still rewritten every heartbeat (1 s), so readers see it lives."""
    bridge = forwarder("127.0.0.1:9")
    first = bridge.stats()["updated_at"]

    later = bridge.wait_stats(lambda s: s["updated_at"] != first, timeout_s=3.0)

    assert later["heartbeat_s"] == 1.0


def test_client_table_stays_bounded_and_forwarding_continues(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """200 distinct client addresses against a cap of 40 rows: the file keeps at most 40 rows, the
    rest is counted in clients_other, and the bridge still forwards."""
    bridge = forwarder(nginx.http, "--client-table-cap", "40")
    for n in range(200):
        address = f"127.0.{10 + n // 100}.{1 + n % 100}"
        assert http_get(bridge.host, bridge.port, "/1k.txt", bind=address)[0] == 200

    final = bridge.wait_stats(
        lambda s: s["total"] == 200 and s["active"] == 0 and len(s["clients"]) <= 40
    )

    other = final["clients_other"]
    assert len(final["clients"]) + other["clients"] >= 200
    assert sum(c["total"] for c in final["clients"]) + other["total"] == 200
    assert http_get(bridge.host, bridge.port, "/1k.txt", bind="127.0.0.65")[0] == 200
    assert len(bridge.stats_file.read_bytes()) < 40 * 400 + 4096


def test_full_log_disk_never_stops_the_bridge(nginx: Nginx, tmp_path: Path) -> None:
    """With its log on a full disk (/dev/full) the bridge forwards, applies its idle timeout and
    stops on SIGTERM (a failing log used to kill the periodic task)."""
    port = free_port()
    stats_file = tmp_path / "bridge.json"
    argv = [
        sys.executable,
        str(FORWARDER_PATH),
        "--listen",
        f"127.0.0.1:{port}",
        "--to",
        nginx.http,
    ]
    argv += ["--stats-file", str(stats_file), "--idle-timeout", "500ms", "--quiet"]
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=full, stderr=full)
    try:
        deadline = time.monotonic() + 10
        while not stats_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http_get("127.0.0.1", port, "/1k.txt", bind="127.0.0.66")[0] == 200
        idle = socket.create_connection(("127.0.0.1", port), 5, ("127.0.0.67", 0))
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the idle timeout: the sweep still runs
        idle.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    final = json.loads(stats_file.read_text())
    assert final["state"] == "stopped"
    assert final["log_errors"] >= 1


def test_allowed_client_may_stay_connected(
    opskit: Invoke, nginx: Nginx, forwarder: StartForwarder
) -> None:
    """--max-active 1 --allow-client: the named client's open connection does not block SAFE, while
    the same connection from an address not named does."""
    bridge = forwarder(nginx.http)
    held = socket.create_connection((bridge.host, bridge.port), 5, ("127.0.0.70", 0))
    try:
        bridge.wait_stats(lambda s: s["active"] == 1)
        time.sleep(1.2)  # the quiet window below
        args = ("traffic", "wait", "--stats-file", str(bridge.stats_file), "--timeout", "0s")
        args += ("--switched-at", LONG_AGO.isoformat(), "--old-ttl", "1s", "--quiet", "1s")
        allowed = opskit(*args, "--max-active", "1", "--allow-client", "127.0.0.70", expect=0)
        other = opskit(*args, "--max-active", "1", "--allow-client", "127.0.0.99", expect=1)
    finally:
        held.close()

    assert allowed.stdout.startswith("SAFE")
    assert "from clients not allowed: 127.0.0.70" in other.stdout


def test_previous_watch_closes_an_unclean_lifetime_and_converts_old_files() -> None:
    """A starting bridge closes a lifetime that never stopped at that file's updated_at, turns a file
    from before the watch history into one lifetime, and keeps at most 49 for itself to append to."""
    crashed = {
        "updated_at": "2026-12-01T13:00:05Z",
        "watch": [{"pid": 7, "engine": "builtin", "started_at": "2026-12-01T12:00:00Z"}],
    }
    legacy = {"pid": 8, "engine": "builtin", "started_at": "2026-12-01T11:00:00Z"}
    legacy["updated_at"] = "2026-12-01T11:30:00Z"
    many = {"updated_at": "2026-12-01T13:00:00Z", "watch": crashed["watch"] * 80}

    assert previous_watch(crashed)[0]["stopped_at"] == "2026-12-01T13:00:05Z"
    assert previous_watch(legacy) == [
        {
            "pid": 8,
            "engine": "builtin",
            "started_at": "2026-12-01T11:00:00Z",
            "stopped_at": "2026-12-01T11:30:00Z",
        }
    ]
    assert len(previous_watch(many)) == WATCH_KEEP - 1
