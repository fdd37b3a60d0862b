"""The switch itself: an RFC 2136 dynamic update with TSIG, verified by asking the server afterwards.

The RRset is read first: its values and TTL are the undo data, and its TTL is the "previous TTL" that
makes a later `dns check` able to say when the switch is safe after a lowering.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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

from opskit.dns import history
from opskit.dns.aiorun import run_sync
from opskit.dns.chain import links_from
from opskit.dns.propagation import (
    DEFAULT_PROPAGATION_TIMEOUT_S,
    ServerState,
    authoritative_set,
    last_served,
    watch,
)
from opskit.dns.query import QueryOptions, describe_error, make_query, rdtype_of
from opskit.dns.servers import Server, ServerChoice, parse_name
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
    # every authoritative server, and when it served the change
    servers: tuple[ServerState, ...] = ()
    served_at: datetime | None = None  # when the last of them did (None: one never did)
    notes: tuple[str, ...] = ()  # what discovery could not check (the parent's delegation, ...)
    switched: dict[str, object] | None = None  # the `dns.switched` fact, when the values changed

    def facts(self) -> dict[str, dict[str, object]]:
        """The facts of this change, by kind (what `dns.update` journals and history records)."""
        return {
            kind: fact
            for kind, fact in ((history.FACT, self.ttl_lowered), (history.SWITCHED, self.switched))
            if fact
        }


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
    nameservers: ServerChoice | None = None,
    resolvers: Sequence[Server] = (),
    query: QueryOptions | None = None,
    propagation_timeout_s: float = DEFAULT_PROPAGATION_TIMEOUT_S,
    answers_after_delete: tuple[tuple[str, ...], int] | None = None,
    before_send: Callable[[RRsetData | None], None] | None = None,
) -> UpdateResult:
    """Replace NAME TYPE with `values` (empty: delete it); keep the old TTL unless `ttl_s` is given.

    `before_send` gets the RRset read before the change, before the update goes out (to journal it).

    The change is verified on every authoritative server of the zone (the primary, the zone's NS set
    and the parent's delegation), each given up to `propagation_timeout_s` to serve it. A name that a
    wildcard covers still answers after a delete: `answers_after_delete` is that answer (values, TTL).
    """
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
    query = query or QueryOptions()
    servers, notes = authoritative_set(
        server, zone_name.to_text(), nameservers or ServerChoice(), resolvers, query
    )
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
    if before_send is not None:
        before_send(before)
    _send(server, update, f"update {name} {type_text}", timeout_s)
    sent = (now + timedelta(seconds=time.monotonic() - started), time.monotonic())
    states = run_sync(
        watch(
            servers,
            qname.to_text(),
            rdtype,
            (wanted_values, ttl) if values else answers_after_delete,
            propagation_timeout_s,
            query,
            sent,
        )
    )
    served_at = last_served(states)
    verified = served_at is not None
    try:
        after = read_rrset(server, name, type_text)
    except OpskitError:  # the update went out: a failed read must not say "nothing changed"
        after = None
    facts = history.change_facts(
        name=qname.to_text(),
        rtype=type_text,
        zone=zone_name.to_text(),
        server=str(server),
        before=(before.values, before.ttl) if before else None,
        after=(wanted_values, ttl) if values else None,
        # when the LAST server served it: caches may fetch the old data until then
        at=served_at or now + timedelta(seconds=time.monotonic() - started),
        pending=[s.who for s in states if s.served_at is None],
    )
    return UpdateResult(
        str(server),
        zone_name.to_text(),
        qname.to_text(),
        type_text,
        before,
        after,
        verified,
        served_at or now,
        facts.get(history.FACT),
        states,
        served_at,
        notes,
        facts.get(history.SWITCHED),
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
    nameservers: ServerChoice | None = None,
    propagation_timeout_s: float = DEFAULT_PROPAGATION_TIMEOUT_S,
    answers_after_delete: tuple[tuple[str, ...], int] | None = None,
) -> UpdateResult:
    """Put back exactly the RRset read before a change (delete it when there was none)."""
    return replace_rrset(
        server,
        zone,
        name,
        rtype,
        before.values if before else (),
        ttl_s=before.ttl if before else None,
        key=key,
        now=now,
        nameservers=nameservers,
        propagation_timeout_s=propagation_timeout_s,
        answers_after_delete=answers_after_delete,
    )
