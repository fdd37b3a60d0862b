"""`opskit proxy restart`: a new bridge process takes the listener over without cutting any client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.proxy.clients import echo_backend, echo_roundtrip, udp_echo_backend
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port

pytestmark = pytest.mark.proxy


def _hammer(port: int, stop: threading.Event, results: list[str]) -> None:
    """New one-shot connections every 10 ms until stopped (bounded to 20 s): 'ok' or the failure."""
    deadline = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                results.append(
                    "ok" if echo_roundtrip(sock, b"hello") == b"hello" else "short answer"
                )
        except OSError as exc:
            results.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.01)


def test_restart_keeps_a_long_connection_and_refuses_nobody(
    opskit: Invoke, forwarder: StartForwarder
) -> None:
    """Across `proxy restart`, a long-lived connection keeps exchanging bytes and no new client is refused."""
    with echo_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}")
        long_lived = socket.create_connection((fwd.host, fwd.port), timeout=5)
        assert echo_roundtrip(long_lived, b"before") == b"before"
        stop, results = threading.Event(), []
        hammer = threading.Thread(target=_hammer, args=(fwd.port, stop, results), daemon=True)
        hammer.start()
        new_pid = 0
        try:
            time.sleep(0.3)
            result = opskit(
                "proxy", "restart", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK
            )
            new_pid = int(result.stdout.split("pid ")[1].split()[0])
            time.sleep(0.3)
            stop.set()
            hammer.join(timeout=25)

            assert new_pid != fwd.pid
            assert "UDP" not in result.stdout  # a TCP-only bridge has no flows to speak of
            assert echo_roundtrip(long_lived, b"after the restart") == b"after the restart"
            assert results, "the hammer made no connection"
            assert set(results) == {"ok"}, [r for r in results if r != "ok"][:3]
            # The old process still carries the long connection: the new one's table counts it.
            # Every connection of either process is counted once (the old one reports in 0.2 s steps).
            stats = fwd.wait_stats(
                lambda s: (
                    s["pid"] == new_pid and s["active"] == 1 and s["total"] == len(results) + 1
                )
            )
            assert stats["clients"][0]["address"] == "127.0.0.1"

            long_lived.close()
            assert fwd.proc.wait(timeout=10) == 0  # the old one exits once its connection ended
            stats = fwd.wait_stats(lambda s: s["active"] == 0 and s["pid"] == new_pid)
            assert (
                stats["bytes_in"]
                == stats["bytes_out"]
                == len(b"before" + b"after the restart") + 5 * len(results)
            )
        finally:
            stop.set()
            long_lived.close()
            if new_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(new_pid, signal.SIGTERM)


def test_restart_without_a_running_bridge_is_blocked(opskit: Invoke, tmp_path) -> None:
    """`proxy restart` with no stats file exits 3 with one line, not a traceback."""
    result = opskit(
        "proxy", "restart", "--stats-file", str(tmp_path / "none.json"), expect=ExitCode.BLOCKED
    )

    assert "no stats file" in result.stderr
    assert "Traceback" not in result.stderr


def test_restart_hands_the_udp_socket_over_too(opskit: Invoke, forwarder: StartForwarder) -> None:
    """With --udp, datagrams to the port are still answered after `proxy restart`, by the new process,
    and the restart says that each UDP client's next datagram opens a new flow toward the new host."""
    with udp_echo_backend() as backend:
        port = free_port(udp_too=True)
        fwd = forwarder(f"127.0.0.1:{backend}", "--udp", port=port)
        new_pid = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            try:
                client.sendto(b"one", ("127.0.0.1", port))
                assert client.recvfrom(64)[0] == b"one"
                fwd.wait_stats(lambda s: s["udp"]["active_flows"] == 1)
                result = opskit(
                    "proxy", "restart", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK
                )
                new_pid = int(result.stdout.split("pid ")[1].split()[0])
                assert (
                    "UDP flows restart: 1 client's next datagram opens a new flow toward the new host"
                    in result.stdout
                )
                client.sendto(b"two", ("127.0.0.1", port))
                assert client.recvfrom(64)[0] == b"two"
                assert fwd.proc.wait(timeout=10) == 0  # the old one had only a UDP flow to drain
                stats = fwd.wait_stats(lambda s: s["pid"] == new_pid and s["udp"]["flows"] == 1)
                assert stats["carries"] == ["tcp", "udp"]
            finally:
                if new_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(new_pid, signal.SIGTERM)


def test_stop_after_a_restart_stops_the_draining_process_too(
    opskit: Invoke, forwarder: StartForwarder
) -> None:
    """`proxy stop` after a restart also ends the old process, and the final stats show no one active."""
    with echo_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--drain-timeout", "1s")
        long_lived = socket.create_connection((fwd.host, fwd.port), timeout=5)
        try:
            assert echo_roundtrip(long_lived, b"hi") == b"hi"
            opskit("proxy", "restart", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK)
            fwd.wait_stats(lambda s: s["pid"] != fwd.pid and s["active"] == 1)

            opskit("proxy", "stop", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK)

            assert fwd.proc.wait(timeout=10) == 0
            final = fwd.stats()
            assert (final["state"], final["active"], final["cut"]) == ("stopped", 0, 1)
        finally:
            long_lived.close()
