"""`dns check`: ask every authoritative server, follow chains, peek at resolvers, then decide.

All questions go out concurrently, bounded per server; zones are discovered once per apex.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dns.name
import dns.rdatatype

from opskit.dns.agreement import disagreements
from opskit.dns.aiorun import run_sync
from opskit.dns.authview import consensus, observe, serials
from opskit.dns.cacheview import Delegations, peek_all
from opskit.dns.chain import MAX_CHAIN, effective_ttl, final_answers, widest
from opskit.dns.delegation import findings
from opskit.dns.discovery import Discovery, discover
from opskit.dns.dnssec import describe_keys, ds_matching, signature
from opskit.dns.history import latest_for
from opskit.dns.query import Limiter, QueryOptions, ask, find, make_query, rdtype_of
from opskit.dns.report import CheckReport, Link, RecordReport, ZoneKeys
from opskit.dns.servers import Server, ServerChoice, parse_name
from opskit.dns.verdict import Lowering, Policy, decide
from opskit.dns.wildcard import Memo, wildcard_owner
from opskit.errors import OpskitError, UsageError

DEFAULT_TYPES = ("A", "AAAA")


@dataclass(frozen=True)
class CheckOptions:
    """Everything `dns check` (and `dns.check`) can be told."""

    types: tuple[str, ...] = DEFAULT_TYPES
    policy: Policy = field(default_factory=Policy)
    nameservers: ServerChoice = field(default_factory=ServerChoice)
    resolvers: tuple[Server, ...] = ()
    query: QueryOptions = field(default_factory=QueryOptions)
    lowering: Lowering | None = None  # --lowered-at/--previous-ttl: applies to every record
    lowerings: tuple[Lowering, ...] = ()  # journaled by dns update / dns.update


class Zones:
    """Discovery results by apex, so 500 names in one zone cost one discovery."""

    def __init__(self, options: CheckOptions) -> None:
        self._options = options
        self._by_apex: dict[str, Discovery] = {}
        self._serials: dict[str, dict[Server, int | str]] = {}
        self._keys: dict[str, tuple[ZoneKeys, int | None]] = {}
        self._parents: dict[str, Discovery] = {}
        self.wildcards = Memo()
        self.delegations = Delegations()
        self._keys_lock = asyncio.Lock()  # 500 names in one signed zone: one DNSKEY and DS lookup

    async def for_name(self, name: str) -> Discovery:
        qname = dns.name.from_text(name)
        known = [
            d for apex, d in self._by_apex.items() if qname.is_subdomain(dns.name.from_text(apex))
        ]
        if known:
            return max(known, key=lambda d: len(d.zone))
        found = await discover(
            name, self._options.nameservers, self._options.resolvers, self._options.query
        )
        self._by_apex.setdefault(found.zone, found)
        return self._by_apex[found.zone]

    async def parent(self, apex: dns.name.Name) -> Discovery:
        """The parent zone's servers, for its DS: kept apart from the zones names are looked up in
        (the parent zone `test.` must not swallow a later lookup of another zone under it)."""
        parent = apex.parent().to_text()
        if parent not in self._parents:
            self._parents[parent] = await discover(
                parent, self._options.nameservers, self._options.resolvers, self._options.query
            )
        return self._parents[parent]

    async def keys(self, zone: Discovery, limiter: Limiter) -> tuple[ZoneKeys, int | None]:
        async with self._keys_lock:
            if zone.zone not in self._keys:
                self._keys[zone.zone] = await _zone_keys(zone, self, self._options.query, limiter)
        return self._keys[zone.zone]

    async def serials(self, zone: Discovery, limiter: Limiter) -> dict[Server, int | str]:
        if zone.zone not in self._serials:
            self._serials[zone.zone] = await serials(
                zone.zone, zone.nameservers, options=self._options.query, limiter=limiter
            )
        return self._serials[zone.zone]


def check(names: Sequence[str], options: CheckOptions, *, now: datetime) -> CheckReport:
    """READY or NOT READY for every NAME and type (see check_async)."""
    return run_sync(check_async(names, options, now=now))


async def check_async(names: Sequence[str], options: CheckOptions, *, now: datetime) -> CheckReport:
    """Ask, compare, decide; raises Blocked only when no zone can be found at all."""
    if not names:
        raise UsageError("give at least one NAME to check")
    names = [parse_name("NAME", n) for n in names]
    if options.policy.changes:
        parse_name("--changes", options.policy.changes)
    types = [_type(t) for t in options.types]
    zones = Zones(options)
    limiter = Limiter(options.query.per_server)
    discovered = {}
    for name in dict.fromkeys(names):  # sequential: names in a known zone need no query
        discovered[name] = await zones.for_name(name)
    for d in {d.zone: d for d in discovered.values()}.values():
        await zones.serials(d, limiter)
    jobs = [
        _record(name, t, discovered[name], zones, limiter, options, now)
        for name in discovered
        for t in types
    ]
    records = await asyncio.gather(*jobs)
    _changes_is_a_link(options.policy.changes, records)
    return decide(
        records,
        policy=options.policy,
        lowering_for=lambda name, rtype: (
            options.lowering or latest_for(options.lowerings, name, rtype)
        ),
        now=now,
    )


def _changes_is_a_link(changes: str | None, records: Sequence[RecordReport]) -> None:
    """--changes must name a link of the chain checked: gating on another name would gate on nothing."""
    if not changes:
        return
    wanted = dns.name.from_text(changes).to_text().lower()
    links = {link.name.lower() for r in records for link in r.chain}
    if links and wanted not in links:
        shown = " -> ".join(
            dict.fromkeys(link.name.rstrip(".") for r in records for link in r.chain)
        )
        raise UsageError(f"--changes {changes}: not a link of the chain checked ({shown})")


def _type(text: str) -> dns.rdatatype.RdataType:
    try:
        return rdtype_of(text)
    except ValueError as exc:
        raise UsageError(f"--type: {exc}") from None


async def _record(  # noqa: PLR0917 - one record's whole context, called in one place
    name: str,
    rdtype: dns.rdatatype.RdataType,
    zone: Discovery,
    zones: Zones,
    limiter: Limiter,
    options: CheckOptions,
    now: datetime,
) -> RecordReport:
    """One NAME TYPE: authoritative views, the whole chain (across zones), and the resolvers' caches."""
    changes = options.policy.changes
    zone_serials = await zones.serials(zone, limiter)
    nameservers, pending = await observe(
        name,
        rdtype,
        zone.zone,
        zone.nameservers,
        zone_serials,
        options=options.query,
        limiter=limiter,
        changes=changes,
    )
    chain: list[Link] = list(widest(consensus(nameservers), [ns.chain for ns in nameservers]))
    problems: list[str] = list(zone.problems)
    one_sided, notes = findings(zone.one_sided, nameservers, name, dns.rdatatype.to_text(rdtype))
    problems += one_sided
    for _ in range(MAX_CHAIN):
        if pending is None or pending.to_text().lower() in {lk.name.lower() for lk in chain}:
            break  # done, or a loop across zones (the verdict names it from the chain)
        other = await zones.for_name(pending.to_text())
        more, pending = await observe(
            pending.to_text(),
            rdtype,
            other.zone,
            other.nameservers,
            await zones.serials(other, limiter),
            options=options.query,
            limiter=limiter,
            changes=changes,
        )
        problems += [f"{other.zone}: {p}" for p in disagreements(more)]
        problems += [f"{ns.server} ({other.zone}) {ns.error}" for ns in more if ns.error]
        chain += widest(consensus(more), [ns.chain for ns in more])
    chain, keys = await _signed_zone(chain, zone, zones, options.query, limiter)
    chain = await _with_wildcards(chain, zones, options.query, limiter)
    ttl = effective_ttl(chain, changes)
    resolvers = (
        await peek_all(
            options.resolvers,
            name,
            rdtype,
            options=options.query,
            now=now,
            changes=changes,
            auth_ttl=ttl,
            zone=zone.zone,
            delegations=zones.delegations,
        )
        if options.resolvers
        else []
    )
    return RecordReport(
        name=dns.name.from_text(name).to_text(),
        type=dns.rdatatype.to_text(rdtype),
        ttl=ttl,
        answers=final_answers(chain),
        chain=tuple(chain),
        nameservers=tuple(nameservers),
        resolvers=tuple(resolvers),
        problems=tuple(problems),
        zone=zone.zone,
        keys=keys,
        notes=zone.notes + tuple(notes),
    )


async def _signed_zone(
    chain: list[Link], zone: Discovery, zones: Zones, options: QueryOptions, limiter: Limiter
) -> tuple[list[Link], ZoneKeys | None]:
    """For a signed chain: the zone's keys, the DS at its parent, and the DNSKEY TTL on each link."""
    if not any(link.dnssec for link in chain) or not zone.nameservers:
        return chain, None
    keys = await zones.keys(zone, limiter)
    key_ttl = keys[1]
    linked = [
        dataclasses.replace(link, dnssec=dataclasses.replace(link.dnssec, dnskey_ttl=key_ttl))
        if link.dnssec
        else link
        for link in chain
    ]
    return linked, keys[0]


async def _zone_keys(
    zone: Discovery, zones: Zones, options: QueryOptions, limiter: Limiter
) -> tuple[ZoneKeys, int | None]:
    apex = dns.name.from_text(zone.zone)
    response = None
    for (
        server
    ) in zone.nameservers:  # the first that answers: one dead server must not fake "no key"
        outcome = await ask(
            server,
            make_query(apex, dns.rdatatype.DNSKEY, dnssec=True),
            options=options,
            limiter=limiter,
            authoritative=True,
        )
        if outcome.error is None and outcome.response is not None:
            response = outcome.response
            break
    dnskeys = find(response, apex, dns.rdatatype.DNSKEY) if response is not None else None
    ds, parent_error = await _parent_ds(apex, zones, options, limiter)
    if response is None:
        ds, parent_error = None, f"no server of {zone.zone} answered for its DNSKEY"
    keys = ZoneKeys(
        zone=zone.zone,
        dnskeys=describe_keys(dnskeys or ()),
        ds=None if ds is None else tuple(r.to_text() for r in ds),
        ds_matching=ds_matching(zone.zone, dnskeys or (), ds or ()),
        dnskey_signature=signature(response, apex, dns.rdatatype.DNSKEY) if response else None,
        parent_error=parent_error,
    )
    return keys, (int(dnskeys.ttl) if dnskeys is not None else None)


async def _parent_ds(
    apex: dns.name.Name, zones: Zones, options: QueryOptions, limiter: Limiter
) -> tuple[list[Any] | None, str | None]:
    """The DS RRset the parent's servers publish for the zone ([] for none), or why it is unknown."""
    if apex == dns.name.root:
        return None, "the root has no parent"
    try:
        parent = await zones.parent(apex)
    except OpskitError as exc:
        return None, f"the parent's servers were not found: {exc}"
    for server in parent.nameservers:
        outcome = await ask(
            server,
            make_query(apex, dns.rdatatype.DS),
            options=options,
            limiter=limiter,
            authoritative=True,
        )
        if outcome.error is not None or outcome.response is None:
            continue
        soa = [r.name for r in outcome.response.authority if r.rdtype == dns.rdatatype.SOA]
        if soa and soa[0] == apex:
            continue  # the child's own servers answered: DS lives at the parent (RFC 4035 3.1.4.1)
        ds = find(outcome.response, apex, dns.rdatatype.DS)
        return (list(ds) if ds is not None else []), None
    return None, f"no server of {parent.zone} answered for the DS (give a --nameserver pin for it)"


async def _with_wildcards(
    chain: list[Link], zones: Zones, options: QueryOptions, limiter: Limiter
) -> list[Link]:
    """Each link synthesized from a wildcard names its `*.` owner (the fix goes there)."""

    async def one(link: Link) -> Link:
        if link.negative or not link.answers:
            return link
        home = await zones.for_name(link.name)
        if not home.nameservers:
            return link
        owner = await wildcard_owner(
            home.nameservers[0],
            link.name,
            rdtype_of(link.type),
            link.answers,
            zone=home.zone,
            options=options,
            limiter=limiter,
            memo=zones.wildcards,
        )
        return dataclasses.replace(link, wildcard=owner) if owner else link

    return list(await asyncio.gather(*(one(link) for link in chain)))
