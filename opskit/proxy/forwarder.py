"""opskit's built-in bridge: a TCP forwarder from the old host to the new one, with per-client counters.

One standard-library-only file on purpose: opskit copies it over SFTP to an old host and runs it there as
`python3 forwarder.py --listen HOST:PORT --to HOST:PORT --stats-file F`. It imports nothing from opskit and
runs on Python 3.8+; uvloop is used when importable.

Design (measured in /work/shared/reference/proxy-anchors.md, issue #5):
- An `asyncio.Protocol` pair; `data_received` writes straight into the other leg's transport. When one
  leg's write buffer is full (`pause_writing`) the other leg stops reading, so a slow reader never makes
  the bridge buffer without bound, and nothing is preallocated per connection.
- Half-close: a FIN on one leg becomes `write_eof()` on the other, and the reply keeps flowing until both
  legs reached EOF (socat truncates replies that come 0.5 s after the client's FIN). A reaper bounds how
  long a half-closed connection may stay idle.
- opskit's own probes are not client traffic: a probe's first bytes are exactly PROBE_LINE. A connection
  enters the counters only once it proves it is not a probe: its first byte in either direction that is
  not the probe line, its close, or PROBE_GRACE_S after it was accepted (a silent pre-connected client
  still counts as active). A probe gets one answer line (is the new host reachable?) and is closed.
- The stats file (keys of opskit/proxy/stats.py) is replaced atomically: temp file in the same directory,
  fsync, os.replace, mode 0600. A restarted bridge continues the per-client table and totals it finds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import errno
import importlib
import ipaddress
import json
import os
import resource
import signal
import socket
import struct
import sys
import tempfile
import time
from typing import IO, Any, cast

PROBE_LINE = b"OPSKIT-BRIDGE-PROBE/1\r\n"
PROBE_GRACE_S = 0.25
PROBE_MAX_S = 10.0
LISTEN_BACKLOG = 4096
# Rewrite the stats file this often even when nothing changed: readers see the bridge lives.
HEARTBEAT_S = 5.0
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

_mono = time.monotonic
_UTC = datetime.timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+; this file also runs on 3.8


def iso(wall: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None."""
    if wall is None:
        return None
    moment = datetime.datetime.fromtimestamp(wall, _UTC)
    return moment.isoformat(timespec="milliseconds")


def parse_iso(text: str) -> float:
    """Seconds since the epoch from an ISO 8601 time (naive times are UTC; a trailing Z is accepted)."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return moment.timestamp()


def parse_duration(text: str) -> float:
    """Seconds from "500ms", "30s", "10m", "24h", "1d" or a bare number."""
    cleaned = text.strip().lower()
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if cleaned.endswith(unit) and cleaned[: -len(unit)].replace(".", "", 1).isdigit():
            return float(cleaned[: -len(unit)]) * factor
    if cleaned.replace(".", "", 1).isdigit():
        return float(cleaned)
    raise argparse.ArgumentTypeError(
        f"expected a duration like 500ms, 30s, 10m or 24h, got {text!r}"
    )


def host_port(text: str) -> tuple[str, int]:
    """("127.0.0.1", 80) from "127.0.0.1:80"; ("::1", 80) from "[::1]:80"."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def plain_ip(address: str) -> str:
    """The client's IP as people write it: an IPv4-mapped IPv6 address becomes plain IPv4."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def proxy_header(version: str, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A PROXY protocol v1 or v2 header saying the connection came from src to dst (haproxy spec)."""
    src_ip, dst_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if src_ip.version != dst_ip.version:
        # A v4 client on a dual-stack listener: describe both ends in the client's family.
        if src_ip.version == 4:
            dst_ip = ipaddress.ip_address("0.0.0.0")  # noqa: S104 - an address in a header, not a bind
        else:
            dst_ip = ipaddress.ip_address("::")
    if version == "v1":
        family = "TCP4" if src_ip.version == 4 else "TCP6"
        return f"PROXY {family} {src_ip} {dst_ip} {src[1]} {dst[1]}\r\n".encode("ascii")
    addresses = src_ip.packed + dst_ip.packed + struct.pack("!HH", src[1], dst[1])
    family_byte = 0x11 if src_ip.version == 4 else 0x21  # AF_INET/AF_INET6 + STREAM
    return (
        PROXY_V2_SIGNATURE
        + bytes([0x21, family_byte])
        + struct.pack("!H", len(addresses))
        + addresses
    )


class Options:
    """The forwarder's settings, as parsed from its command line."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.listen: tuple[str, int] = ns.listen
        self.to: tuple[str, int] = ns.to
        self.stats_file: str | None = ns.stats_file
        self.pid_file: str | None = ns.pid_file
        self.engine: str = ns.engine
        self.max_connections: int = ns.max_connections
        self.idle_timeout_s: float | None = ns.idle_timeout
        self.connect_timeout_s: float = ns.connect_timeout
        self.half_close_timeout_s: float = ns.half_close_timeout
        self.drain_timeout_s: float = ns.drain_timeout
        self.proxy_protocol: str | None = ns.proxy_protocol
        self.nudge_after_s: float | None = ns.nudge_after
        self.nudge_not_before: float | None = ns.nudge_not_before
        self.stats_interval_s: float = ns.stats_interval
        self.use_uvloop: bool = not ns.no_uvloop
        self.quiet: bool = ns.quiet
        self.listen_fd: int | None = ns.listen_fd
        self.bind_retry_s: float = ns.bind_retry


def build_parser() -> argparse.ArgumentParser:
    """The forwarder's command line (opskit.proxy.bridge.forwarder_argv builds the same arguments)."""
    p = argparse.ArgumentParser(
        prog="forwarder.py",
        description="Forward TCP from the old host to the new one, with per-client counters.",
    )
    p.add_argument("--listen", type=host_port, required=True, help="HOST:PORT to accept clients on")
    p.add_argument("--to", type=host_port, required=True, help="HOST:PORT of the new host")
    p.add_argument(
        "--stats-file", help="JSON counters, rewritten atomically at least once a second"
    )
    p.add_argument("--pid-file", help="write this process's id here (removed at exit)")
    p.add_argument("--engine", default="builtin", help=argparse.SUPPRESS)
    p.add_argument("--max-connections", type=int, default=10000)
    p.add_argument("--idle-timeout", type=parse_duration, default=None, help="off by default")
    p.add_argument("--connect-timeout", type=parse_duration, default=5.0)
    p.add_argument("--half-close-timeout", type=parse_duration, default=30.0)
    p.add_argument("--drain-timeout", type=parse_duration, default=10.0)
    p.add_argument("--proxy-protocol", choices=("v1", "v2"), default=None)
    p.add_argument("--nudge-after", type=parse_duration, default=None)
    p.add_argument("--nudge-not-before", type=parse_iso, default=None, help="ISO 8601 time")
    p.add_argument("--stats-interval", type=parse_duration, default=1.0)
    p.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio loop")
    p.add_argument("--quiet", action="store_true", help="do not print the final table")
    # Closing the gap between the old service stopping and the bridge listening (issue #11): the
    # caller binds the port the moment it is free and hands it over (the kernel queues clients while
    # this process starts), or this process retries the bind while the port is still taken.
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--bind-retry", type=parse_duration, default=0.0,
                   help="retry the bind this long while the port is in use (e.g. 30s)")  # fmt: skip
    return p


class Client:
    """Counters for one client IP address."""

    __slots__ = (
        "active",
        "address",
        "bytes_in",
        "bytes_out",
        "errors",
        "first_seen",
        "last_io",
        "total",
    )

    def __init__(self, address: str, first_seen: float, last_io: float) -> None:
        self.address = address
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0
        self.first_seen = first_seen  # wall clock
        self.last_io = last_io  # monotonic clock: cheap to read on every chunk


def _set_socket_options(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass  # the peer may already be gone; the transport will report that itself


class Upstream(asyncio.Protocol):
    """The leg toward the new host; everything it sees goes to its Conn."""

    __slots__ = ("conn",)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.upstream_made(cast("asyncio.Transport", transport))

    def data_received(self, data: bytes) -> None:
        self.conn.from_upstream(data)

    def eof_received(self) -> bool:
        self.conn.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.upstream_lost()

    def pause_writing(self) -> None:
        self.conn.pause_client_reading()

    def resume_writing(self) -> None:
        self.conn.resume_client_reading()


class Conn(asyncio.Protocol):
    """One bridged client connection: the client leg is this protocol, the upstream leg is Upstream."""

    __slots__ = (
        "accepted_at",
        "bridge",
        "client",
        "client_paused",
        "closed",
        "connect_task",
        "connect_timer",
        "counted",
        "eof_client",
        "eof_up",
        "head",
        "last_io",
        "peer",
        "pending",
        "probe",
        "t",
        "up",
        "up_full",
        "waiting_up",
    )

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.t: asyncio.Transport | None = None
        self.up: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self.client: Client | None = None
        self.counted = False
        self.probe = False
        self.head = b""
        self.closed = False
        self.eof_client = False
        self.eof_up = False
        self.up_full = False  # the new host's leg has a full write buffer
        self.waiting_up = False  # client bytes wait for the upstream connect
        self.client_paused = False
        self.pending: list[bytes] | None = None
        self.connect_task: asyncio.Future[Any] | None = None
        self.connect_timer: asyncio.TimerHandle | None = None
        self.accepted_at = self.last_io = _mono()

    # ----- client leg -----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it
        self.t = transport = cast("asyncio.Transport", transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = (plain_ip(str(peer[0])), int(peer[1]))
        bridge = self.bridge
        if bridge.stopping:
            transport.abort()
            return
        if len(bridge.conns) >= bridge.opts.max_connections:
            self.count()
            self.error(
                f"refused: {bridge.opts.max_connections} connections are open (--max-connections)"
            )
            transport.abort()
            return
        _set_socket_options(transport)
        bridge.conns.add(self)
        loop = bridge.loop
        host, port = bridge.opts.to
        self.connect_task = loop.create_task(
            loop.create_connection(lambda: Upstream(self), host, port)
        )
        self.connect_task.add_done_callback(self.connect_done)
        self.connect_timer = loop.call_later(bridge.opts.connect_timeout_s, self.connect_timed_out)

    def data_received(self, data: bytes) -> None:
        if not self.counted:
            if self.probe:
                return
            head = self.head + data
            if PROBE_LINE.startswith(head):
                self.head = head
                if len(head) == len(PROBE_LINE):
                    self.become_probe()
                return
            self.head = b""
            data = head
            self.count()
        self.forward_in(data)

    def forward_in(self, data: bytes) -> None:
        """Client bytes toward the new host (or held until it is connected)."""
        now = _mono()
        self.last_io = now
        bridge = self.bridge
        client = self.client
        assert client is not None  # noqa: S101 - counted connections have a client
        client.last_io = bridge.last_io = now
        size = len(data)
        client.bytes_in += size
        bridge.bytes_in += size
        bridge.dirty = True
        up = self.up
        if up is not None:
            up.write(data)
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            # One read chunk at most waits for the upstream connect: reading pauses until then.
            self.waiting_up = True
            self.sync_client_reading()

    def eof_received(self) -> bool:
        self.eof_client = True
        self.last_io = _mono()
        if self.up is not None and not self.up.is_closing():
            self.up.write_eof()
        if self.eof_up:
            self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        bridge = self.bridge
        bridge.conns.discard(self)
        if not self.counted and not self.probe and self.t is not None and not bridge.stopping_now:
            self.count()
        if self.counted:
            client = self.client
            assert client is not None  # noqa: S101 - counted connections have a client
            now = _mono()
            client.active -= 1
            client.last_io = bridge.last_io = now
            bridge.active -= 1
            bridge.dirty = True
        self.cancel_connect()
        if self.up is not None:
            self.up.close()
        if bridge.stopping:
            bridge.maybe_drained()

    def pause_writing(self) -> None:
        # The client reads slower than the new host sends: stop reading from the new host.
        if self.up is not None and not self.eof_up and not self.up.is_closing():
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and not self.eof_up and not self.up.is_closing():
            self.up.resume_reading()

    # ----- upstream leg -----
    def upstream_made(self, transport: asyncio.Transport) -> None:
        self.cancel_connect_timer()
        if self.closed:
            transport.abort()
            return
        self.up = transport
        _set_socket_options(transport)
        opts = self.bridge.opts
        if opts.proxy_protocol and self.t is not None:
            local = self.t.get_extra_info("sockname") or ("0.0.0.0", 0)  # noqa: S104 - header only
            transport.write(
                proxy_header(opts.proxy_protocol, self.peer, (plain_ip(local[0]), local[1]))
            )
        if self.probe:
            self.answer_probe(b"ok")
            return
        if self.pending:
            for chunk in self.pending:
                transport.write(chunk)
        self.pending = None
        if self.eof_client:
            transport.write_eof()
        if self.waiting_up:
            self.waiting_up = False
            self.sync_client_reading()

    def from_upstream(self, data: bytes) -> None:
        if self.probe:
            return
        if not self.counted:
            self.count()
        now = _mono()
        self.last_io = now
        bridge = self.bridge
        client = self.client
        assert client is not None  # noqa: S101 - counted connections have a client
        client.last_io = bridge.last_io = now
        size = len(data)
        client.bytes_out += size
        bridge.bytes_out += size
        bridge.dirty = True
        if self.t is not None:
            self.t.write(data)

    def upstream_eof(self) -> None:
        self.eof_up = True
        self.last_io = _mono()
        t = self.t
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()
        if self.eof_client:
            self.close()

    def upstream_lost(self) -> None:
        if self.t is not None and not self.closed:
            self.t.close()  # flushes what the new host sent, then FIN

    def pause_client_reading(self) -> None:
        self.up_full = True
        self.sync_client_reading()

    def resume_client_reading(self) -> None:
        self.up_full = False
        self.sync_client_reading()

    def sync_client_reading(self) -> None:
        """Read from the client only while the new host's leg is connected and not full."""
        t = self.t
        if t is None or self.eof_client or t.is_closing():
            return
        want_paused = self.waiting_up or self.up_full
        if want_paused != self.client_paused:
            self.client_paused = want_paused
            if want_paused:
                t.pause_reading()
            else:
                t.resume_reading()

    # ----- connect outcome -----
    def connect_timed_out(self) -> None:
        self.connect_timer = None
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
            self.connect_task = None
            host, port = self.bridge.opts.to
            self.fail(
                f"new host {host}:{port} did not answer within {self.bridge.opts.connect_timeout_s:g}s"
            )

    def connect_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return  # timed out (reported there) or the client left first
        self.connect_task = None
        exc = task.exception()
        if exc is None:
            return
        self.cancel_connect_timer()
        host, port = self.bridge.opts.to
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        self.fail(f"could not connect to the new host {host}:{port}: {reason}")

    def fail(self, reason: str) -> None:
        if self.closed:
            return
        if self.probe:
            self.answer_probe(b"upstream-down " + reason.encode("utf-8", "replace"))
            return
        if not self.counted:
            self.count()
        self.error(reason)
        if self.t is not None:
            self.t.abort()

    def cancel_connect_timer(self) -> None:
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None

    def cancel_connect(self) -> None:
        self.cancel_connect_timer()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.connect_task = None

    # ----- accounting -----
    def count(self) -> None:
        """Enter this connection into the counters (it is not one of opskit's probes)."""
        self.counted = True
        bridge = self.bridge
        client = bridge.client_for(self.peer[0])
        self.client = client
        client.active += 1
        client.total += 1
        client.last_io = bridge.last_io = _mono()
        bridge.active += 1
        bridge.total += 1
        bridge.dirty = True
        if self.head:  # a first chunk that looked like the start of a probe line, but was not
            head, self.head = self.head, b""
            self.forward_in(head)

    def error(self, reason: str) -> None:
        bridge = self.bridge
        if self.client is not None:
            self.client.errors += 1
        bridge.errors += 1
        bridge.dirty = True
        bridge.log(f"client {self.peer[0]}:{self.peer[1]}: {reason}; closed the client connection")

    # ----- probes -----
    def become_probe(self) -> None:
        self.probe = True
        self.head = b""
        if self.up is not None:
            self.answer_probe(b"ok")
        # otherwise the connect outcome answers

    def answer_probe(self, status: bytes) -> None:
        self.cancel_connect()
        if self.up is not None:
            self.up.abort()
            self.up = None
        if self.t is not None and not self.t.is_closing():
            self.t.write(b"OPSKIT-BRIDGE " + status + b"\n")
            self.t.close()

    # ----- closing -----
    def close(self) -> None:
        """Close both legs, letting buffered bytes go out first."""
        if self.t is not None:
            self.t.close()
        if self.up is not None:
            self.up.close()

    def abort(self) -> None:
        """Close both legs now, dropping buffered bytes."""
        if self.t is not None:
            self.t.abort()
        if self.up is not None:
            self.up.abort()


class Bridge:
    """The listener, its connections and counters, and the stats file."""

    def __init__(self, opts: Options, loop: asyncio.AbstractEventLoop, log: IO[str]) -> None:
        self.opts = opts
        self.loop = loop
        self.log_stream = log
        self.conns: set[Conn] = set()
        self.clients: dict[str, Client] = {}
        self.active = self.total = self.bytes_in = self.bytes_out = self.errors = 0
        self.last_io: float | None = None  # monotonic
        self.started_at = time.time()
        self.state = "running"
        self.ended: str | None = None
        self.cut = 0  # bridged connections closed at the drain deadline (the stats file's "cut")
        self.stopping = False
        self.stopping_now = False
        self.dirty = True
        self.writing: asyncio.Future[None] | None = None  # the stats write in flight, if any
        self.last_write = 0.0
        self.server: asyncio.AbstractServer | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.drain_deadline: float | None = None

    def log(self, message: str) -> None:
        self.log_stream.write(f"{iso(time.time())} opskit-bridge: {message}\n")
        self.log_stream.flush()

    def client_for(self, address: str) -> Client:
        client = self.clients.get(address)
        if client is None:
            client = Client(address, time.time(), _mono())
            self.clients[address] = client
        return client

    # ----- the stats file -----
    def restore(self) -> None:
        """Continue the per-client table and totals of a previous run's stats file."""
        path = self.opts.stats_file
        if not path or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            wall, mono = time.time(), _mono()
            for key in ("total", "bytes_in", "bytes_out", "errors"):
                setattr(self, key, int(data.get(key) or 0))
            if data.get("last_activity"):
                self.last_io = mono - (wall - parse_iso(data["last_activity"]))
            for row in data.get("clients") or []:
                client = Client(
                    str(row["address"]),
                    parse_iso(row["first_seen"]),
                    mono - (wall - parse_iso(row["last_seen"])),
                )
                client.total = int(row.get("total") or 0)
                client.bytes_in = int(row.get("bytes_in") or 0)
                client.bytes_out = int(row.get("bytes_out") or 0)
                client.errors = int(row.get("errors") or 0)
                self.clients[client.address] = client
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.log(f"{path}: could not continue the previous table ({exc}); starting a new one")
            self.clients.clear()
            self.total = self.bytes_in = self.bytes_out = self.errors = 0
            self.last_io = None
            return
        self.log(f"{path}: continuing {len(self.clients)} clients and {self.total} connections")

    def snapshot(self) -> dict[str, Any]:
        """The stats file's content now (keys of opskit.proxy.stats.BridgeStats)."""
        wall, mono = time.time(), _mono()

        def wall_of(last_io: float) -> str | None:
            return iso(wall - (mono - last_io))

        clients = sorted(self.clients.values(), key=lambda c: c.last_io, reverse=True)
        lhost, lport = self.opts.listen
        thost, tport = self.opts.to
        return {
            "listener": f"[{lhost}]:{lport}" if ":" in lhost else f"{lhost}:{lport}",
            "target": f"[{thost}]:{tport}" if ":" in thost else f"{thost}:{tport}",
            "engine": self.opts.engine,
            "mode": "tcp",
            "started_at": iso(self.started_at),
            "updated_at": iso(wall),
            "pid": os.getpid(),
            "state": self.state,
            "active": self.active,
            "total": self.total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors": self.errors,
            "last_activity": None if self.last_io is None else wall_of(self.last_io),
            "clients": [
                {
                    "address": c.address,
                    "active": c.active,
                    "total": c.total,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "first_seen": iso(c.first_seen),
                    "last_seen": wall_of(c.last_io),
                    "errors": c.errors,
                }
                for c in clients
            ],
            "ended": self.ended,
            "cut": self.cut,
            "requests": {},
        }

    def write_stats_now(self) -> dict[str, Any]:
        """Write the stats file synchronously (start and end)."""
        data = self.snapshot()
        self.dirty = False
        self.last_write = _mono()
        if self.opts.stats_file:
            write_atomic(self.opts.stats_file, data)
        return data

    def write_stats_soon(self) -> None:
        """Write the stats file from a worker thread, so a slow disk never stalls forwarding."""
        if self.writing is not None or not self.opts.stats_file:
            return
        data = self.snapshot()
        self.dirty = False
        self.last_write = _mono()
        future = self.loop.run_in_executor(None, write_atomic, self.opts.stats_file, data)
        self.writing = future
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self.writing = None
        exc = future.exception()
        if exc is not None:
            self.log(f"{self.opts.stats_file}: could not write the stats file: {exc}")
            self.dirty = True

    # ----- the periodic sweep: grace, reaper, idle timeout, nudge, stats -----
    def tick_interval(self) -> float:
        candidates = [
            1.0,
            self.opts.stats_interval_s,
            PROBE_GRACE_S,
            self.opts.half_close_timeout_s / 4,
        ]
        if self.opts.idle_timeout_s:
            candidates.append(self.opts.idle_timeout_s / 4)
        if self.opts.nudge_after_s is not None:
            candidates.append(max(self.opts.nudge_after_s / 4, 0.05))
        return max(0.05, min(candidates))

    def sweep(self) -> None:
        now = _mono()
        opts = self.opts
        nudge = opts.nudge_after_s is not None and (
            opts.nudge_not_before is None or time.time() >= opts.nudge_not_before
        )
        for conn in list(self.conns):
            if conn.closed:
                continue
            if not conn.counted:
                if conn.probe:
                    if now - conn.accepted_at > PROBE_MAX_S:
                        conn.abort()
                    continue
                if now - conn.accepted_at >= PROBE_GRACE_S:
                    conn.count()
                else:
                    continue
            idle = now - conn.last_io
            who = f"{conn.peer[0]}:{conn.peer[1]}"
            if (conn.eof_client or conn.eof_up) and idle > opts.half_close_timeout_s:
                side = "client" if conn.eof_client else "new host"
                self.log(f"client {who}: half-closed by the {side} and idle {idle:.0f}s; closed")
                conn.abort()
            elif opts.idle_timeout_s and idle > opts.idle_timeout_s:
                self.log(f"client {who}: idle {idle:.0f}s (--idle-timeout); closed")
                conn.close()
            elif nudge and opts.nudge_after_s is not None and idle > opts.nudge_after_s:
                self.log(
                    f"nudged client {who}: idle {idle:.1f}s; closed so it reconnects and re-resolves"
                )
                conn.close()
        if self.stopping and self.drain_deadline is not None and now >= self.drain_deadline:
            self.finish_drain()
        if (self.dirty and now - self.last_write >= opts.stats_interval_s) or (
            now - self.last_write >= HEARTBEAT_S
        ):
            self.write_stats_soon()

    async def ticker(self) -> None:
        interval = self.tick_interval()
        while not self.done.done():
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - the bridge must outlive a bug in its bookkeeping
                self.log(f"internal error in the periodic sweep: {exc!r}")
            await asyncio.sleep(interval)

    # ----- stopping -----
    def stop(self, reason: str) -> None:
        """First signal: stop accepting and let connections finish. Second: close them now."""
        if self.stopping:
            self.log(f"{reason} again: closing {len(self.conns)} bridged connections now")
            self.finish_drain()
            return
        self.stopping = True
        self.ended = reason
        self.state = "stopping"
        if self.server is not None:
            self.server.close()
        self.drain_deadline = _mono() + self.opts.drain_timeout_s
        noun = "connection" if len(self.conns) == 1 else "connections"
        self.log(
            f"{reason}: not accepting; {len(self.conns)} bridged {noun} may finish "
            f"within {self.opts.drain_timeout_s:g}s (--drain-timeout)"
        )
        self.write_stats_soon()
        self.maybe_drained()

    def maybe_drained(self) -> None:
        if not self.conns and not self.done.done():
            self.log("every bridged connection finished")
            self.done.set_result(None)

    def finish_drain(self) -> None:
        self.stopping_now = True
        cut = [conn for conn in self.conns if conn.counted]
        if cut:
            noun = "connection" if len(cut) == 1 else "connections"
            self.log(f"closing {len(cut)} bridged {noun} (drain timeout or a second signal)")
        self.cut += len(cut)
        for conn in list(self.conns):
            conn.abort()
        if not self.done.done():
            self.done.set_result(None)


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON: temp file in the same directory, fsync, rename; mode 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stats-", suffix=".tmp", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit: each bridged connection needs two descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def format_table(data: dict[str, Any]) -> str:
    """The final table, in plain text (rich is not available on an old host)."""
    lines = [
        f"bridge {data['listener']} -> {data['target']}: {data['state']}"
        + (f" ({data['ended']})" if data.get("ended") else "")
        + (f", {data['cut']} cut at the drain timeout" if data.get("cut") else ""),
        f"connections {data['total']}, active {data['active']}, errors {data['errors']}, "
        f"bytes in {data['bytes_in']}, bytes out {data['bytes_out']}, "
        f"last activity {data['last_activity'] or 'never'}",
    ]
    rows = [("client", "active", "total", "bytes in", "bytes out", "errors", "last seen")]
    rows += [
        (
            c["address"],
            str(c["active"]),
            str(c["total"]),
            str(c["bytes_in"]),
            str(c["bytes_out"]),
            str(c["errors"]),
            c["last_seen"],
        )
        for c in data["clients"]
    ]
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += [
            "  ".join(
                v.ljust(w)
                for v, w in zip(r, widths)  # noqa: B905 - strict= is 3.10+; this file also runs on 3.8
            ).rstrip()
            for r in rows
        ]
    else:
        lines.append("no clients")
    return "\n".join(lines) + "\n"


async def serve(opts: Options, log: IO[str], out: IO[str]) -> int:
    """Accept and forward until a signal, then drain; the process exit code."""
    loop = asyncio.get_running_loop()
    bridge = Bridge(opts, loop, log)
    limit = raise_fd_limit()
    if limit < 2 * opts.max_connections:
        bridge.log(
            f"only {limit} file descriptors: at most about {(limit - 64) // 2} connections fit"
        )
    owner = running_owner(opts.stats_file)
    if owner is not None:
        bridge.log(
            f"error: {opts.stats_file} belongs to the bridge that runs as pid {owner}: "
            "stop it first (opskit proxy stop) or give another --stats-file"
        )
        return 1
    bridge.restore()
    host, port = opts.listen
    try:
        bridge.server = await listen(opts, lambda: Conn(bridge))
    except OSError as exc:
        bridge.state, bridge.ended = "stopped", f"error: cannot listen on {host}:{port}: {why(exc)}"
        bridge.log(bridge.ended)
        if opts.stats_file:
            bridge.write_stats_now()
        return 1
    for signum, name in ((signal.SIGTERM, "sigterm"), (signal.SIGINT, "sigint")):
        loop.add_signal_handler(signum, bridge.stop, name)
    if opts.pid_file:
        write_pid(opts.pid_file)
    flavour = type(loop).__module__.split(".")[0]
    bridge.log(
        f"listening on {host}:{port}, forwarding to {opts.to[0]}:{opts.to[1]} ({flavour} loop)"
    )
    if opts.stats_file:
        bridge.write_stats_now()
    ticker = loop.create_task(bridge.ticker())
    try:
        await bridge.done
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        ticker.cancel()
        await finish(bridge, out)
    return 0


async def listen(opts: Options, factory: Any) -> asyncio.Server:
    """The listening server: on the socket handed over, or bound here, retried while the port is taken."""
    loop = asyncio.get_running_loop()
    if opts.listen_fd is not None:
        sock = socket.socket(fileno=opts.listen_fd)
        return await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
    host, port = opts.listen
    deadline = loop.time() + opts.bind_retry_s
    while True:  # bounded by --bind-retry
        try:
            return await loop.create_server(
                factory, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.005)


async def finish(bridge: Bridge, out: IO[str]) -> None:
    """Close what is left, write the final stats file and print the final table."""
    if bridge.server is not None:
        bridge.server.close()
    for conn in list(bridge.conns):
        conn.abort()
    await asyncio.sleep(0)  # let the transports run connection_lost
    if bridge.writing is not None:
        # An older snapshot still being written must not replace the final one.
        await asyncio.wait([bridge.writing], timeout=10)
    bridge.state = "stopped"
    if bridge.ended is None:
        bridge.ended = "error: stopped unexpectedly"
    data = bridge.write_stats_now()
    if bridge.opts.pid_file:
        remove_quietly(bridge.opts.pid_file)
    if not bridge.opts.quiet:
        out.write(format_table(data))
        out.flush()


def running_owner(stats_file: str | None) -> int | None:
    """The pid of another live bridge that writes this stats file, or None (free to use)."""
    if not stats_file:
        return None
    try:
        with open(stats_file, encoding="utf-8") as f:
            data = json.load(f)
        pid = int(data.get("pid") or 0)
        state = data.get("state")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if state == "stopped" or pid <= 0 or pid == os.getpid() or not pid_alive(pid):
        return None
    return pid


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie has exited: only its parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) said it exists
    return state not in ("Z", "X")


_LISTEN_HINTS = {
    errno.EADDRINUSE: "is the old service or another bridge still listening there? (ss -ltnp)",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "this host has no such address (ip -br addr)",
}


def why(exc: OSError) -> str:
    """An OSError the way an operator reads it: the plain reason and, when known, what to check."""
    if exc.errno is None:
        return str(exc)
    hint = _LISTEN_HINTS.get(exc.errno)
    reason = os.strerror(exc.errno).lower()
    return f"{reason}: {hint}" if hint else reason


def write_pid(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop when importable and wanted (about 20% faster here), else the standard loop."""
    if use_uvloop:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def run(opts: Options, log: IO[str] = sys.stderr, out: IO[str] = sys.stdout) -> int:
    """Run the bridge in this thread until SIGTERM/SIGINT; the exit code."""
    loop = new_loop(opts.use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(serve(opts, log, out))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def main(argv: list[str] | None = None) -> int:
    """`python3 forwarder.py ARGS`: exit 0 after a signal, 1 when it cannot listen, 2 on bad arguments."""
    opts = Options(build_parser().parse_args(argv))
    return run(opts)


if __name__ == "__main__":
    sys.exit(main())
