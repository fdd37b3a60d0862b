"""The hot-restart hand-off listener of a running bridge survives whatever a local peer sends it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from opskit.errors import ExitCode
from opskit.proxy.forwarder import HANDOFF_READY_TIMEOUT_S, handoff_address
from tests.conftest import Invoke
from tests.proxy.clients import echo_backend, echo_roundtrip
from tests.proxy.conftest import StartForwarder
from tests.proxy.test_forwarder_restart import _hammer

pytestmark = pytest.mark.proxy

# Requests that are not `takeover PID`: each must leave the hand-off listener serving.
GARBAGE = [
    b"takeover x\n",
    b"takeover\n",
    b"takeover -1\n",
    b"takeover 99999999999999999999999999\n",
    b"\xff\xfe\x00garbage\n",
    b"x" * 300,  # past the request size limit, no newline
    b"takeov",  # cut off midway: the peer disconnects
    b"",  # connects and says nothing, then disconnects
]


def _ask(pid: int, request: bytes) -> bytes:
    """Send one request to the bridge's hand-off socket; what it answered before closing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.settimeout(5)
        peer.connect(handoff_address(pid))
        peer.sendall(request)
        peer.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := peer.recv(4096):
                answer += chunk
        return answer


def test_garbage_on_the_hand_off_socket_does_not_stop_a_later_restart(
    opskit: Invoke, forwarder: StartForwarder
) -> None:
    """Malformed, cut-off and empty hot-restart requests get an error line, and a later
    `proxy restart`, even with a silent peer connected ahead of it, takes over refusing no client."""
    with echo_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}")
        answers = {request: _ask(fwd.pid, request) for request in GARBAGE}
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stop, results = threading.Event(), []
        new_pid = 0
        try:
            silent.connect(handoff_address(fwd.pid))  # never sends a byte
            with socket.create_connection((fwd.host, fwd.port), timeout=5) as client:
                assert echo_roundtrip(client, b"while it waits") == b"while it waits"
            hammer = threading.Thread(target=_hammer, args=(fwd.port, stop, results), daemon=True)
            hammer.start()
            started = time.monotonic()
            result = opskit(
                "proxy", "restart", "--stats-file", str(fwd.stats_file), expect=ExitCode.OK
            )
            restart_s = time.monotonic() - started
            new_pid = int(result.stdout.split("pid ")[1].split()[0])
            time.sleep(0.2)
            stop.set()
            hammer.join(timeout=25)
            fwd.wait_stats(lambda s: s["pid"] == new_pid and s["total"] == len(results) + 1)
        finally:
            stop.set()
            silent.close()
            if new_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(new_pid, signal.SIGTERM)

        assert fwd.proc.wait(timeout=10) == 0
        assert results, "the hammer made no connection"
        assert set(results) == {"ok"}, [r for r in results if r != "ok"][:3]
        for request, answer in answers.items():
            assert answer.startswith(b"error: "), (request, answer)
        assert restart_s < HANDOFF_READY_TIMEOUT_S
        log = fwd.log()
        assert "Traceback" not in log
        assert log.count("hot-restart request") == 1, log  # a stray peer is logged once
        assert f"handed the listener over to pid {new_pid}" in log
