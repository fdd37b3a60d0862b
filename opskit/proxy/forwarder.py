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
import operator
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
# Rewrite the stats file this often even when nothing changed: readers see the bridge lives, and a
# file older than 2 heartbeats + 1 s is "cannot tell" for them (STATS-CONTRACT.md).
HEARTBEAT_S = 1.0
# Rows of the per-client table; idle clients beyond it are folded into "clients_other", so neither the
# file nor the time to write it grows with the number of distinct addresses (issue #9: 200k clients).
CLIENT_TABLE_CAP = 10000
# Client rows copied per event-loop turn (~0.5 ms) when the stats file is rewritten.
CAPTURE_SLICE = 2000
WATCH_KEEP = 50  # bridge lifetimes kept in the stats file's "watch" history
LOG_REPEAT_S = 60.0  # the same bookkeeping failure is logged at most this often
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
        self.heartbeat_s: float = max(0.05, ns.heartbeat)
        self.client_table_cap: int = max(1, ns.client_table_cap)
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
    p.add_argument("--heartbeat", type=parse_duration, default=HEARTBEAT_S, help=argparse.SUPPRESS)
    p.add_argument("--client-table-cap", type=int, default=CLIENT_TABLE_CAP, help=argparse.SUPPRESS)
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
        "aborts",
        "active",
        "address",
        "bytes_in",
        "bytes_out",
        "errors",
        "first_seen",
        "first_seen_iso",
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
        self.aborts = 0  # connections ended by a reset (either side)
        self.first_seen = first_seen  # wall clock
        self.first_seen_iso = iso(first_seen)  # formatted once: the stats rewrite formats every row
        self.last_io = last_io  # monotonic clock: cheap to read on every chunk


# One row of a stats snapshot, copied on the event loop in one cheap pass and formatted in a thread.
_row = operator.attrgetter(
    "address",
    "active",
    "total",
    "bytes_in",
    "bytes_out",
    "first_seen_iso",
    "last_io",
    "errors",
    "aborts",
)


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
        self.writing: asyncio.Future[str | None] | None = None  # the stats write in flight, if any
        self.last_write = 0.0
        self.server: asyncio.AbstractServer | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.drain_deadline: float | None = None
        self.other = new_other()  # idle clients folded beyond the table cap
        self.watch: list[dict[str, Any]] = []  # lifetimes of the bridges that wrote this stats file
        self.own_watch: dict[str, Any] | None = None
        self.write_errors = 0
        self.last_write_error: str | None = None
        self.write_failing = False
        self.log_errors = 0
        self.logged_at: dict[str, float] = {}
        self.aborts_client = self.aborts_upstream = 0
        self.carries = ["tcp"]
        self.sweep_max_s = self.loop_lag_max_s = 0.0  # the longest sweep (CPU), the latest wake-up

    def log(self, message: str) -> None:
        """One line to the log; a failing log (disk full, closed pipe) is counted and dropped, never fatal."""
        try:
            self.log_stream.write(f"{iso(time.time())} opskit-bridge: {message}\n")
            self.log_stream.flush()
        except Exception:  # noqa: BLE001 - any failure to log must not stop forwarding
            self.log_errors += 1

    def log_limited(self, key: str, message: str) -> None:
        """Log a recurring failure once, then at most every LOG_REPEAT_S (a full disk repeats itself)."""
        now = _mono()
        if now - self.logged_at.get(key, -LOG_REPEAT_S) >= LOG_REPEAT_S:
            self.logged_at[key] = now
            self.log(message)

    def client_for(self, address: str) -> Client:
        client = self.clients.get(address)
        if client is None:
            client = Client(address, time.time(), _mono())
            self.clients[address] = client
        return client

    # ----- the per-client table -----
    def fold_idle_clients(self) -> None:
        """Keep the table at most `client_table_cap` rows: active clients, top talkers and the newest
        stay; the other idle ones are folded into `clients_other` (counted, never lost)."""
        cap = self.opts.client_table_cap
        if len(self.clients) <= cap:
            return
        keep = int(cap * 0.9)  # fold below the cap, so folding is rare rather than every tick
        idle = [c for c in self.clients.values() if c.active <= 0]
        room = max(0, keep - (len(self.clients) - len(idle)))
        # Two C-level sorts: ~1 ms for 11,000 rows, where heapq.nlargest took 5 ms.
        idle.sort(key=lambda c: c.bytes_in + c.bytes_out, reverse=True)
        talkers = room // 2
        rest = idle[talkers:]
        rest.sort(key=lambda c: c.last_io, reverse=True)
        folded = rest[room - talkers :]
        other = self.other
        for c in folded:
            del self.clients[c.address]
            other["clients"] += 1
            other["total"] += c.total
            other["bytes_in"] += c.bytes_in
            other["bytes_out"] += c.bytes_out
            other["errors"] += c.errors
            if other["last_io"] is None or c.last_io > other["last_io"]:
                other["last_io"] = c.last_io
        self.dirty = True

    # ----- the stats file -----
    def restore(self) -> None:
        """Continue the per-client table, totals and watch history of a previous run's stats file."""
        path = self.opts.stats_file
        own = {
            "pid": os.getpid(),
            "engine": self.opts.engine,
            "started_at": iso(self.started_at),
            "stopped_at": None,
        }
        try:
            self.watch = self.restore_from(path)
        finally:
            self.watch = [*self.watch, own][-WATCH_KEEP:]
            self.own_watch = own

    def restore_from(self, path: str | None) -> list[dict[str, Any]]:
        """Load the previous file's counters; its watch history, its last lifetime closed."""
        if not path or not os.path.exists(path):
            return []
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            watch = previous_watch(data)
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
                client.aborts = int(row.get("aborts") or 0)
                self.clients[client.address] = client
            other = data.get("clients_other") or {}
            for key in ("clients", "total", "bytes_in", "bytes_out"):
                self.other[key] = int(other.get(key) or 0)
            if other.get("last_seen"):
                self.other["last_io"] = mono - (wall - parse_iso(other["last_seen"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.log(f"{path}: could not continue the previous table ({exc}); starting a new one")
            self.clients.clear()
            self.total = self.bytes_in = self.bytes_out = self.errors = 0
            self.last_io = None
            self.other = new_other()
            return []
        self.log(f"{path}: continuing {len(self.clients)} clients and {self.total} connections")
        self.fold_idle_clients()  # now, before listening: a huge old table never stalls forwarding
        return watch

    def capture(self) -> tuple[Any, ...]:
        """An immutable copy of everything the stats file says, taken on the loop in one pass."""
        return self.capture_header(), list(map(_row, self.clients.values())), time.time(), _mono()

    def capture_header(self) -> tuple[dict[str, Any], float | None, dict[str, Any]]:
        """The counters besides the per-client rows (cheap at any table size)."""
        header: dict[str, Any] = {
            "listener": format_host_port(self.opts.listen),
            "target": format_host_port(self.opts.to),
            "engine": self.opts.engine,
            "mode": "tcp",
            "started_at": iso(self.started_at),
            "pid": os.getpid(),
            "state": self.state,
            "active": self.active,
            "total": self.total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors": self.errors,
            "ended": self.ended,
            "cut": self.cut,
            "requests": {},
            "heartbeat_s": self.opts.heartbeat_s,
            "watch": [dict(w) for w in self.watch],
            "write_errors": self.write_errors,
            "last_write_error": self.last_write_error,
            "log_errors": self.log_errors,
            "sweep_max_ms": round(self.sweep_max_s * 1000, 1),
            "loop_lag_max_ms": round(self.loop_lag_max_s * 1000, 1),
            "aborts_client": self.aborts_client,
            "aborts_upstream": self.aborts_upstream,
            "clients_partial": False,
            "carries": list(self.carries),
        }
        return header, self.last_io, dict(self.other)

    def snapshot(self) -> dict[str, Any]:
        """The stats file's content now (keys of opskit.proxy.stats.BridgeStats)."""
        return render_snapshot(self.capture())

    def write_stats_now(self) -> dict[str, Any]:
        """Write the stats file synchronously (start and end); a failure is counted, never raised."""
        data = self.snapshot()
        self.dirty = False
        self.last_write = _mono()
        if self.opts.stats_file:
            self.note_write(write_reporting(self.opts.stats_file, data))
        return data

    def write_stats_soon(self) -> None:
        """Rewrite the stats file in the background: rows copied in slices between other callbacks,
        formatted and written in a worker thread, so neither a large table nor a slow or full disk
        ever stalls forwarding for more than about a millisecond."""
        if self.writing is not None or not self.opts.stats_file:
            return
        self.dirty = False
        self.last_write = _mono()
        self.writing = self.loop.create_task(self.write_in_background(self.opts.stats_file))
        self.writing.add_done_callback(self._written)

    async def write_in_background(self, path: str) -> str | None:
        header = self.capture_header()
        clients = list(self.clients.values())  # references only: cheap; folding waits for us
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(clients), CAPTURE_SLICE):
            if start:
                await asyncio.sleep(0)  # let forwarding run between slices
            rows.extend(map(_row, clients[start : start + CAPTURE_SLICE]))
        captured = (header, rows, time.time(), _mono())
        return await self.loop.run_in_executor(None, render_and_write, path, captured)

    def _written(self, future: asyncio.Future[str | None]) -> None:
        self.writing = None
        if future.cancelled():
            return
        exc = future.exception()
        self.note_write(f"{type(exc).__name__}: {exc}" if exc is not None else future.result())

    def note_write(self, error: str | None) -> None:
        """Count a failed stats write (the next successful file carries the count) and log it."""
        if error is None:
            if self.write_failing:
                self.write_failing = False
                self.log(
                    f"{self.opts.stats_file}: written again after {self.write_errors} failures"
                )
            return
        self.write_errors += 1
        self.last_write_error = f"{iso(time.time())} {error}"
        self.write_failing = True
        self.dirty = True
        self.log_limited(
            "stats-write",
            f"{self.opts.stats_file}: could not write the stats file ({error}); still forwarding, "
            f"{self.write_errors} failed writes so far",
        )

    # ----- the periodic sweep: grace, reaper, idle timeout, nudge, stats -----
    def tick_interval(self) -> float:
        candidates = [
            1.0,
            self.opts.stats_interval_s,
            self.opts.heartbeat_s / 2,
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
        self.keep_books(now)

    def keep_books(self, now: float) -> None:
        """Fold the client table to its cap and rewrite the stats file when due (heartbeat or change)."""
        if self.writing is None:  # a write in progress is copying rows: fold after it
            self.fold_idle_clients()
        heartbeat = self.opts.heartbeat_s
        due = min(self.opts.stats_interval_s, heartbeat) if self.dirty else heartbeat
        if now - self.last_write >= due:
            self.write_stats_soon()

    async def ticker(self) -> None:
        """Run the sweep every tick until the bridge is done; no exception ends it."""
        interval = self.tick_interval()
        while not self.done.done():
            try:
                # CPU time of this thread, not wall time: on a busy host a preempted sweep is not slow.
                started = time.thread_time()
                self.sweep()
                self.sweep_max_s = max(self.sweep_max_s, time.thread_time() - started)
            except Exception as exc:  # noqa: BLE001 - the bridge must outlive a bug in its bookkeeping
                self.log_limited("sweep", f"internal error in the periodic sweep: {exc!r}")
            asleep = _mono()
            await asyncio.sleep(interval)
            # How late the loop woke us: anything that blocked it (bookkeeping or not) shows here.
            self.loop_lag_max_s = max(self.loop_lag_max_s, _mono() - asleep - interval)

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


def new_other() -> dict[str, Any]:
    """Empty counters for the idle clients folded beyond the table cap (last_io is monotonic)."""
    return {"clients": 0, "total": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0, "last_io": None}


def previous_watch(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The watch history a starting bridge continues: the previous file's, with its last lifetime closed
    at that file's updated_at when it never stopped cleanly (the last time it is known to have watched).
    A file from a writer without "watch" becomes one lifetime: its started_at to its updated_at."""
    watch = data.get("watch")
    if not isinstance(watch, list):
        started = data.get("started_at")
        watch = (
            []
            if not started
            else [{"pid": data.get("pid"), "engine": data.get("engine"), "started_at": started}]
        )
    kept = [dict(w) for w in watch if isinstance(w, dict) and w.get("started_at")]
    for entry in kept:
        if entry.get("stopped_at") is None:
            entry["stopped_at"] = data.get("updated_at") or entry["started_at"]
    return kept[-(WATCH_KEEP - 1) :]


def format_host_port(address: tuple[str, int]) -> str:
    """ "127.0.0.1:80", or "[::1]:80" for IPv6."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_snapshot(captured: tuple[Any, ...]) -> dict[str, Any]:
    """The stats file's content from `Bridge.capture()`: pure, so it may run in a worker thread."""
    (header, last_io, other), rows, wall, mono = captured

    def wall_of(mono_time: float) -> str | None:
        return iso(wall - (mono - mono_time))

    rows.sort(key=operator.itemgetter(6), reverse=True)  # newest first
    data = dict(header)
    data["updated_at"] = iso(wall)
    data["last_activity"] = None if last_io is None else wall_of(last_io)
    data["clients"] = [
        {
            "address": address,
            "active": active,
            "total": total,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "first_seen": first_seen,
            "last_seen": wall_of(last),
            "errors": errors,
            "aborts": aborts,
        }
        for address, active, total, bytes_in, bytes_out, first_seen, last, errors, aborts in rows
    ]
    data["clients_other"] = {
        "clients": other["clients"],
        "active": 0,  # only idle clients are ever folded; a folded client that returns gets a row
        "total": other["total"],
        "bytes_in": other["bytes_in"],
        "bytes_out": other["bytes_out"],
        "last_seen": None if other["last_io"] is None else wall_of(other["last_io"]),
    }
    return data


def render_and_write(path: str, captured: tuple[Any, ...]) -> str | None:
    """Format a captured snapshot and write it (worker thread); the failure as text, or None."""
    return write_reporting(path, render_snapshot(captured))


def write_reporting(path: str, data: dict[str, Any]) -> str | None:
    """write_atomic, with its failure returned (never raised) and noted in `<path>.write-error`, a
    marker `opskit proxy status` shows (best effort: a read-only directory takes the marker too)."""
    marker = path + ".write-error"
    try:
        write_atomic(path, data)
    except Exception as exc:  # noqa: BLE001 - a stats write must never stop the bridge
        reason = f"{exc.strerror or exc}" if isinstance(exc, OSError) else f"{exc!r}"
        # Overwritten, not appended: a failing disk must not grow the marker.
        with contextlib.suppress(OSError), open(marker, "w", encoding="utf-8") as f:
            f.write(f"{iso(time.time())} could not write {path}: {reason}\n")
        return reason
    if os.path.exists(marker):
        remove_quietly(marker)
    return None


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON: temp file in the same directory, fsync, rename; mode 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stats-", suffix=".tmp", dir=directory)  # mode 0600
    try:
        # json.dumps, not json.dump: only the one-shot encoder is the C one (3x faster at 10k rows).
        text = json.dumps(data, separators=(",", ":"))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
    other = data.get("clients_other") or {}
    if other.get("clients"):
        lines.append(
            f"{other['clients']} more idle clients folded beyond the table: connections "
            f"{other['total']}, bytes in {other['bytes_in']}, bytes out {other['bytes_out']}"
        )
    if data.get("write_errors"):
        lines.append(
            f"{data['write_errors']} failed writes of the stats file, last: {data['last_write_error']}"
        )
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
    if bridge.own_watch is not None:
        bridge.own_watch["stopped_at"] = iso(time.time())  # a clean stop: watched until now
    data = bridge.write_stats_now()
    if bridge.opts.pid_file:
        remove_quietly(bridge.opts.pid_file)
    if not bridge.opts.quiet:
        with contextlib.suppress(
            Exception
        ):  # a closed or full stdout must not turn a stop into a crash
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
