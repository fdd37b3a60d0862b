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
- Aborts travel as aborts: a reset on one leg closes the other with SO_LINGER 0 (a RST), so the new
  host never takes a client's truncated upload for a complete one (counted: aborts_client/_upstream).
- Limits refuse and count, never blame the new host: the open-file limit (two descriptors per
  connection), --max-connections, --max-per-client; --handshake-timeout cuts silent connections.
- `[::]` is dual-stack; a --to name is re-resolved every few seconds and its addresses are tried
  RFC 8305 style; a --to that loops back into the listener is refused. --udp carries datagrams too.
- Hot restart (--takeover PID, `opskit proxy restart`): listening sockets pass over SCM_RIGHTS.
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
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
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
# Bridge-wide counters that a restarted or hot-restarted bridge carries on from its predecessor.
_CARRIED_KEYS = ("total", "bytes_in", "bytes_out", "errors", "aborts_client", "aborts_upstream")
# Descriptors kept free for everything that is not a bridged connection: listeners, the loop, stats
# writes, the log. Each bridged connection needs two (client + new host).
FD_RESERVE = 64
# A client that sent fewer bytes than this within --handshake-timeout, while the new host sent nothing,
# is cut (slowloris, port scans). A server-first protocol (SSH, SMTP) or a push stream is never cut.
HANDSHAKE_BYTES = 64
# A --to given as a name is re-resolved this often (the new host's address may still change tonight).
RESOLVE_EVERY_S = 5.0
# RFC 8305 section 5: start the next address this long after the previous attempt if it has not connected.
HAPPY_EYEBALLS_DELAY_S = 0.25
# At most one log line a second per kind of refusal: a flood of refused clients must not flood the log.
REFUSAL_LOG_EVERY_S = 1.0
# Client datagrams held per UDP flow while its socket toward the new host is being set up.
UDP_PENDING_DATAGRAMS = 64
# Client bytes held while the new host's leg connects, before reading from the client pauses.
PENDING_LIMIT = 64 * 1024
# SO_KEEPALIVE goes on the new host's leg once a connection lasted this long (set by the sweep).
KEEPALIVE_AFTER_S = 1.0

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
    """The client's IP as people write it: an IPv4-mapped IPv6 address becomes plain IPv4.

    Called once per accepted connection: the kernel already writes addresses canonically, so only the
    v4-mapped prefix (a dual-stack listener) and a zone suffix need work.
    """
    if "%" in address:
        address = address.split("%", 1)[0]
    if address[:7].lower() == "::ffff:" and "." in address:
        return address[7:]
    return address


def reset(transport: asyncio.Transport | None) -> None:
    """Close a leg with a TCP RST (SO_LINGER 0), so its peer sees an abort and not a clean end of stream.

    A plain close() or abort() sends FIN when nothing is left unread: the new host would then take a
    client's truncated upload for a complete one.
    """
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def is_wildcard(host: str) -> bool:
    """True for a listener on every address ("0.0.0.0", "::" or empty)."""
    return host in ("", "0.0.0.0", "::")  # noqa: S104 - a comparison, not a bind


def is_local_address(ip: str) -> bool:
    """True when this host owns `ip` (it can bind it), so a connection there comes back here."""
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def points_at_listener(listen: tuple[str, int], target: tuple[str, int]) -> bool:
    """True when a connection to `target` would arrive at the listener `listen` itself (a loop)."""
    lhost, lport = listen
    thost, tport = target
    if lport != tport:
        return False
    lip, tip = plain_ip(lhost), plain_ip(thost)
    if lip == tip:
        return True
    if is_wildcard(lhost):
        # "0.0.0.0" accepts IPv4 only; "::" is dual-stack here (IPV6_V6ONLY=0): both families.
        if lhost in ("0.0.0.0", "") and ":" in tip:  # noqa: S104 - a comparison, not a bind
            return False
        return is_local_address(tip)
    return False


def loops_back(listen: tuple[str, int], to: tuple[str, int]) -> str | None:
    """The address of `to` (a name is resolved) that is the listener `listen` itself, or None.

    Only asked while `listen` is free: when something already listens there, "address in use" is the
    answer the operator needs, and the bridge would not start anyway.
    """
    try:
        for sock in open_listeners(*listen):
            sock.close()
    except OSError:
        return None
    try:
        infos = socket.getaddrinfo(to[0], to[1], type=socket.SOCK_STREAM)
    except OSError:
        infos = []  # an unresolvable name cannot loop; the connect reports it
    for ip in [to[0]] + [str(info[4][0]) for info in infos]:
        if points_at_listener(listen, (ip, to[1])):
            return ip
    return None


def interleave(addresses: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Addresses in RFC 8305 order: alternate families, starting with the family listed first."""
    if not addresses:
        return []
    first = addresses[0][0]
    same = [a for a in addresses if a[0] == first]
    other = [a for a in addresses if a[0] != first]
    out: list[tuple[int, Any]] = []
    for i in range(max(len(same), len(other))):
        out.extend(group[i] for group in (same, other) if i < len(group))
    return out


def open_listeners(
    host: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM
) -> list[socket.socket]:
    """Bound, listening (TCP) or bound (UDP, kind=SOCK_DGRAM) non-blocking sockets for HOST:PORT.

    "[::]" is dual-stack (IPV6_V6ONLY=0): IPv4 clients arrive as ::ffff:a.b.c.d and are shown as
    a.b.c.d. A name that resolves to several addresses gets one socket each.
    """
    infos = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)
    families = {info[0] for info in infos}
    socks: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, socktype, proto, _, sockaddr in infos:
            if sockaddr in seen:
                continue
            seen.add(sockaddr)
            sock = socket.socket(family, socktype, proto)
            socks.append(sock)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # Inherited by every accepted socket (Linux): no per-connection system call for them.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if family == socket.AF_INET6:
                # dual-stack unless the same name also gave an IPv4 address (that one has its socket)
                v6only = 1 if socket.AF_INET in families else 0
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            sock.bind(sockaddr)
            if kind == socket.SOCK_STREAM:
                sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class Listeners:
    """The listening servers of one bridge (one per address the --listen name has, TCP and UDP)."""

    def __init__(self, servers: list[Any]) -> None:
        self.servers = servers  # asyncio servers and UdpListener: each has close()

    def close(self) -> None:
        for server in self.servers:
            server.close()


class UdpFlow(asyncio.DatagramProtocol):
    """One client address and port over UDP: its own socket toward the new host, so replies find it."""

    def __init__(self, udp: UdpListener, peer: Any, client: Client) -> None:
        self.udp = udp
        self.peer = peer  # the client's address as the listener received it (sendto needs it so)
        self.client = client
        self.t: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_io = _mono()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast("asyncio.DatagramTransport", transport)
        if self.closed:
            self.t.close()
            return
        for data in self.pending:
            self.t.sendto(data)
        self.pending = []

    def send(self, data: bytes) -> None:
        """A client datagram toward the new host (held while the flow's socket is being set up)."""
        if self.t is not None:
            self.t.sendto(data)
        elif len(self.pending) < UDP_PENDING_DATAGRAMS:
            self.pending.append(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = _mono()
        self.last_io = now
        bridge = self.udp.bridge
        size = len(data)
        self.client.bytes_out += size
        self.client.last_io = bridge.last_io = now
        bridge.bytes_out += size
        self.udp.bytes_out += size
        bridge.dirty = True
        self.udp.sendto(data, self.peer)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from the new host: UDP has no connection to fail

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        bridge = self.udp.bridge
        self.udp.flows.pop(self.peer, None)
        self.client.active -= 1
        bridge.active -= 1
        self.client.last_io = bridge.last_io = _mono()
        bridge.dirty = True
        if self.t is not None:
            self.t.close()


class UdpListener(asyncio.DatagramProtocol):
    """--udp: datagrams to the listener port go to the new host, one flow per client address and port.

    A flow counts as one active connection of its client (total +1 when it starts) until it has been
    idle for --udp-idle-timeout; bytes count as for TCP. Each flow holds one file descriptor.
    """

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.t: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, UdpFlow] = {}
        self.flows_total = self.bytes_in = self.bytes_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast("asyncio.DatagramTransport", transport)

    def sendto(self, data: bytes, addr: Any) -> None:
        if self.t is not None and not self.t.is_closing():
            self.t.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        bridge = self.bridge
        if flow is None:
            if bridge.stopping:
                return
            ip = plain_ip(str(addr[0]))
            client = bridge.client_for(ip)
            client.total += 1
            bridge.total += 1
            refusal = bridge.refusal(ip, len(bridge.conns) + len(self.flows))
            if refusal is not None:
                client.errors += 1
                bridge.errors += 1
                bridge.refuse(refusal[0], f"refused UDP from {ip}:{addr[1]}: {refusal[1]}")
                return
            client.active += 1
            bridge.active += 1
            self.flows_total += 1
            flow = self.flows[addr] = UdpFlow(self, addr, client)
            host, port = bridge.opts.to
            task = bridge.loop.create_task(
                bridge.loop.create_datagram_endpoint(lambda: flow, remote_addr=(host, port))
            )
            task.add_done_callback(lambda done: self.flow_started(flow, done))
        now = _mono()
        size = len(data)
        flow.last_io = flow.client.last_io = bridge.last_io = now
        flow.client.bytes_in += size
        bridge.bytes_in += size
        self.bytes_in += size
        bridge.dirty = True
        flow.send(data)

    def flow_started(self, flow: UdpFlow, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is None:
            return
        exc = done.exception()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        flow.client.errors += 1
        self.bridge.errors += 1
        self.bridge.log(
            f"UDP client {flow.client.address}: no socket toward the new host: {reason}"
        )
        flow.close()

    def reap(self, idle_timeout_s: float) -> None:
        """Close flows idle longer than idle_timeout_s (UDP has no end: idleness is its close)."""
        now = _mono()
        for flow in [f for f in self.flows.values() if now - f.last_io > idle_timeout_s]:
            flow.close()

    def counters(self) -> dict[str, int]:
        return {
            "active_flows": len(self.flows),
            "flows": self.flows_total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    def close(self) -> None:
        for flow in list(self.flows.values()):
            flow.close()
        if self.t is not None:
            self.t.close()


async def reap_udp(bridge: Bridge, udp: UdpListener) -> None:
    """Close idle UDP flows, a few times per --udp-idle-timeout."""
    timeout_s = bridge.opts.udp_idle_timeout_s
    while not bridge.done.done():
        await asyncio.sleep(max(0.05, min(1.0, timeout_s / 4)))
        udp.reap(timeout_s)


class Target:
    """Where the new host is: its addresses, re-resolved every RESOLVE_EVERY_S when --to is a name."""

    def __init__(
        self,
        to: tuple[str, int],
        listen: tuple[str, int],
        loop: asyncio.AbstractEventLoop,
        log: Any,
    ) -> None:
        self.host, self.port = to
        self.listen = listen
        self.loop = loop
        self.log = log
        try:
            ipaddress.ip_address(self.host.split("%", 1)[0])
            self.literal = True
        except ValueError:
            self.literal = False
        self.addresses: list[tuple[int, Any]] = []
        self.resolved_at = -RESOLVE_EVERY_S
        self.refreshing: asyncio.Future[None] | None = None
        self.problem = f"{self.host} has not been resolved yet"

    def connect(self, factory: Any) -> asyncio.Future[Any]:
        """Start connecting a new upstream leg; the future ends with (transport, protocol)."""
        loop = self.loop
        if self.literal:
            # The hot path: no name to resolve, one address (asyncio skips getaddrinfo for literals).
            return loop.create_task(loop.create_connection(factory, self.host, self.port))
        return loop.create_task(self._connect_by_name(factory))

    async def _connect_by_name(self, factory: Any) -> Any:
        addresses = await self.current()
        if len(addresses) == 1:
            sockaddr = addresses[0][1]
            return await self.loop.create_connection(factory, sockaddr[0], sockaddr[1])
        sock = await happy_eyeballs(self.loop, addresses, HAPPY_EYEBALLS_DELAY_S)
        return await self.loop.create_connection(factory, sock=sock)

    async def current(self) -> list[tuple[int, Any]]:
        """The addresses to try now; a stale list is used while a fresh one is being resolved."""
        fresh = _mono() - self.resolved_at < RESOLVE_EVERY_S
        if not fresh and self.refreshing is None:
            self.refreshing = self.loop.create_task(self.resolve())
        if self.addresses:
            return self.addresses
        if self.refreshing is not None:
            await asyncio.shield(self.refreshing)
        if not self.addresses:
            raise OSError(errno.EHOSTUNREACH, self.problem)
        return self.addresses

    async def resolve(self) -> None:
        """Look the name up again; addresses that point back at this bridge are dropped (a loop)."""
        try:
            infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.problem = f"cannot resolve {self.host}: {exc.strerror or exc}"
            if self.addresses:
                self.log(f"{self.problem}; still using {self.describe(self.addresses)}")
            self.resolved_at = _mono()
            return
        finally:
            self.refreshing = None
        found: list[tuple[int, Any]] = []
        for family, _, _, _, sockaddr in infos:
            if (family, sockaddr) not in found:
                found.append((family, sockaddr))
        looping = [a for a in found if points_at_listener(self.listen, (a[1][0], a[1][1]))]
        if looping:
            self.log(
                f"{self.host} resolves to {self.describe(looping)}, this bridge's own listener: "
                "not forwarding there"
            )
        usable = interleave([a for a in found if a not in looping])
        if not usable:
            self.problem = f"{self.host} has no address other than this bridge's own"
        elif usable != self.addresses:
            self.log(f"new host {self.host} is {self.describe(usable)}")
        self.addresses = usable
        self.resolved_at = _mono()

    @staticmethod
    def describe(addresses: list[tuple[int, Any]]) -> str:
        return ", ".join(
            f"[{a[1][0]}]:{a[1][1]}" if a[0] == socket.AF_INET6 else f"{a[1][0]}:{a[1][1]}"
            for a in addresses
        )


async def happy_eyeballs(
    loop: asyncio.AbstractEventLoop, addresses: list[tuple[int, Any]], delay_s: float
) -> socket.socket:
    """A connected socket to the first of `addresses` that answers (RFC 8305: staggered attempts)."""
    from asyncio import staggered  # noqa: PLC0415 - only for names with several addresses

    def attempt(family: int, sockaddr: Any) -> Any:
        async def connect() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, sockaddr)
            except BaseException:
                sock.close()
                raise
            return sock

        return connect

    winner, _, errors = await staggered.staggered_race(
        [attempt(family, sockaddr) for family, sockaddr in addresses], delay_s
    )
    if winner is None:
        reasons = "; ".join(
            f"{Target.describe([a])}: {getattr(e, 'strerror', None) or e}"
            for a, e in zip(addresses, errors)  # noqa: B905 - strict= is 3.10+
            if e is not None
        )
        raise OSError(errno.ECONNREFUSED, f"no address answered ({reasons})")
    sock: socket.socket = winner
    return sock


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


def connection_limit(text: str) -> int | None:
    """A --max-connections value: a positive number, or "auto" (what the fd limit fits)."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of connections or auto, got {text!r}")
    return int(text)


class Options:
    """The forwarder's settings, as parsed from its command line."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.listen: tuple[str, int] = ns.listen
        self.to: tuple[str, int] = ns.to
        self.stats_file: str | None = ns.stats_file
        self.pid_file: str | None = ns.pid_file
        self.engine: str = ns.engine
        self.max_connections: int | None = ns.max_connections  # None: as many as the fd limit fits
        self.max_per_client: int = ns.max_per_client  # 0: no per-source limit
        self.handshake_timeout_s: float = ns.handshake_timeout  # 0: off
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
        self.udp: bool = ns.udp
        self.udp_idle_timeout_s: float = ns.udp_idle_timeout
        self.takeover: int | None = ns.takeover  # pid of the bridge whose listeners we continue


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
    p.add_argument(
        "--max-connections",
        type=connection_limit,
        default=None,
        help="refuse clients beyond this many open connections (default: what the fd limit fits)",
    )
    p.add_argument(
        "--max-per-client",
        type=int,
        default=0,
        help="refuse a client address beyond this many open connections (default 0: no limit)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=parse_duration,
        default=30.0,
        help=f"cut connections that sent under {HANDSHAKE_BYTES} bytes in this long (0: off)",
    )
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
    p.add_argument(
        "--udp", action="store_true", help="also carry UDP on the same port (per-client flows)"
    )
    p.add_argument(
        "--udp-idle-timeout",
        type=parse_duration,
        default=30.0,
        help="a UDP flow ends after this long without a datagram (default 30s)",
    )
    p.add_argument(
        "--takeover",
        type=int,
        metavar="PID",
        help="continue the running bridge PID: take its listening sockets and client table "
        "(opskit proxy restart); it drains its own connections",
    )
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


def _keepalive(transport: asyncio.BaseTransport) -> None:
    """SO_KEEPALIVE on the new host's leg, so a vanished peer is reaped (TCP_NODELAY: asyncio sets it).

    The client leg inherits both options from the listening socket (open_listeners): no per-connection
    system calls there, which is most of what a new connection costs.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # the peer may be gone: the transport reports that itself
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


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
        self.conn.upstream_lost(exc)

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
        "counted",
        "eof_client",
        "eof_up",
        "head",
        "last_io",
        "peer",
        "pending",
        "probe",
        "replied",
        "sent",
        "settled",
        "source_held",
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
        self.settled = False  # the sweep's per-connection chores are done (see settle)
        self.sent = 0  # client bytes so far (--handshake-timeout)
        self.replied = False  # the new host sent something: the protocol is under way
        self.source_held = False  # counted in bridge.per_source (--max-per-client)
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
        refusal = bridge.refusal(self.peer[0])
        if refusal is not None:
            # Still a client that arrived here: counted (the verdict must see it), then refused.
            self.count()
            self.refused(*refusal)
            return
        if bridge.opts.max_per_client:
            self.source_held = True
            bridge.per_source[self.peer[0]] = bridge.per_source.get(self.peer[0], 0) + 1
        bridge.conns.add(self)
        self.connect_task = bridge.target.connect(lambda: Upstream(self))
        self.connect_task.add_done_callback(self.connect_done)

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
        self.sent += size
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
            # Bytes waiting for the upstream connect are bounded: reading pauses beyond
            # PENDING_LIMIT. Not pausing for a first request saves two epoll changes per connection.
            if self.sent >= PENDING_LIMIT:
                self.waiting_up = True
                self.sync_client_reading()

    def eof_received(self) -> bool:
        self.eof_client = True
        self.last_io = _mono()
        if self.eof_up:
            self.close()  # close() sends the FIN itself: a shutdown() first is one syscall too many
        elif self.up is not None and not self.up.is_closing():
            self.up.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        bridge = self.bridge
        bridge.conns.discard(self)
        if self.source_held:
            self.source_held = False
            left = bridge.per_source.pop(self.peer[0], 1) - 1
            if left > 0:
                bridge.per_source[self.peer[0]] = left
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
            if exc is not None:
                # The client reset (or its leg failed): the new host must see an abort, not a FIN.
                client.aborts += 1
                bridge.aborts_client += 1
        self.cancel_connect()
        if exc is not None:
            reset(self.up)
        elif self.up is not None:
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
        if self.closed:
            transport.abort()
            return
        self.up = transport
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
        self.replied = True
        client.bytes_out += size
        bridge.bytes_out += size
        bridge.dirty = True
        if self.t is not None:
            self.t.write(data)

    def upstream_eof(self) -> None:
        self.eof_up = True
        self.last_io = _mono()
        t = self.t
        if self.eof_client:
            self.close()  # both sides are done: close() flushes, then sends the FIN
        elif t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.t is None or self.closed:
            return
        if exc is None:
            self.t.close()  # flushes what the new host sent, then FIN
            return
        # The new host reset: the client must see a reset too, never a FIN that looks like a clean end.
        if not self.counted and not self.probe:
            self.count()
        if self.client is not None:
            self.client.aborts += 1
        self.bridge.aborts_upstream += 1
        self.bridge.dirty = True
        reset(self.t)

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
    def settle(self, now: float) -> None:
        """Chores the sweep does instead of a timer or a system call per connection (new connections/s).

        The connect timeout is checked here (to within a sweep interval), and SO_KEEPALIVE goes on the
        new host's leg only once a connection has lasted KEEPALIVE_AFTER_S: the short ones never need it.
        """
        if self.up is None:
            if now - self.accepted_at > self.bridge.opts.connect_timeout_s:
                self.connect_timed_out()
            return
        if now - self.accepted_at >= KEEPALIVE_AFTER_S:
            self.settled = True
            _keepalive(self.up)

    def connect_timed_out(self) -> None:
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
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            # Our own descriptors ran out, not the new host's fault: say so, and count it apart.
            if not self.counted and not self.probe:
                self.count()
            self.refused("fd_limit", f"out of file descriptors ({exc.strerror})")
            return
        host, port = self.bridge.opts.to
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.fail(
            f"could not connect to the new host {host}:{port}: {reason or type(exc).__name__}"
        )

    def refused(self, kind: str, reason: str) -> None:
        """Close a client this bridge has no room for; counted by kind, logged at most once a second."""
        client = self.client
        if client is not None:
            client.errors += 1
        self.bridge.errors += 1
        self.bridge.refuse(kind, f"refused {self.peer[0]}:{self.peer[1]}: {reason}")
        if self.t is not None:
            self.t.abort()

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

    def cancel_connect(self) -> None:
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
        self.server: Listeners | None = None
        self.target = Target(opts.to, opts.listen, loop, self.log)
        self.conn_limit = opts.max_connections or 1  # set from the fd limit by serve()
        self.fd_room = self.conn_limit
        # open connections per client address (--max-per-client)
        self.per_source: dict[str, int] = {}
        self.aborts_client = self.aborts_upstream = self.handshake_timeouts = 0
        self.refused_counts = {"fd_limit": 0, "max_connections": 0, "max_per_client": 0}
        self.refusal_logged: dict[str, float] = {}
        self.udp: UdpListener | None = None  # --udp
        self.udp_reaper: asyncio.Future[None] | None = None
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

    def refusal(self, address: str, open_now: int | None = None) -> tuple[str, str] | None:
        """Why a new client from `address` cannot be bridged now (kind, reason), or None."""
        if open_now is None:
            open_now = len(self.conns) + (len(self.udp.flows) if self.udp is not None else 0)
        if open_now >= self.conn_limit:
            if self.fd_room <= self.conn_limit:
                return "fd_limit", (
                    f"{open_now} connections use the file descriptors this process may open "
                    f"(RLIMIT_NOFILE); raise it (ulimit -n) to bridge more"
                )
            return "max_connections", f"{open_now} connections are open (--max-connections)"
        limit = self.opts.max_per_client
        if limit and self.per_source.get(address, 0) >= limit:
            return (
                "max_per_client",
                f"{limit} connections from this address are open (--max-per-client)",
            )
        return None

    def refuse(self, kind: str, message: str) -> None:
        """Count a refused client by kind; log it, at most once a second per kind, with the total."""
        self.refused_counts[kind] += 1
        self.dirty = True
        now = _mono()
        if now - self.refusal_logged.get(kind, -REFUSAL_LOG_EVERY_S) >= REFUSAL_LOG_EVERY_S:
            self.refusal_logged[kind] = now
            self.log(f"{message} ({self.refused_counts[kind]} refused so far: refused_{kind})")

    def forwarding_counters(self) -> dict[str, Any]:
        """The stats file's keys for aborts, refusals and what the listener carries (issue #9)."""
        counters: dict[str, Any] = {
            "carries": ["tcp", "udp"] if self.udp is not None else ["tcp"],
            "aborts_client": self.aborts_client,
            "aborts_upstream": self.aborts_upstream,
            "handshake_timeouts": self.handshake_timeouts,
            "max_connections": self.conn_limit,
        }
        for kind, count in self.refused_counts.items():
            counters[f"refused_{kind}"] = count
        if self.udp is not None:
            counters["udp"] = self.udp.counters()
        return counters

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
            for key in _CARRIED_KEYS:
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
            "clients_partial": False,
            **self.forwarding_counters(),
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
        if self.opts.handshake_timeout_s:
            candidates.append(self.opts.handshake_timeout_s / 4)
        if self.opts.nudge_after_s is not None:
            candidates.append(max(self.opts.nudge_after_s / 4, 0.05))
        return max(0.05, min(candidates))

    def sweep(self) -> None:  # noqa: PLR0912 - one branch per reason to close a connection
        now = _mono()
        opts = self.opts
        nudge = opts.nudge_after_s is not None and (
            opts.nudge_not_before is None or time.time() >= opts.nudge_not_before
        )
        for conn in list(self.conns):
            if conn.closed:
                continue
            if not conn.settled:
                conn.settle(now)
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
            elif (
                opts.handshake_timeout_s
                and conn.sent < HANDSHAKE_BYTES
                and not conn.replied
                and now - conn.accepted_at > opts.handshake_timeout_s
            ):
                self.handshake_timeouts += 1
                self.log(
                    f"client {who}: sent {conn.sent} bytes in {now - conn.accepted_at:.0f}s "
                    "(--handshake-timeout); closed"
                )
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


class StartError(Exception):
    """Why the bridge does not start: the exit code and one line for the log (recorded: in the stats)."""

    def __init__(self, code: int, message: str, *, recorded: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.recorded = code, message, recorded


async def serve(opts: Options, log: IO[str], out: IO[str]) -> int:
    """Accept and forward until a signal, then drain; the process exit code."""
    loop = asyncio.get_running_loop()
    bridge = Bridge(opts, loop, log)
    try:
        control, fds = await start(bridge)
    except StartError as exc:
        bridge.log(exc.message)
        if exc.recorded:
            bridge.state, bridge.ended = "stopped", exc.message
            if opts.stats_file:
                bridge.write_stats_now()
        return exc.code
    for signum, name in ((signal.SIGTERM, "sigterm"), (signal.SIGINT, "sigint")):
        loop.add_signal_handler(signum, bridge.stop, name)
    if opts.pid_file:
        write_pid(opts.pid_file)
    flavour = type(loop).__module__.split(".")[0]
    host, port = opts.listen
    host = f"[{host}]" if ":" in host else host
    bridge.log(
        f"listening on {host}:{port}, forwarding to {opts.to[0]}:{opts.to[1]} ({flavour} loop)"
    )
    inheriting = None
    if control is not None:
        control.sendall(b"ready\n")  # the old bridge stops accepting only now: nobody is refused
        control.setblocking(False)
        bridge.log(f"took over the listener from pid {opts.takeover}; it drains its connections")
        inheriting = loop.create_task(receive_deltas(bridge, control))
    if opts.stats_file:
        bridge.write_stats_now()
    ticker = loop.create_task(bridge.ticker())
    handoff = loop.create_task(offer_handoff(bridge, fds))
    try:
        await bridge.done
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        ticker.cancel()
        await wind_up_handoff(bridge, handoff, inheriting)
        for task in (handoff, inheriting, bridge.udp_reaper):
            if task is not None:
                task.cancel()
        await finish(bridge, out)
    return 0


async def wind_up_handoff(
    bridge: Bridge, handoff: asyncio.Future[None], inheriting: asyncio.Future[None] | None
) -> None:
    """At exit: send the new bridge our last report, or stop the old bridge we still inherit from."""
    if bridge.ended and bridge.ended.startswith("handed over"):
        await asyncio.wait([handoff], timeout=2)  # the last delta: our connections ended
    if inheriting is not None and not inheriting.done() and bridge.opts.takeover is not None:
        # Stopping the bridge stops all of it: the old process closes what it still drains, and
        # its last report (those connections, as cut) lands in our final stats.
        with contextlib.suppress(OSError):
            os.kill(bridge.opts.takeover, signal.SIGTERM)
        await asyncio.wait([inheriting], timeout=5)


async def start(bridge: Bridge) -> tuple[socket.socket | None, list[int]]:
    """Checks, then the listeners (new, or taken over with --takeover): (control socket, their fds)."""
    opts = bridge.opts
    size_for_fd_limit(bridge, raise_fd_limit())
    looping = loops_back(opts.listen, opts.to)
    if looping is not None:
        raise StartError(
            2,
            f"error: --to {opts.to[0]}:{opts.to[1]} ({looping}) is this bridge's own listener: "
            "give the new host's address",
        )
    await bridge.target.resolve()
    if not bridge.target.literal and not bridge.target.addresses:
        bridge.log(f"warning: {bridge.target.problem}; clients will be cut until it resolves")
    owner = running_owner(opts.stats_file)
    control: socket.socket | None = None
    socks: list[socket.socket] | None = None
    if opts.takeover is not None:
        try:
            control, socks = take_over(opts.takeover)
        except OSError as exc:
            raise StartError(
                1, f"error: cannot take over from pid {opts.takeover}: {why(exc)}"
            ) from None
        owner = None if owner == opts.takeover else owner
    if owner is not None:
        raise StartError(
            1,
            f"error: {opts.stats_file} belongs to the bridge that runs as pid {owner}: "
            "stop it first (opskit proxy stop) or give another --stats-file",
        )
    bridge.restore()
    host, port = opts.listen
    try:
        if socks is None and opts.listen_fd is not None:
            # proxy.start bound the port the moment the old service let go (issue #11): clients
            # queued in its backlog while this process started
            handed = socket.socket(fileno=opts.listen_fd)
            handed.setblocking(False)
            if handed.type == socket.SOCK_STREAM:
                # Bound by another process without the options our own listeners set: accepted
                # clients inherit them, so a vanished client is reaped as on a port we bound.
                handed.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                handed.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks = [handed]
        if socks is None:
            socks = listeners_when_free(
                host,
                port,
                opts.bind_retry_s,
                lambda how: bridge.log(
                    f"{host}:{port} {WAITING_FOR_PORT}{'; ' + how if how else ''}"
                ),
            )
            if opts.udp:
                # One UDP socket: replies must leave by the socket the client wrote to.
                udp_socks = open_listeners(host, port, socket.SOCK_DGRAM)
                for extra in udp_socks[1:]:
                    bridge.log(f"UDP is carried on {udp_socks[0].getsockname()} only")
                    extra.close()
                socks.append(udp_socks[0])
        fds = [sock.fileno() for sock in socks]
        bridge.server = Listeners([await _serve_on(bridge, sock) for sock in socks])
    except OSError as exc:
        message = f"error: cannot listen on {host}:{port}: {why(exc)}"
        raise StartError(1, message, recorded=True) from None
    return control, fds


# Logged once when the port is still taken: proxy.start waits for this line before it stops the old
# service (issue #11), so the port is taken the moment it is released.
WAITING_FOR_PORT = "is in use: taking it the moment it is free"


# ----- the old service's own listening socket (issue #11: nobody refused while it stops) -----
# Binding after the old service closed its port leaves a gap, however fast the retry: a client that
# connects inside it is refused (1 of ~800 tight-loop clients in a loaded CI run). When the old service
# listens on exactly the bridge's address, the bridge instead takes a duplicate of that very socket
# (pidfd_getfd: Linux 5.6+, and the right to ptrace the service: root, or its user where ptrace is not
# restricted). It accepts nothing while the service runs, so the service goes on serving; when the
# service stops, the socket stays open because the bridge still holds it: a client arriving then waits
# in its queue instead of being refused, and the ones the service had not accepted yet are not reset.
# Where that is not possible, the bind is retried every FAST_RETRY_S.
FAST_RETRY_S = 0.00005  # measured in the demo: 0.2 ms still let 3 instant reconnects in, 1 run of 3
RELEASE_CHECK_S = (
    0.05  # a service that closes its listener without exiting is seen this late (queued)
)
_SYS_PIDFD_OPEN = 434  # the same numbers on every Linux architecture but alpha
_SYS_PIDFD_GETFD = 438
TCP_LISTEN = "0A"  # st column of /proc/net/tcp


def listening_sockets(
    port: int, states: tuple[str, ...] | None = (TCP_LISTEN,), proc: str = "/proc"
) -> dict[str, Any]:
    """Socket inode -> local address of TCP sockets on this port (states=None: in any state)."""
    found: dict[str, Any] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", table)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or (states is not None and fields[3] not in states):
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) == port:
                found[fields[9]] = plain_address(_proc_address(address))
    return found


def _proc_address(hex_address: str) -> Any:
    """An address from /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def plain_address(address: Any) -> Any:
    """::ffff:a.b.c.d as a.b.c.d, so a dual-stack listener matches its IPv4 twin."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def socket_holders(
    inodes: Any, proc: str = "/proc", skip: int | None = None
) -> list[tuple[int, int, str]]:
    """(pid, fd, process name) for each open fd on one of these socket inodes (but process `skip`'s)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found: list[tuple[int, int, str]] = []
    if not wanted:
        return found
    pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    for pid in pids:
        if pid == skip:
            continue
        for fd in _socket_fds(pid, wanted, proc):
            found.append((pid, fd, _process_name(pid, proc)))
    return found


def _socket_fds(pid: int, wanted: set[str], proc: str = "/proc") -> list[int]:
    fd_dir = os.path.join(proc, str(pid), "fd")
    fds: list[int] = []
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return fds  # another user's process, or it exited meanwhile
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) in wanted:
                fds.append(int(name))
        except OSError:
            continue
    return fds


def _fd_target(pid: int, fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None  # closed, or the process is gone


def _process_name(pid: int, proc: str = "/proc") -> str:
    try:
        with open(os.path.join(proc, str(pid), "comm")) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _pidfd_open(pid: int) -> int:
    opener = getattr(os, "pidfd_open", None)  # Python 3.9+
    if opener is not None:
        return int(opener(pid))
    return _syscall(_SYS_PIDFD_OPEN, pid, 0)


def _syscall(number: int, *args: int) -> int:
    import ctypes  # noqa: PLC0415 - only where the bridge takes a socket over

    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(number, *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class TakenListener:
    """The old service's listening socket, held (not accepted on) until every process of it let go."""

    def __init__(
        self, sock: socket.socket, inode: str, holders: list[tuple[int, int, str]]
    ) -> None:
        self.sock, self.inode = sock, inode
        self.held = {(pid, fd) for pid, fd, _ in holders}
        self.holders = sorted({(pid, name) for pid, _, name in holders})

    def describe(self) -> str:
        who = ", ".join(f"{name} (pid {pid})" for pid, name in self.holders)
        return f"holding the listening socket of {who}: clients queue in it while it stops"

    def when_released(self, deadline: float) -> socket.socket:
        """The socket, ready to accept, once no other process holds it; EADDRINUSE at the deadline."""
        wanted = f"socket:[{self.inode}]"
        held = set(self.held)
        pidfds: dict[int, int] = {}
        try:
            while True:  # bounded by the deadline
                # Only the known (pid, fd) places are looked at each turn (a scan of every process
                # costs milliseconds); once they let go, one full scan catches a dup or a fork.
                held = {(pid, fd) for pid, fd in held if _fd_target(pid, fd) == wanted}
                if not held:
                    found = socket_holders([self.inode], skip=os.getpid())
                    held = {(pid, fd) for pid, fd, _ in found}
                    if not held:
                        return self._ready()
                pending = sorted({pid for pid, _ in held})
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError(errno.EADDRINUSE, "still held by the old service")
                poller = select.poll()
                for pid in pending:
                    if pid not in pidfds:
                        with contextlib.suppress(OSError):  # exited meanwhile: seen next turn
                            pidfds[pid] = _pidfd_open(pid)
                    if pid in pidfds:
                        poller.register(pidfds[pid], select.POLLIN)
                # An exit wakes the poll at once; a close without exit is seen at the next turn.
                poller.poll(int(min(left, RELEASE_CHECK_S) * 1000) + 1)
        except BaseException:
            self.sock.close()
            raise
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)

    def _ready(self) -> socket.socket:
        sock = self.sock
        # The file status flags were shared with the service until now: non-blocking earlier would
        # have made its blocking accept() fail.
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(LISTEN_BACKLOG)  # our backlog, not the service's
        return sock


def take_listener(host: str, port: int) -> TakenListener | None:
    """The listening socket the old service holds on exactly host:port; None when it cannot be taken.

    Only one socket on exactly that address qualifies: a wildcard listener would make the bridge listen
    where it was not asked, and several (SO_REUSEPORT) would each need taking."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        wanted = plain_address(ipaddress.ip_address(host))
    except ValueError:
        return None  # a name, or "": its addresses are bound one by one
    overlapping = {
        inode: address
        for inode, address in listening_sockets(port).items()
        if address == wanted or address.is_unspecified or wanted.is_unspecified
    }
    if len(overlapping) != 1 or wanted not in overlapping.values():
        return None
    inode = next(iter(overlapping))
    holders = socket_holders([inode], skip=os.getpid())
    for pid, fd, _ in holders:
        try:
            pidfd = _pidfd_open(pid)
            try:
                sock = socket.socket(fileno=_syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
            finally:
                os.close(pidfd)
        except OSError:
            continue  # no right to it (ptrace restricted), or it exited: the bind retry remains
        if _is_the_listener(sock, inode, wanted):
            return TakenListener(sock, inode, holders)
        sock.close()
    return None


def _is_the_listener(sock: socket.socket, inode: str, wanted: Any) -> bool:
    try:
        if str(os.fstat(sock.fileno()).st_ino) != inode or sock.type != socket.SOCK_STREAM:
            return False
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        if sock.family == socket.AF_INET6 and wanted.is_unspecified:
            # "[::]" is dual-stack for the bridge: an IPv6-only socket would refuse IPv4 clients
            return not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError:
        return False
    return True


def listeners_when_free(
    host: str, port: int, retry_s: float, on_wait: Callable[[str], None] | None = None
) -> list[socket.socket]:
    """open_listeners; while the old service holds the port (up to retry_s), its own socket or a retry.

    on_wait(how) is called once when the port is taken, before the service may be stopped. It blocks on
    purpose: nothing else runs before the listeners exist, and an asyncio timer would wake at best
    every millisecond, long enough for a reconnecting client."""
    deadline = time.monotonic() + retry_s
    try:
        return open_listeners(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or retry_s <= 0:
            raise
    taken = take_listener(host, port)
    if on_wait is not None:
        on_wait(taken.describe() if taken is not None else "")
    if taken is not None:
        return [taken.when_released(deadline)]
    while True:  # bounded by retry_s
        try:
            return open_listeners(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
        time.sleep(FAST_RETRY_S)


async def _serve_on(bridge: Bridge, sock: socket.socket) -> Any:
    """Accept TCP clients, or receive UDP datagrams (--udp), on one bound socket."""
    loop = bridge.loop
    if sock.type == socket.SOCK_STREAM:
        return await loop.create_server(lambda: Conn(bridge), sock=sock, backlog=LISTEN_BACKLOG)
    if bridge.udp is None:
        bridge.udp = UdpListener(bridge)
        bridge.udp_reaper = loop.create_task(reap_udp(bridge, bridge.udp))
    udp = bridge.udp
    await loop.create_datagram_endpoint(lambda: udp, sock=sock)
    return udp


# ----- hot restart (opskit proxy restart): HAProxy -sf / Envoy hot restart, for one process -----
# The running bridge listens on a Linux abstract unix socket named after its pid (no file to leave
# behind; only a process of the same user is served, checked with SO_PEERCRED). A new bridge started
# with --takeover PID asks for the listening sockets, gets them with SCM_RIGHTS, starts accepting on
# them and says "ready"; only then does the old one stop accepting, so no client is refused in between.
# The old bridge then stops writing the stats file (one writer at a time), drains its own connections
# for as long as they last, and streams what they do (per-client deltas) to the new one, which adds
# them to the table it writes. The client table itself comes from the stats file the old one wrote
# last, just before the hand-over.
HANDOFF_READY_TIMEOUT_S = 10.0
# A new bridge sends its request in the same breath as it connects: only a stray peer is slower, and
# it must not hold up the hand-off listener (it serves one peer at a time) for a real restart.
HANDOFF_REQUEST_TIMEOUT_S = 2.0
HANDOFF_REQUEST_MAX = 256
HANDOFF_EVERY_S = 0.2
_DELTA_KEYS = ("active", "total", "bytes_in", "bytes_out", "errors", "aborts")
_TOP_KEYS = ("active", *_CARRIED_KEYS, "cut")


def handoff_address(pid: int) -> str:
    """The abstract unix socket a bridge with this pid hands its listeners over on."""
    return f"\0opskit-bridge-handoff-{pid}"


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):
        return False  # not Linux: no way to tell who asks, so nobody gets our listeners
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket, limit: int) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = await loop.sock_recv(conn, 4096)
        if not chunk:
            break
        data += chunk
    return data


async def offer_handoff(bridge: Bridge, listeners: list[int]) -> None:
    """The old side: wait for a new bridge, hand it the listeners, then report our draining connections."""
    loop = bridge.loop
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.bind(handoff_address(os.getpid()))
    except OSError as exc:
        bridge.log(f"hot restart is not available: {exc}")
        control.close()
        return
    control.listen(4)
    control.setblocking(False)
    with control:
        while not bridge.done.done():
            try:
                conn, _ = await loop.sock_accept(control)
            except OSError as exc:  # EMFILE under a flood of clients: restarts must work after it
                bridge.log_limited("handoff-accept", f"hot restart: cannot accept: {why(exc)}")
                await asyncio.sleep(0.1)
                continue
            with conn:
                if not _same_user(conn):
                    bridge.log("refused a hot-restart request from another user")
                    continue
                if await _hand_over(bridge, conn, listeners):
                    return


def requested_pid(request: bytes) -> int | None:
    """The pid of a `takeover PID` request line; None for anything else."""
    words = request.split()
    if not request.endswith(b"\n") or len(words) != 2 or words[0] != b"takeover":
        return None
    if not words[1].isdigit() or len(words[1]) > 10:
        return None
    pid = int(words[1])
    return pid if 0 < pid < 2**31 else None


async def _read_request(bridge: Bridge, conn: socket.socket) -> int | None:
    """The pid a peer of the hand-off socket asks for; a stray peer is answered, logged once, None."""
    try:
        request = await asyncio.wait_for(
            _read_line(bridge.loop, conn, HANDOFF_REQUEST_MAX), HANDOFF_REQUEST_TIMEOUT_S
        )
        new_pid = requested_pid(request)
        what = repr(request[:40]) if request else "nothing"
    except asyncio.TimeoutError:  # noqa: UP041 - on 3.8 (old hosts) it is not TimeoutError
        new_pid, what = None, f"nothing within {HANDOFF_REQUEST_TIMEOUT_S:g}s"
    except OSError as exc:
        new_pid, what = None, why(exc)
    if new_pid is not None:
        return new_pid
    bridge.log_limited(
        "handoff-request",
        f"ignored a hot-restart request that is not 'takeover PID' ({what}); still accepting here",
    )
    with contextlib.suppress(OSError):  # a small line into a fresh socket: it never blocks
        conn.send(b"error: expected 'takeover PID'\n")
    return None


async def _hand_over(bridge: Bridge, conn: socket.socket, fds: list[int]) -> bool:
    loop = bridge.loop
    conn.setblocking(False)  # no peer may stall the event loop: every wait below is bounded
    new_pid = await _read_request(bridge, conn)
    if new_pid is None:
        return False
    # One writer at a time: an older snapshot still being written must not land after the one
    # the new bridge continues from (nor over its own), and no new background write may start.
    stats_file, bridge.opts.stats_file = bridge.opts.stats_file, None
    if bridge.writing is not None:
        await asyncio.wait([bridge.writing], timeout=10)
    if stats_file:
        bridge.opts.stats_file = stats_file
        bridge.write_stats_now()  # the table the new bridge continues from
        bridge.opts.stats_file = None
    baseline = Baseline(bridge)  # the same moment: no await in between
    try:
        conn.sendmsg(  # one short message into a fresh socket: it never blocks
            [b"listeners\n"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))],
        )
        ready = await asyncio.wait_for(loop.sock_recv(conn, 64), HANDOFF_READY_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):  # noqa: UP041 - see _read_request
        ready = b""
    except asyncio.CancelledError:
        bridge.opts.stats_file = stats_file  # stopped meanwhile: the final stats are still ours
        raise
    if not ready.startswith(b"ready"):
        bridge.opts.stats_file = stats_file  # still ours: keep writing it
        bridge.log(f"hot restart by pid {new_pid} did not complete; still accepting here")
        return False
    # From here the new bridge accepts and writes the stats file; this one only drains.
    bridge.opts.stats_file = bridge.opts.pid_file = None
    bridge.ended = f"handed over to pid {new_pid}"
    bridge.state = "stopping"
    bridge.stopping = True
    if bridge.server is not None:
        bridge.server.close()
    noun = "connection" if len(bridge.conns) == 1 else "connections"
    bridge.log(
        f"handed the listener over to pid {new_pid}; draining {len(bridge.conns)} bridged {noun} "
        f"here for as long as they last (a SIGTERM closes them now)"
    )
    bridge.maybe_drained()
    await _stream_deltas(bridge, conn, baseline)
    return True


def _client_row(client: Client) -> tuple[int, ...]:
    return tuple(int(getattr(client, key)) for key in _DELTA_KEYS)


class Baseline:
    """The counters as the stats file written at the hand-over has them (active: none, as restored)."""

    def __init__(self, bridge: Bridge) -> None:
        self.top = {key: 0 if key == "active" else int(getattr(bridge, key)) for key in _TOP_KEYS}
        self.rows = {c.address: (0, *_client_row(c)[1:]) for c in bridge.clients.values()}
        self.watched = {c.client.address for c in bridge.conns if c.client is not None}


async def _stream_deltas(bridge: Bridge, conn: socket.socket, baseline: Baseline) -> None:
    """Send what this bridge's remaining connections do, as JSON lines of deltas, until they end."""
    loop = bridge.loop
    sent_top, sent, watched = baseline.top, baseline.rows, baseline.watched
    while True:
        finished = bridge.done.done()
        now_watched = {c.client.address for c in bridge.conns if c.client is not None}
        delta_clients = {}
        for address in watched | now_watched:
            client = bridge.clients.get(address)
            if client is None:
                continue
            row = _client_row(client)
            before = sent.get(address, (0,) * len(row))
            change = [a - b for a, b in zip(row, before)]  # noqa: B905 - strict= is 3.10+
            if any(change):
                delta_clients[address] = change
                sent[address] = row
        watched = now_watched
        top = {key: int(getattr(bridge, key)) - sent_top[key] for key in _TOP_KEYS}
        sent_top = {key: int(getattr(bridge, key)) for key in _TOP_KEYS}
        if delta_clients or any(top.values()) or finished:
            line = json.dumps({"top": top, "clients": delta_clients, "done": finished}) + "\n"
            try:
                await loop.sock_sendall(conn, line.encode("utf-8"))
            except OSError:
                return  # the new bridge is gone; our connections still finish here
        if finished:
            return
        await asyncio.sleep(HANDOFF_EVERY_S)


def take_over(
    pid: int, timeout_s: float = HANDOFF_READY_TIMEOUT_S
) -> tuple[socket.socket, list[socket.socket]]:
    """The new side: the listening sockets of the bridge with this pid, and the control connection."""
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.settimeout(timeout_s)
    try:
        control.connect(handoff_address(pid))
        control.sendall(f"takeover {os.getpid()}\n".encode("ascii"))
        size = struct.calcsize("i")
        msg, ancillary, _, _ = control.recvmsg(64, socket.CMSG_SPACE(16 * size))
    except OSError:
        control.close()
        raise
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % size
            fds.extend(struct.unpack(f"{usable // size}i", data[:usable]))
    if not msg.startswith(b"listeners") or not fds:
        control.close()
        raise OSError(errno.EPROTO, f"pid {pid} did not hand over its listening sockets")
    socks = [socket.socket(fileno=fd) for fd in fds]
    for sock in socks:
        sock.setblocking(False)
    return control, socks


async def receive_deltas(bridge: Bridge, control: socket.socket) -> None:
    """Add the old bridge's draining connections to our counters until it has finished (or died)."""
    loop = bridge.loop
    inherited: dict[str, int] = {}
    buffer = b""
    try:
        while True:
            chunk = await loop.sock_recv(control, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                _apply_delta(bridge, json.loads(line), inherited)
    except (OSError, ValueError) as exc:
        bridge.log(f"lost the old bridge's report on its draining connections: {exc}")
    finally:
        control.close()
        # Whatever the old process still counted as active ended with it.
        for address, count in inherited.items():
            client = bridge.clients.get(address)
            if count > 0 and client is not None:
                client.active -= count
                bridge.active -= count
        bridge.dirty = True


def _apply_delta(bridge: Bridge, delta: dict[str, Any], inherited: dict[str, int]) -> None:
    now = _mono()
    for key, value in delta.get("top", {}).items():
        if key in _TOP_KEYS and value:
            setattr(bridge, key, getattr(bridge, key) + int(value))
    for address, change in delta.get("clients", {}).items():
        client = bridge.client_for(address)
        for key, value in zip(_DELTA_KEYS, change):  # noqa: B905 - strict= is 3.10+
            setattr(client, key, getattr(client, key) + int(value))
        inherited[address] = inherited.get(address, 0) + int(change[0])
        client.last_io = bridge.last_io = now
    bridge.dirty = True


def size_for_fd_limit(bridge: Bridge, fd_limit: int) -> None:
    """Fit the connection limit into RLIMIT_NOFILE: two descriptors per connection, FD_RESERVE kept.

    Beyond that, accept() or the upstream socket() would fail with EMFILE, and the client would be
    closed with a misleading "could not connect to the new host". A larger --max-connections is not
    lowered silently: the log says so, and clients beyond the fit are counted as refused_fd_limit.
    """
    fits = max(1, (fd_limit - FD_RESERVE) // 2)
    asked = bridge.opts.max_connections
    bridge.fd_room = fits
    bridge.conn_limit = fits if asked is None else min(asked, fits)
    if asked is not None and asked > fits:
        bridge.log(
            f"warning: --max-connections {asked} does not fit in {fd_limit} file descriptors "
            f"(RLIMIT_NOFILE): clients beyond {fits} are refused and counted as refused_fd_limit"
        )


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
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--hold-then-exec"]:
        return hold_then_exec(args[1:])
    opts = Options(build_parser().parse_args(args))
    return run(opts)


def hold_then_exec(args: list[str]) -> int:
    """`forwarder.py --hold-then-exec HOST:PORT RETRY FD CMD...`: HAProxy on an old host (issue #11).

    The port is held as the bridge holds it (the old service's own socket, or bound the moment it is
    free, for up to RETRY), then CMD replaces this process with the socket as fd FD (`bind fd@FD`)."""
    if len(args) < 4:
        sys.stderr.write("usage: forwarder.py --hold-then-exec HOST:PORT RETRY FD CMD...\n")
        return 2
    try:
        (host, port), retry_s, fd = host_port(args[0]), parse_duration(args[1]), int(args[2])
    except (argparse.ArgumentTypeError, ValueError) as exc:
        sys.stderr.write(f"error: --hold-then-exec: {exc}\n")
        return 2

    def waiting(how: str) -> None:
        sys.stderr.write(f"{host}:{port} {WAITING_FOR_PORT}{'; ' + how if how else ''}\n")
        sys.stderr.flush()

    try:
        sock = listeners_when_free(host, port, retry_s, waiting)[0]
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {host}:{port}: {why(exc)}\n")
        return 1
    if sock.fileno() == fd:
        os.set_inheritable(fd, True)  # dup2 onto itself would leave it close-on-exec
    else:
        os.dup2(sock.fileno(), fd)  # inheritable
    try:
        os.execvp(args[3], args[3:])  # noqa: S606 - the HAProxy command opskit built
    except OSError as exc:
        sys.stderr.write(f"error: cannot run {args[3]}: {why(exc)}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main())
