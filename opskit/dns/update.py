"""The switch itself: an RFC 2136 dynamic update with TSIG, verified by asking the server afterwards.

The RRset is read first: its values and TTL are the undo data, and its TTL is the "previous TTL" that
makes a later `dns check` able to say when the switch is safe after a lowering.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from opskit.dns.chain import links_from
from opskit.dns.query import describe_error, make_query, rdtype_of
from opskit.dns.servers import Server, parse_name
from opskit.dns.tsigkey import BadKey, TsigKey, wire_algorithm
from opskit.errors import Blocked, Negative, OpskitError, UsageError

DEFAULT_NEW_TTL_S = 300


class UpdateFailed(Negative):
    """The server did not apply the update (or did not show it afterwards)."""


class ServerUnreachable(Blocked):
    """The server could not be asked at all, so nothing was sent (exit 3, like every dead server)."""


@dataclass(frozen=True)
class RRsetData:
    """The values and TTL of one RRset (the undo data of an update)."""

    values: tuple[str, ...]
    ttl: int


@dataclass(frozen=True)
class UpdateResult:
    """What changed on the server: before and after, and whether the TTL went down (and from what)."""

    server: str
    zone: str
    name: str
    type: str
    before: RRsetData | None
    after: RRsetData | None
    verified: bool
    changed_at: datetime
    ttl_lowered: dict[str, object] | None  # the `dns.ttl_lowered` fact, when the TTL went down


def _keyring(
    key: TsigKey | None,
) -> tuple[dict[dns.name.Name, dns.tsig.Key] | None, dns.name.Name | None]:
    if key is None:
        return None, None
    wire = wire_algorithm(key.algorithm)
    if wire is None:
        raise BadKey(f"TSIG key {key.name!r}: unknown algorithm {key.algorithm!r}")
    try:
        algorithm = dns.name.from_text(wire)
        ring = dns.tsigkeyring.from_text({key.name: (wire, key.secret)})
    except (ValueError, dns.exception.DNSException) as exc:
        raise BadKey(f"TSIG key {key.name!r}: {exc}") from None
    return ring, algorithm


def read_rrset(
    server: Server, name: str, rtype: str, *, timeout_s: float = 3.0
) -> RRsetData | None:
    """The RRset the server publishes now (over TCP, recursion off), or None when there is none."""
    rdtype = rdtype_of(rtype)
    qname = dns.name.from_text(parse_name("--name", name))
    try:
        response = dns.query.tcp(
            make_query(qname, rdtype), server.host, port=server.port, timeout=timeout_s
        )
    except (dns.exception.DNSException, OSError, EOFError) as exc:
        raise ServerUnreachable(
            f"{server}: cannot read {name} {rtype}: {describe_error(exc, timeout_s, 1)}; "
            "nothing was changed (check the address and port of the primary)"
        ) from None
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise UpdateFailed(
            f"{server}: reading {name} {rtype} answered {dns.rcode.to_text(response.rcode())}"
        )
    links, _ = links_from(response, qname, rdtype)
    if (
        not links
        or links[-1].negative
        or links[-1].name != qname.to_text()
        or links[-1].ttl is None
    ):
        return None
    return RRsetData(links[-1].answers, links[-1].ttl)


def _send(server: Server, message: dns.message.Message, what: str, timeout_s: float) -> None:
    try:
        response = dns.query.tcp(message, server.host, port=server.port, timeout=timeout_s)
    except dns.tsig.PeerError as exc:
        raise UpdateFailed(f"{server}: {what}: the server rejected the TSIG key ({exc})") from None
    except dns.exception.FormError as exc:
        if "TSIG" not in str(exc):
            raise UpdateFailed(f"{server}: {what}: malformed answer ({exc})") from None
        # nsd and secondaries answer NOTIMP/REFUSED unsigned: dnspython rejects that before the rcode
        raise UpdateFailed(
            f"{server}: {what}: the server answered without a TSIG signature: it does not take "
            "signed updates for this zone (a secondary, updates disabled, or the key unknown there); "
            "send the update to the zone's primary"
        ) from None
    except (dns.exception.DNSException, OSError) as exc:
        raise UpdateFailed(f"{server}: {what}: {str(exc) or type(exc).__name__}") from None
    if response.rcode() != dns.rcode.NOERROR:
        code = dns.rcode.to_text(response.rcode())
        hint = {
            "NOTAUTH": " (TSIG key not accepted, or not authoritative for the zone)",
            "REFUSED": " (updates not allowed from here: check the server's update ACL)",
        }.get(code, "")
        raise UpdateFailed(f"{server}: {what}: the server answered {code}{hint}")


def _verify(
    server: Server, name: str, rtype: str, wanted: RRsetData | None, timeout_s: float
) -> bool:
    """Ask the server until it shows `wanted` (bounded: 3 s)."""
    deadline = time.monotonic() + 3.0
    while True:
        try:
            now = read_rrset(server, name, rtype, timeout_s=timeout_s)
        except OpskitError:
            now = None
        if now == wanted:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _canonical(rdtype: dns.rdatatype.RdataType, values: Sequence[str]) -> list[str]:
    """Values as the server will print them (so "2001:db8:0::1" compares equal to "2001:db8::1")."""
    return [dns.rdata.from_text("IN", rdtype, v).to_text() for v in values]


def replace_rrset(
    server: Server,
    zone: str,
    name: str,
    rtype: str,
    values: Sequence[str],
    *,
    ttl_s: int | None,
    key: TsigKey | None,
    now: datetime,
    timeout_s: float = 5.0,
) -> UpdateResult:
    """Replace NAME TYPE with `values` (empty: delete it); keep the old TTL unless `ttl_s` is given."""
    rdtype = rdtype_of(rtype)
    type_text = dns.rdatatype.to_text(rdtype)
    zone_name = dns.name.from_text(parse_name("--zone", zone))
    qname = dns.name.from_text(parse_name("--name", name))
    if not qname.is_subdomain(zone_name):
        raise UsageError(f"--name {name} is not inside --zone {zone}")
    ring, algorithm = _keyring(key)
    try:  # bad input fails before anything is asked or sent
        wanted_values = tuple(sorted(_canonical(rdtype, values)))
    except (ValueError, dns.exception.DNSException) as exc:
        raise UsageError(f"--set {' '.join(values)}: not valid {type_text} data: {exc}") from None
    started = time.monotonic()
    before = read_rrset(server, name, type_text)
    ttl = ttl_s if ttl_s is not None else (before.ttl if before else DEFAULT_NEW_TTL_S)
    update = dns.update.UpdateMessage(
        zone_name, keyring=ring, keyalgorithm=algorithm or dns.tsig.default_algorithm
    )
    try:
        if values:
            update.replace(qname, ttl, type_text, *values)
        else:
            update.delete(qname, type_text)
    except (ValueError, dns.exception.DNSException) as exc:
        raise UsageError(f"--set {' '.join(values)}: not valid {type_text} data: {exc}") from None
    _send(server, update, f"update {name} {type_text}", timeout_s)
    wanted = RRsetData(wanted_values, ttl) if values else None
    verified = _verify(server, name, type_text, wanted, timeout_s)
    try:
        after = read_rrset(server, name, type_text)
    except OpskitError:  # the update went out: a failed read must not say "nothing changed"
        after = None
    lowered = None
    if before is not None and values and ttl < before.ttl:
        lowered = {
            "name": qname.to_text(),
            "type": type_text,
            "zone": zone_name.to_text(),
            "server": str(server),
            # when the primary showed the new TTL, not when we started: the safe time is never early
            "lowered_at": (now + timedelta(seconds=time.monotonic() - started)).isoformat(),
            "previous_ttl": before.ttl,
            "new_ttl": ttl,
        }
    return UpdateResult(
        str(server),
        zone_name.to_text(),
        qname.to_text(),
        type_text,
        before,
        after,
        verified,
        now,
        lowered,
    )


def restore(
    server: Server,
    zone: str,
    name: str,
    rtype: str,
    before: RRsetData | None,
    *,
    key: TsigKey | None,
    now: datetime,
) -> UpdateResult:
    """Put back exactly the RRset read before a change (delete it when there was none)."""
    if before is None:
        return replace_rrset(server, zone, name, rtype, (), ttl_s=None, key=key, now=now)
    return replace_rrset(
        server, zone, name, rtype, before.values, ttl_s=before.ttl, key=key, now=now
    )
