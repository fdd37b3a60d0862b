"""Find the zone a name lives in, its NS set, and every address of every nameserver.

The walk uses SOA questions (the owner of the SOA in the answer or the authority section is the apex),
asked first of pinned nameservers (recursion off), then of the given resolvers, then of the system's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import dns.name
import dns.rdatatype
import dns.resolver

from opskit.dns.query import Outcome, QueryOptions, ask, make_query
from opskit.dns.servers import Server, ServerChoice
from opskit.errors import Blocked

MAX_LABEL_WALK = 16


@dataclass(frozen=True)
class Source:
    """Where discovery asks: an authoritative (rd=False) or a recursive resolver (rd=True)."""

    server: Server
    rd: bool


@dataclass(frozen=True)
class Discovery:
    """The zone apex, the addresses to ask, and what could not be found."""

    zone: str
    nameservers: tuple[Server, ...]
    problems: tuple[str, ...] = ()


def system_resolvers() -> list[Server]:
    """The resolvers of /etc/resolv.conf (empty when it cannot be read)."""
    try:
        res = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return []
    return [Server(str(ns), int(res.port)) for ns in res.nameservers]


def sources_for(choice: ServerChoice, resolvers: Sequence[Server]) -> list[Source]:
    """Where to start: fixed or pinned nameservers, else the resolvers, else the system's."""
    auth = list(choice.servers) + [s for pins in choice.pins.values() for s in pins]
    if auth:
        return [Source(s, False) for s in auth]
    return [Source(s, True) for s in (list(resolvers) or system_resolvers())]


async def _first(
    sources: Sequence[Source],
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    options: QueryOptions,
    errors: dict[Server, str] | None = None,
) -> tuple[Source, Outcome] | None:
    # all at once: one dead server must not cost its whole retry budget before the next is asked
    outcomes = await asyncio.gather(
        *(ask(s.server, make_query(qname, rdtype, rd=s.rd), options=options) for s in sources)
    )
    for source, outcome in zip(sources, outcomes, strict=True):
        if outcome.error is None and outcome.response is not None:
            return source, outcome
        if errors is not None:
            errors[source.server] = outcome.error or "no answer"
    return None


async def find_apex(
    qname: dns.name.Name, sources: Sequence[Source], options: QueryOptions
) -> tuple[dns.name.Name, Source]:
    """The apex of the zone holding `qname` (walking up past CNAMEs), and the source that said so."""
    name = qname
    errors: dict[Server, str] = {}
    for _ in range(MAX_LABEL_WALK):
        found = await _first(sources, name, dns.rdatatype.SOA, options, errors)
        if found is None:
            break
        source, outcome = found
        response = outcome.response
        if response is None:
            break
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name, source
        if name == dns.name.root:
            break
        name = name.parent()
    if not sources:
        raise Blocked(f"cannot find the zone of {qname}: no resolver configured; give --nameserver")
    if errors:
        why = "; ".join(f"{server} {error}" for server, error in errors.items())
        raise Blocked(f"no server answered for {qname}: {why}")
    where = ", ".join(str(s.server) for s in sources)
    raise Blocked(f"cannot find the zone of {qname}: no SOA from {where}; give --nameserver")


async def discover(
    qname: str,
    choice: ServerChoice,
    resolvers: Sequence[Server] = (),
    options: QueryOptions | None = None,
) -> Discovery:
    """Zone apex, then NS set, then every A and AAAA of every NS (pins and --auth-port applied)."""
    options = options or QueryOptions()
    name = dns.name.from_text(qname)
    sources = sources_for(choice, resolvers)
    apex, source = await find_apex(name, sources, options)
    if choice.servers:
        return Discovery(apex.to_text(), choice.servers)
    ordered = [source, *(s for s in sources if s != source)]
    ns_found = await _first(ordered, apex, dns.rdatatype.NS, options)
    targets: list[str] = []
    ns_response = ns_found[1].response if ns_found else None
    if ns_response is not None:
        for rrset in ns_response.answer:
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == apex:
                targets += sorted(r.target.to_text().lower() for r in rrset)
    if not targets:
        raise Blocked(
            f"no NS records for {apex} from {source.server}; give --nameserver HOST[:PORT]"
        )
    servers: list[Server] = []
    problems: list[str] = []
    for target in targets:
        if target in choice.pins:
            servers += choice.pins[target]
            continue
        addrs = await _addresses(dns.name.from_text(target), ordered, options)
        if not addrs:
            problems.append(f"nameserver {target} has no A/AAAA address: cannot ask it")
        servers += [Server(a, choice.auth_port, target) for a in addrs]
    if not servers:
        raise Blocked(f"no address for any nameserver of {apex} ({', '.join(targets)})")
    return Discovery(apex.to_text(), tuple(servers), tuple(problems))


async def _addresses(
    target: dns.name.Name, sources: Sequence[Source], options: QueryOptions
) -> list[str]:
    addrs: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        found = await _first(sources, target, rdtype, options)
        if found is None or found[1].response is None:
            continue
        response = found[1].response
        for rrset in [*response.answer, *response.additional]:
            if rrset.name == target and rrset.rdtype == rdtype:
                addrs += [r.address for r in rrset]
    return sorted(set(addrs))
