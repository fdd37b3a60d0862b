"""The built-in engine under real traffic: bytes, half-close, TLS, PROXY protocol, limits and failures."""

from __future__ import annotations

import hashlib
import resource
import socket
import ssl
import subprocess
import time

import pytest

from tests.proxy.clients import (
    blackhole_backend,
    fd_count,
    http_get,
    late_reply_backend,
    read_to_eof,
    rss_kib,
)
from tests.proxy.conftest import StartForwarder
from tests.servers.common import free_port, require_binary, wait_tcp
from tests.servers.nginx import BIG_SIZE, Nginx

pytestmark = pytest.mark.proxy


def test_50mib_body_arrives_byte_exact(nginx: Nginx, forwarder: StartForwarder) -> None:
    """A 50 MiB download through the bridge has the same sha256 as the file on the new host."""
    fwd = forwarder(nginx.http)

    with socket.create_connection((fwd.host, fwd.port), timeout=20) as sock:
        sock.sendall(b"GET /50m.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        data = read_to_eof(sock)
    body = data.partition(b"\r\n\r\n")[2]

    assert len(body) == BIG_SIZE
    assert hashlib.sha256(body).hexdigest() == nginx.big_sha256
    stats = fwd.wait_stats(lambda s: s["active"] == 0 and s["bytes_out"] == len(data))
    assert stats["clients"][0]["bytes_out"] == len(data)


def _half_close_exchange(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=6) as sock:
        sock.sendall(b"q" * 4096)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


@pytest.mark.parametrize("loop", ["uvloop", "stdlib"])
def test_reply_after_client_fin_still_arrives(forwarder: StartForwarder, loop: str) -> None:
    """A client that sends FIN still gets the whole reply the backend sends 1.5 s later (either loop)."""
    with late_reply_backend(delay_s=1.5) as backend_port:
        fwd = forwarder(f"127.0.0.1:{backend_port}", *(["--no-uvloop"] if loop == "stdlib" else []))

        reply = _half_close_exchange(fwd.port)

    assert len(reply) == 65536
    fwd.wait_stats(lambda s: s["active"] == 0 and s["bytes_out"] == 65536)


def test_socat_truncates_the_same_late_reply() -> None:
    """The peer we replace (socat with its defaults) loses a reply sent 1.5 s after the client's FIN."""
    socat = require_binary("socat")
    with late_reply_backend(delay_s=1.5) as backend_port:
        port = free_port()
        proc = subprocess.Popen(
            [
                socat,
                f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:127.0.0.1:{backend_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_tcp("127.0.0.1", port)
            reply = _half_close_exchange(port)
        finally:
            proc.terminate()
            proc.wait(timeout=5)

    assert len(reply) < 65536


def test_tls_passes_through_with_the_new_hosts_certificate(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """A TLS client through the bridge sees nginx's own certificate and gets its answer."""
    fwd = forwarder(nginx.tls)
    context = ssl.create_default_context(cafile=str(nginx.cert_pem))
    expected_der = ssl.PEM_cert_to_DER_cert(nginx.cert_pem.read_text())

    with (
        socket.create_connection((fwd.host, fwd.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="new-host.example.test") as tls,
    ):
        seen_der = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET /echo-addr HTTP/1.0\r\nHost: new-host.example.test\r\n\r\n")
        answer = read_to_eof(tls)

    assert seen_der == expected_der
    assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_gives_nginx_the_real_client(
    nginx: Nginx, forwarder: StartForwarder, version: str
) -> None:
    """With --proxy-protocol, nginx's PROXY port sees the client's own address (127.0.0.7), not the bridge's."""
    fwd = forwarder(nginx.pp, "--proxy-protocol", version)

    status, body = http_get(fwd.host, fwd.port, "/", bind="127.0.0.7")

    assert status == 200
    assert body.split() == [b"127.0.0.7", b"127.0.0.1"]
    stats = fwd.wait_stats(lambda s: s["total"] == 1 and s["active"] == 0)
    assert stats["clients"][0]["address"] == "127.0.0.7"
    assert "127.0.0.7" in (nginx.prefix / "pp.log").read_text()


def test_thousand_simultaneous_connections_are_all_served(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """1000 clients connected at once all get their answer, and the stats count all of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    fwd = forwarder(nginx.http)
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection((fwd.host, fwd.port), timeout=10)
            socks.append(sock)
        fwd.wait_stats(lambda s: s["active"] == 1000, timeout_s=10)
        for sock in socks:
            sock.sendall(b"GET /1k.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        answers = [read_to_eof(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()

    assert sum(a.startswith(b"HTTP/1.1 200") and len(a) > 1024 for a in answers) == 1000
    stats = fwd.wait_stats(lambda s: s["active"] == 0)
    assert stats["total"] == 1000
    assert stats["errors"] == 0


@pytest.mark.parametrize("loop", ["uvloop", "stdlib"])
def test_slow_reader_does_not_grow_memory(
    nginx: Nginx, forwarder: StartForwarder, loop: str
) -> None:
    """A client reading a 50 MiB file slowly keeps the bridge's memory flat (backpressure, either loop)."""
    fwd = forwarder(nginx.http, *(["--no-uvloop"] if loop == "stdlib" else []))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect((fwd.host, fwd.port))
        before_kib = rss_kib(fwd.pid)
        sock.sendall(b"GET /50m.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        peak_kib, received = before_kib, 0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            received += len(sock.recv(16 * 1024))
            time.sleep(0.01)
            peak_kib = max(peak_kib, rss_kib(fwd.pid))

    assert 0 < received < BIG_SIZE // 4  # the reader really was slow
    assert peak_kib - before_kib < 20 * 1024, f"RSS grew {peak_kib - before_kib} KiB"


def test_refused_upstream_is_a_counted_error_not_a_crash(forwarder: StartForwarder) -> None:
    """When the new host refuses, each client is closed and counted as an error; the bridge keeps serving."""
    fwd = forwarder(f"127.0.0.1:{free_port()}")

    for _ in range(2):
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            sock.sendall(b"hello")
            assert read_to_eof(sock) == b""

    stats = fwd.wait_stats(lambda s: s["errors"] == 2 and s["active"] == 0)
    assert stats["clients"][0]["errors"] == 2
    assert fwd.proc.poll() is None
    log = fwd.log()
    assert log.count("Connection refused") == 2
    assert "Traceback" not in log


def test_upstream_timeout_is_a_counted_error(forwarder: StartForwarder) -> None:
    """A new host that never answers the connect closes the client after --connect-timeout, with an error."""
    with blackhole_backend() as port:
        fwd = forwarder(f"127.0.0.1:{port}", "--connect-timeout", "500ms")
        started = time.monotonic()
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            assert read_to_eof(sock) == b""
        waited_s = time.monotonic() - started

        stats = fwd.wait_stats(lambda s: s["errors"] == 1 and s["active"] == 0)

    assert 0.4 < waited_s < 3
    assert stats["clients"][0]["errors"] == 1
    assert "did not answer within 0.5s" in fwd.log()
    assert "Traceback" not in fwd.log()


@pytest.mark.slow
def test_no_descriptor_leaks_after_ten_thousand_connections(
    nginx: Nginx, forwarder: StartForwarder
) -> None:
    """After 10,000 connections (answered, reset, or closed silently) the bridge holds no extra descriptors."""
    fwd = forwarder(nginx.http)
    http_get(fwd.host, fwd.port, "/1k.txt")  # warm up: the executor thread and lazy imports
    fwd.wait_stats(lambda s: s["active"] == 0)
    before = fd_count(fwd.pid)

    request = b"GET /1k.txt HTTP/1.0\r\nHost: x\r\n\r\n"
    linger_rst = b"\x01\x00\x00\x00\x00\x00\x00\x00"
    for i in range(10_000):
        with socket.create_connection((fwd.host, fwd.port), timeout=5) as sock:
            kind = i % 4
            if kind == 0:
                sock.sendall(request)
                read_to_eof(sock)
            elif kind == 1:
                sock.sendall(request)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)  # RST mid-reply
            elif kind == 2:
                sock.shutdown(socket.SHUT_WR)
                read_to_eof(sock)
            # kind 3: connect and close without a byte

    stats = fwd.wait_stats(lambda s: s["active"] == 0 and s["total"] >= 10_001, timeout_s=15)
    time.sleep(0.3)
    assert fd_count(fwd.pid) <= before
    assert stats["errors"] == 0
