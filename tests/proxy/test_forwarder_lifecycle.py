"""The built-in engine over time: stats file, restarts, probes, reapers, nudge and SIGTERM drain."""

from __future__ import annotations

import datetime
import json
import signal
import socket
import stat
import threading
import time

import pytest

from opskit.proxy.bridge import probe
from tests.proxy.clients import http_get, read_to_eof, silent_backend
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy


def _closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """True when the bridge closes this connection within timeout_s."""
    sock.settimeout(timeout_s)
    try:
        return read_to_eof(sock, limit=1 << 20) is not None and True
    except TimeoutError:
        return False


def test_stats_file_is_valid_json_at_every_moment(nginx: Nginx, forwarder: StartForwarder) -> None:
    """A reader parsing the stats file in a tight loop never sees a partial file while it is rewritten."""
    fwd = forwarder(nginx.http, "--stats-interval", "20ms")
    failures: list[str] = []
    parses = [0]
    stop = threading.Event()

    def reader() -> None:
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                json.loads(fwd.stats_file.read_text())
                parses[0] += 1
            except ValueError as exc:
                failures.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            http_get(fwd.host, fwd.port, "/1k.txt", bind=f"127.0.1.{i % 50 + 1}")
    finally:
        stop.set()
        thread.join(timeout=15)

    assert failures == []
    assert parses[0] > 50
    assert stat.S_IMODE(fwd.stats_file.stat().st_mode) == 0o600
    assert fwd.wait_stats(lambda s: s["total"] == 300)["clients"][0]["address"].startswith(
        "127.0.1."
    )


def test_restart_continues_the_client_table(nginx: Nginx, forwarder: StartForwarder) -> None:
    """A bridge restarted on the same stats file keeps every client and total it counted before."""
    first = forwarder(nginx.http)
    http_get(first.host, first.port, "/1k.txt", bind="127.0.0.5")
    http_get(first.host, first.port, "/1k.txt", bind="127.0.0.6")
    first.wait_stats(lambda s: s["total"] == 2 and s["active"] == 0)
    assert first.terminate() == 0
    before = first.stats()

    second = forwarder(nginx.http, stats_file=first.stats_file)
    http_get(second.host, second.port, "/1k.txt", bind="127.0.0.5")
    after = second.wait_stats(lambda s: s["total"] == 3 and s["active"] == 0)

    rows = {c["address"]: c for c in after["clients"]}
    assert rows["127.0.0.5"]["total"] == 2
    assert rows["127.0.0.6"]["total"] == 1
    assert (
        rows["127.0.0.6"]["first_seen"]
        == {c["address"]: c for c in before["clients"]}["127.0.0.6"]["first_seen"]
    )
    assert after["bytes_out"] > before["bytes_out"]
    assert "continuing 2 clients" in second.log()


def test_opskit_probes_are_not_counted(nginx: Nginx, forwarder: StartForwarder) -> None:
    """opskit's readiness probe gets an answer but never appears as a client; a real client does."""
    fwd = forwarder(nginx.http)

    answers = [probe(fwd.host, fwd.port) for _ in range(5)]
    time.sleep(
        0.5
    )  # longer than the grace period in which a connection may still prove to be a probe
    quiet = fwd.wait_stats(lambda s: s["updated_at"] > s["started_at"])
    http_get(fwd.host, fwd.port, "/1k.txt", bind="127.0.0.9")
    counted = fwd.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)

    assert answers == ["ok"] * 5
    assert quiet["total"] == 0
    assert quiet["clients"] == []
    assert [c["address"] for c in counted["clients"]] == ["127.0.0.9"]


def test_probe_reports_an_unreachable_new_host(forwarder: StartForwarder) -> None:
    """The probe says the new host is down when it refuses, and that probe is not an error of a client."""
    fwd = forwarder(f"127.0.0.1:{free_port()}")

    answer = probe(fwd.host, fwd.port)

    assert answer.startswith("upstream-down")
    time.sleep(0.4)
    assert fwd.stats()["errors"] == 0
    assert fwd.stats()["clients"] == []


def test_silent_connection_counts_as_active(nginx: Nginx, forwarder: StartForwarder) -> None:
    """A client that connects and sends nothing yet (a pre-connect) is an active connection."""
    fwd = forwarder(nginx.http)
    with socket.create_connection((fwd.host, fwd.port), timeout=5):
        stats = fwd.wait_stats(lambda s: s["active"] == 1, timeout_s=3)
    assert stats["clients"][0]["active"] == 1


def test_idle_timeout_closes_idle_connections(nginx: Nginx, forwarder: StartForwarder) -> None:
    """--idle-timeout closes a bridged connection that carried no byte for that long."""
    fwd = forwarder(nginx.http, "--idle-timeout", "500ms")
    with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
        assert _closed_within(sock, 3)
    assert "--idle-timeout" in fwd.log()


def test_half_open_connections_are_reaped(forwarder: StartForwarder) -> None:
    """A connection half-closed by the client whose backend never answers is closed after --half-close-timeout."""
    with silent_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--half-close-timeout", "500ms")
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            assert _closed_within(sock, 3)
        stats = fwd.wait_stats(lambda s: s["active"] == 0)
    assert stats["total"] == 1
    assert "half-closed by the client" in fwd.log()


def test_max_connections_refuses_the_extra_client(nginx: Nginx, forwarder: StartForwarder) -> None:
    """Beyond --max-connections a new client is closed at once and counted as an error."""
    fwd = forwarder(nginx.http, "--max-connections", "2")
    with (
        socket.create_connection((fwd.host, fwd.port), timeout=5),
        socket.create_connection((fwd.host, fwd.port), timeout=5),
    ):
        fwd.wait_stats(lambda s: s["active"] == 2)
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as third:
            assert read_to_eof(third) == b""
        stats = fwd.wait_stats(lambda s: s["errors"] == 1)
    assert stats["total"] == 3
    assert "--max-connections" in fwd.log()


def test_nudge_closes_idle_connections_only_after_not_before(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """--nudge-after closes idle bridged connections, but not before --nudge-not-before."""
    not_before = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1.5)
    fwd = forwarder(
        nginx.http, "--nudge-after", "200ms", "--nudge-not-before", not_before.isoformat()
    )
    with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
        assert not _closed_within(sock, 1.0)  # idle for 1 s, but condition (1) does not hold yet
        assert _closed_within(sock, 3)
    assert datetime.datetime.now(datetime.UTC) >= not_before
    assert "nudged client 127.0.0.1:" in fwd.log()


def test_sigterm_drains_then_closes_and_says_how_it_ended(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """SIGTERM stops accepting, lets a bridged connection live until --drain-timeout, and ends 'sigterm'."""
    fwd = forwarder(nginx.http, "--drain-timeout", "1s")
    with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
        fwd.wait_stats(lambda s: s["active"] == 1)
        started = time.monotonic()
        fwd.proc.send_signal(signal.SIGTERM)
        stopping = fwd.wait_stats(lambda s: s["state"] == "stopping", timeout_s=3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((fwd.host, fwd.port), timeout=1).close()
        sock.sendall(b"GET /1k.txt HTTP/1.0\r\nHost: x\r\n\r\n")  # still bridged while draining
        assert read_to_eof(sock).startswith(b"HTTP/1.1 200")
    code = fwd.proc.wait(timeout=10)
    final = fwd.stats()

    assert code == 0
    assert stopping["active"] == 1
    assert final["state"] == "stopped"
    assert final["ended"] == "sigterm"
    assert final["cut"] == 0
    assert final["active"] == 0
    assert time.monotonic() - started < 3
    assert "127.0.0.1" in fwd.out_file.read_text()


def test_sigterm_closes_a_long_connection_after_the_drain_timeout(
    forwarder: StartForwarder,
) -> None:
    """A bridged connection still open when --drain-timeout ends is closed, and the bridge exits."""
    with silent_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--drain-timeout", "700ms")
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            fwd.wait_stats(lambda s: s["active"] == 1)
            started = time.monotonic()
            fwd.proc.send_signal(signal.SIGINT)
            assert _closed_within(sock, 5)
            waited_s = time.monotonic() - started
        assert fwd.proc.wait(timeout=10) == 0
    assert 0.5 < waited_s < 3
    assert (fwd.stats()["ended"], fwd.stats()["cut"]) == ("sigint", 1)
    assert "drain timeout" in fwd.log()
    assert "1 cut at the drain timeout" in fwd.out_file.read_text()
