"""Small raw-socket clients and backends for the bridge tests (loopback only, every wait bounded)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GET = b"GET /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n"  # one keep-alive request for nginx's 1 KiB file


def http_get(
    host: str, port: int, path: str, *, bind: str | None = None, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.0 GET over a fresh connection: (status, body)."""
    with socket.create_connection(
        (host, port), timeout=timeout_s, source_address=(bind, 0) if bind else None
    ) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: new-host.example.test\r\n\r\n".encode())
        data = read_to_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def read_response(sock: socket.socket) -> bytes:
    """One whole keep-alive HTTP response (headers and Content-Length body), however TCP splits it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def read_to_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    """Everything the peer sends until it closes (bounded by the socket's timeout and `limit`)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith("VmRSS:"):
                return int(row.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def serving(listener: socket.socket, handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """Accept on `listener` (bounded to 60 s) and hand each connection to `handle` in its own thread; the port."""
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept_loop() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def _loopback_listener(backlog: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


@contextmanager
def echo_backend() -> Iterator[int]:
    """A backend that echoes every byte back on every connection until the client closes; its port."""

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)

    with serving(_loopback_listener(64), echo) as port:
        yield port


def echo_roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload` to an echo backend and read back as many bytes (fewer if the peer closes)."""
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@contextmanager
def late_reply_backend(delay_s: float, reply_size: int = 65536) -> Iterator[int]:
    """A backend that reads until the client's FIN, waits `delay_s`, then replies and closes; its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            read_to_eof(conn)
            time.sleep(delay_s)
            try:
                conn.sendall(b"r" * reply_size)
            except OSError:
                return

    with serving(listener, serve_one) as port:
        yield port


@contextmanager
def silent_backend() -> Iterator[int]:
    """A backend that accepts and never sends or closes (for reapers and timeouts); its port."""
    held: list[socket.socket] = []
    try:
        with serving(_loopback_listener(64), held.append) as port:
            yield port
    finally:
        for conn in held:
            conn.close()


@contextmanager
def udp_echo_backend() -> Iterator[int]:
    """A UDP server on loopback that sends every datagram back to its sender; its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


@contextmanager
def blackhole_backend() -> Iterator[int]:
    """A port whose accept queue is full, so new connects hang in SYN (an upstream that times out)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # Linux queues backlog+1 connections; the next SYNs are dropped
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            fillers.append(s)
            if s.connect_ex(("127.0.0.1", port)) not in (0, 115):  # 115: EINPROGRESS
                break
        time.sleep(0.2)
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()
