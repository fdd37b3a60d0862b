"""HTTP mode: mitmproxy embedded, counting requests per method/host/path and adding X-Forwarded-For."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opskit.proxy.config import BridgeConfig
from opskit.proxy.detach import config_to_json
from tests.proxy.clients import read_to_eof
from tests.servers.common import free_port, wait_stats
from tests.servers.nginx import Nginx

pytestmark = pytest.mark.proxy


def get(
    port: int, path: str, *, bind: str, host: str = "new-host.example.test", extra: str = ""
) -> tuple[int, bytes]:
    """One HTTP/1.1 GET with Connection: close from a chosen source address: (status, body)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(bind, 0)
    ) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        data = read_to_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.headers.get('Host')}|{self.headers.get('X-Forwarded-For')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_backend() -> Iterator[int]:
    """A tiny HTTP server that answers with the Host and X-Forwarded-For it received."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def start_http_bridge(tmp_path: Path, to: str) -> tuple[subprocess.Popen[str], BridgeConfig]:
    config = BridgeConfig(
        listen=f"127.0.0.1:{free_port()}",
        to=to,
        stats_file=tmp_path / "http.json",
        mode="http",
        stats_interval_s=0.1,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "opskit.proxy.http_mode", config_to_json(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_stats(config.stats_file, lambda s: s["pid"] == proc.pid and s["state"] == "running", 15.0)
    return proc, config


@pytest.fixture
def http_bridge(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start HTTP-mode bridges on demand; SIGTERM them at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(to: str) -> tuple[subprocess.Popen[str], BridgeConfig]:
        proc, config = start_http_bridge(tmp_path / str(len(procs)), to)
        procs.append(proc)
        return proc, config

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_requests_are_counted_and_nginx_sees_the_client(nginx: Nginx, http_bridge: Any) -> None:
    """Requests are counted by method, host and path, and nginx sees the client in X-Forwarded-For."""
    proc, config = http_bridge(nginx.http)
    port = config.listen_host_port[1]

    assert get(port, "/1k.txt", bind="127.0.0.61")[0] == 200
    assert get(port, "/1k.txt?x=1", bind="127.0.0.61")[0] == 200
    status, body = get(port, "/echo-addr", bind="127.0.0.62")

    assert status == 200
    assert body.decode().split() == ["127.0.0.1", "127.0.0.62"]
    stats = wait_stats(config.stats_file, lambda s: s["total"] == 3 and s["active"] == 0, 15.0)
    assert stats["requests"] == {
        "GET new-host.example.test /1k.txt": 2,
        "GET new-host.example.test /echo-addr": 1,
    }
    clients = {c["address"]: c for c in stats["clients"]}
    assert clients["127.0.0.61"]["total"] == 2
    assert clients["127.0.0.61"]["bytes_out"] > 2 * 1024
    assert stats["engine"] == "http"

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "CancelledError" not in out
    assert "Traceback" not in out
    assert json.loads(config.stats_file.read_text())["ended"] == "sigterm"


def test_host_is_kept_and_forwarded_for_is_appended(echo_backend: int, http_bridge: Any) -> None:
    """The new host gets the client's Host header unchanged and our address appended to X-Forwarded-For."""
    _, config = http_bridge(f"127.0.0.1:{echo_backend}")
    port = config.listen_host_port[1]

    _, plain = get(port, "/", bind="127.0.0.63", host="shop.example.test")
    _, chained = get(
        port,
        "/",
        bind="127.0.0.63",
        host="shop.example.test",
        extra="X-Forwarded-For: 203.0.113.9\r\n",
    )

    assert plain.decode() == "shop.example.test|127.0.0.63"
    assert chained.decode() == "shop.example.test|203.0.113.9, 127.0.0.63"


def test_refused_new_host_is_a_per_client_error(tmp_path: Path, http_bridge: Any) -> None:
    """When the new host refuses, the client gets an error answer and the error is counted for it."""
    _, config = http_bridge(f"127.0.0.1:{free_port()}")

    status, _ = get(config.listen_host_port[1], "/", bind="127.0.0.64")

    assert status == 502
    stats = wait_stats(config.stats_file, lambda s: s["errors"] >= 1, 15.0)
    assert [(c["address"], c["errors"]) for c in stats["clients"]] == [("127.0.0.64", 1)]


def test_sigterm_stops_accepting_and_lets_the_open_client_finish(
    nginx: Nginx, http_bridge: Any
) -> None:
    """After SIGTERM a new client is refused while an open keep-alive client still gets its answer."""
    proc, config = http_bridge(nginx.http)
    with socket.create_connection(config.listen_host_port, timeout=5) as sock:
        sock.sendall(b"HEAD /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        stopping = wait_stats(config.stats_file, lambda s: s["state"] == "stopping", 15.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(config.listen_host_port, timeout=1).close()
        sock.sendall(b"HEAD /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    assert proc.wait(timeout=15) == 0
    final = json.loads(config.stats_file.read_text())
    assert stopping["ended"] == "sigterm"
    assert (final["state"], final["ended"]) == ("stopped", "sigterm")
