"""An embedded authoritative DNS server for the rehearsal's test zone (UDP and TCP, RFC 2136 + TSIG).

It answers like a real authoritative (AA set, RD ignored, CNAME chains followed inside the zone, negative
answers with the SOA in authority at min(SOA TTL, MINIMUM) per RFC 2308 §5) and accepts the same signed
dynamic updates as knot, so `opskit dns update` runs against it unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.zone

from opskit.demo import zonedata


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as `tsig-keygen` writes it: name, algorithm, base64 secret."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"

    @classmethod
    def generate(cls, name: str = "opskit-demo.") -> TsigKey:
        """A fresh random key (32 bytes, as tsig-keygen makes for hmac-sha256)."""
        return cls(name=name, secret=base64.b64encode(secrets.token_bytes(32)).decode())

    def bind_format(self) -> str:
        """The key in BIND key-file format (what `nsupdate -k` and `opskit dns update` read)."""
        name = self.name.rstrip(".")
        return f'key "{name}" {{\n\talgorithm {self.algorithm};\n\tsecret "{self.secret}";\n}};\n'

    def write(self, path: Path) -> Path:
        """Write the key file, private (0600)."""
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.bind_format())
        return path


class AuthServer:
    """The test zone served on HOST:PORT over UDP and TCP; `async with` starts and stops it."""

    def __init__(
        self,
        zone_text: str,
        *,
        origin: str,
        host: str = "127.0.0.1",
        port: int = 0,
        tsig: TsigKey | None = None,
    ) -> None:

        self.origin = origin if origin.endswith(".") else origin + "."
        self.host = host
        self.port = port
        self.tsig = tsig
        self.zone: dns.zone.Zone = dns.zone.from_text(
            zone_text, origin=self.origin, relativize=False, check_origin=True
        )
        self.queries = 0
        self.updates = 0
        self.refused_updates = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """HOST:PORT as opskit's `--nameserver` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def keyring(self) -> dict[Any, Any] | None:

        if self.tsig is None:
            return None
        return dict(
            dns.tsigkeyring.from_text({self.tsig.name: (self.tsig.algorithm, self.tsig.secret)})
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (a free one when port is 0)."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                udp.close()
                if self.port:
                    raise
                continue
            self._udp, self.port = udp, port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def stop(self) -> None:
        """Close the listeners and every open TCP connection."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._conns):
                task.cancel()
            if self._conns:
                await asyncio.wait(self._conns, timeout=2)
            await self._tcp.wait_closed()
            self._tcp = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- transport -------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            for _ in range(10_000):
                header = await reader.readexactly(2)
                (size,) = struct.unpack("!H", header)
                wire = await reader.readexactly(size)
                answer = self.respond(wire, max_size=65535)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._conns.discard(task)

    # -- DNS -------------------------------------------------------------------------------------

    def respond(self, wire: bytes, *, max_size: int) -> bytes | None:
        """The wire answer to one wire message (None: drop it, as for garbage)."""
        try:
            query = dns.message.from_wire(wire, keyring=self.keyring, one_rr_per_rrset=True)
        except dns.message.UnknownTSIGKey:
            self.refused_updates += 1
            return _tsig_error(wire, dns.rcode.BADKEY)
        except dns.tsig.BadSignature:
            self.refused_updates += 1
            return _tsig_error(wire, dns.rcode.BADSIG)
        except dns.tsig.BadTime:
            self.refused_updates += 1
            return _tsig_error(wire, dns.rcode.BADTIME)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        opcode = query.opcode()
        if opcode == dns.opcode.UPDATE:
            response = zonedata.apply_update(self, query)
        elif opcode == dns.opcode.QUERY:
            self.queries += 1
            response = zonedata.answer(self.zone, query)
        else:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NOTIMP)
        return _to_wire(response, query, max_size)

    def records(self, name: str, rdtype: str = "A") -> tuple[int, list[str]] | None:
        """(ttl, values) of one RRset as served now; None when it does not exist."""
        if not name.endswith(".") and (name + ".").endswith("." + self.origin):
            name += "."  # a full name written without the final dot
        rdataset = self.zone.get_rdataset(
            dns.name.from_text(name, dns.name.from_text(self.origin)),  # relative to the zone
            dns.rdatatype.from_text(rdtype),
        )
        if rdataset is None:
            return None
        return rdataset.ttl, sorted(rd.to_text() for rd in rdataset)

    def set_records(self, name: str, rdtype: str, ttl: int, values: list[str]) -> None:
        """Replace one RRset directly (for the rehearsal's set-up, not through RFC 2136); bumps the serial."""
        owner = dns.name.from_text(name, dns.name.from_text(self.origin))
        rdatas = [dns.rdata.from_text("IN", rdtype, v, origin=self.zone.origin) for v in values]
        self.zone.replace_rdataset(owner, dns.rdataset.from_rdata_list(ttl, rdatas))
        zonedata.bump_serial(self.zone)

    def serial(self) -> int:
        """The zone's SOA serial now."""
        soa = self.zone.find_rdataset(zonedata.origin_of(self.zone), "SOA")
        return int(soa[0].serial)


def _tsig_error(wire: bytes, tsig_error: int) -> bytes | None:
    """NOTAUTH with an unsigned TSIG carrying the error (RFC 8945 §5.2), as knot answers a bad key."""
    try:
        # A keyring that returns False parses the TSIG record without verifying it.
        query = dns.message.from_wire(wire, keyring=lambda _msg, _name: False)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.NOTAUTH)
    if query.tsig is None:
        return bytes(response.to_wire())
    request = query.tsig[0]
    tsig = request.replace(mac=b"", error=tsig_error, other=b"", original_id=query.id)
    out = bytearray(response.to_wire())
    arcount = struct.unpack("!H", out[10:12])[0]
    out[10:12] = struct.pack("!H", arcount + 1)
    rr = io.BytesIO()
    dns.rrset.from_rdata(query.tsig.name, 0, tsig).to_wire(rr)
    return bytes(out) + rr.getvalue()


def _to_wire(response: dns.message.Message, query: dns.message.Message, max_size: int) -> bytes:

    if query.edns >= 0:
        response.use_edns(0, payload=1232)
        max_size = min(max_size, max(512, query.payload))
    try:
        return bytes(response.to_wire(max_size=max_size))
    except dns.exception.TooBig:
        # RFC 1035 §4.2.1: on UDP, a truncated answer with TC set tells the client to retry over TCP.
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return bytes(response.to_wire(max_size=max_size))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = self.server.respond(data, max_size=512)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


def demo_zone(
    origin: str,
    *,
    records: Mapping[str, tuple[int, str, str]],
    ns_address: str,
    negative_ttl_s: int,
) -> str:
    """Zone text: SOA + NS + the given `name: (ttl, type, value)` records."""
    lines = [
        f"$ORIGIN {origin}",
        "$TTL 3600",
        f"@ 3600 IN SOA ns1 hostmaster 2026112301 3600 600 86400 {negative_ttl_s}",
        "@ 3600 IN NS ns1",
        f"ns1 3600 IN A {ns_address}",
    ]
    lines += [f"{name} {ttl} IN {rtype} {value}" for name, (ttl, rtype, value) in records.items()]
    return "\n".join(lines) + "\n"


__all__ = ["AuthServer", "TsigKey", "demo_zone"]
