"""proxy.start takes the old service's port the moment it is free: no client refused in between (#11)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from opskit.actions import load
from opskit.actions.params import Params
from opskit.proxy import bridge
from tests.dns.context import PlainContext
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture


def _get_health(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        return conn.recv(100)


def test_the_bridge_takes_the_port_when_the_old_service_lets_go(
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """Started while the port is still taken, the bridge takes it when it is freed; no client is refused meanwhile."""
    port = free_port()
    old_service = socket.create_server(("127.0.0.1", port))
    stats = tmp_path / "stats.json"
    action = load("proxy.start").from_params(
        Params({"listen": f"127.0.0.1:{port}", "to": f"127.0.0.1:{health_http.port}",
                "stats_file": str(stats), "bind_timeout": "10s"})
    )  # fmt: skip
    ctx = PlainContext(state_dir=tmp_path)
    outcome: list[Any] = []
    starter = threading.Thread(target=lambda: outcome.append(action.run(ctx)), daemon=True)  # type: ignore[attr-defined]
    starter.start()
    try:
        time.sleep(0.3)
        assert not outcome  # still waiting for the port, not failed
        old_service.close()
        refused = 0
        for _ in range(5000):  # bounded: about 5 s of 1 ms tries
            try:
                answer = _get_health(port)
                break
            except ConnectionRefusedError:
                refused += 1
                time.sleep(0.001)
        starter.join(timeout=15)

        assert outcome
        assert outcome[0].ok, outcome[0].summary
        assert answer.startswith(b"HTTP/1.0 200")
        # The listener was held, not re-bound: a client arriving while the bridge process starts waits
        # in its queue (how long that takes is benchmarks' business, not this test's).
        assert refused == 0
    finally:
        if stats.exists():
            bridge.stop(stats_file=stats, timeout_s=5)
