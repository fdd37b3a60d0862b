"""A tiny HTTP server on 127.0.0.1 (stdlib, in a thread) with the answers health checks meet.

/health 200 "healthy", /down 503, /moved 301, /slow 200 after 2 s, /auth 200 only with
`Authorization: Bearer lab-token`, else 401.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LAB_TOKEN = "lab-token"  # noqa: S105 - a lab-only token the test server expects


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = 404, b"not found"
        if self.path == "/health":
            status, body = 200, b"healthy\n"
        elif self.path == "/down":
            status, body = 503, b"maintenance\n"
        elif self.path == "/moved":
            status, body = 301, b""
        elif self.path == "/slow":
            time.sleep(2)
            status, body = 200, b"late\n"
        elif self.path == "/auth":
            # Slow enough that a test watching `ps` surely sees the client process while it waits.
            time.sleep(0.5)
            ok = self.headers.get("Authorization") == f"Bearer {LAB_TOKEN}"
            status, body = (200, b"welcome\n") if ok else (401, b"who are you\n")
        self.send_response(status)
        if status == 301:
            self.send_header("Location", "/health")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        return


@dataclass(frozen=True)
class HealthHttp:
    """Where the server listens."""

    host: str
    port: int

    def url(self, path: str) -> str:
        """The full URL of `path` on this server."""
        return f"http://{self.host}:{self.port}{path}"


@pytest.fixture(scope="session")
def health_http() -> Iterator[HealthHttp]:
    """The health-check HTTP server for the whole session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield HealthHttp("127.0.0.1", int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
