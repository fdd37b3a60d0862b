"""Find the zone a name lives in and every server resolvers may ask for it.

Servers named with `--nameserver HOST[:PORT]` are where the walk starts and are always asked; they do not
narrow the set: a READY that asked one server of three says nothing about the other two.

The servers to ask are the union of the parent's delegation (its NS set and glue, asked at the parent's own
servers) and the zone's apex NS set, every address of each: a secondary the registrar still lists but the
zone forgot keeps answering resolvers with whatever it last transferred (issue #12, point 1).

The walk uses SOA questions (the owner of the SOA in the answer or the authority section is the apex),
asked of pinned nameservers first (recursion off), then of the given resolvers. A server that answers with
a referral is followed to the servers it names, not called lame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from opskit.dns.delegation import Delegation, OneSided, merge
from opskit.dns.query import Outcome, QueryOptions, ask, make_query
from opskit.dns.servers import Server, ServerChoice
from opskit.errors import Blocked

MAX_LABEL_WALK = 16
MAX_REFERRALS = 8


@dataclass(frozen=True)
class Source:
    """Where discovery asks: an authoritative (rd=False) or a recursive resolver (rd=True)."""

    server: Server
    rd: bool


@dataclass(frozen=True)
class Discovery:
    """The zone apex, the addresses to ask, and what could not be found or does not match."""

    zone: str
    nameservers: tuple[Server, ...]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    delegation: Delegation | None = None
    # servers only one side lists (parent's delegation or the zone's NS set), and why that matters
    one_sided: dict[Server, OneSided] = field(default_factory=dict)


@dataclass(frozen=True)
class Apex:
    """A zone apex and the sources that answered for it."""

    name: dns.name.Name
    answered: tuple[Source, ...]  # newest SOA serial first: its NS set is the zone's current one
    referred: bool = False  # reached by following a referral from the sources first asked


@dataclass(frozen=True)
class NsSet:
    """An NS set as one side publishes it, with every address found for each name."""

    names: tuple[str, ...]
    ttl: int | None
    addresses: dict[str, tuple[Server, ...]]
    problems: tuple[str, ...] = ()


def system_resolvers() -> list[Server]:
    """The resolvers of /etc/resolv.conf (empty when it cannot be read)."""
    try:
        res = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return []
    return [Server(str(ns), int(res.port)) for ns in res.nameservers]


def sources_for(choice: ServerChoice, resolvers: Sequence[Server]) -> list[Source]:
    """Where to start: fixed or pinned nameservers, then the resolvers (else the system's)."""
    auth = [Source(s, False) for s in choice.servers]
    auth += [Source(s, False) for pins in choice.pins.values() for s in pins]
    if auth:
        return auth + [Source(s, True) for s in resolvers]
    return [Source(s, True) for s in (list(resolvers) or system_resolvers())]


async def _asked(
    sources: Sequence[Source],
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    options: QueryOptions,
    errors: dict[Server, str] | None = None,
) -> list[tuple[Source, dns.message.Message]]:
    """Every usable answer, authoritative sources first; resolvers only when no authoritative answered."""
    for tier in ([s for s in sources if not s.rd], [s for s in sources if s.rd]):
        if not tier:
            continue
        # all at once: one dead server must not cost its whole retry budget before the next is asked
        outcomes: list[Outcome] = await asyncio.gather(
            *(ask(s.server, make_query(qname, rdtype, rd=s.rd), options=options) for s in tier)
        )
        usable = []
        for source, outcome in zip(tier, outcomes, strict=True):
            if outcome.error is None and outcome.response is not None:
                usable.append((source, outcome.response))
            elif errors is not None:
                errors[source.server] = outcome.error or "no answer"
        if usable:
            return usable
    return []


def _soa(response: dns.message.Message, name: dns.name.Name) -> tuple[dns.name.Name, int] | None:
    """The owner and serial of the SOA that covers `name` in an answer, if any."""
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                return rrset.name, int(rrset[0].serial)
    return None


def referral(response: dns.message.Message, name: dns.name.Name) -> dns.rrset.RRset | None:
    """The NS set of a referral toward `name` (no AA, NS in the authority section), or None."""
    if response.flags & dns.flags.AA:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.NS and name.is_subdomain(rrset.name):
            return rrset
    return None


def glue(response: dns.message.Message, target: dns.name.Name) -> list[str]:
    """The addresses of `target` in a referral's additional section."""
    return sorted(
        r.address
        for rrset in response.additional
        if rrset.name == target and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for r in rrset
    )


async def _referred_servers(
    ns: dns.rrset.RRset,
    response: dns.message.Message,
    choice: ServerChoice,
    fallback: Sequence[Source],
    options: QueryOptions,
) -> list[Server]:
    servers: list[Server] = []
    for target in sorted(r.target for r in ns):
        key = target.to_text().lower()
        if key in choice.pins:
            servers += choice.pins[key]
            continue
        addrs = glue(response, target) or await addresses(target, fallback, options)
        servers += [Server(a, choice.auth_port, key) for a in addrs]
    return [s for s in servers if choice.allows(s)]


async def find_apex(
    qname: dns.name.Name,
    sources: Sequence[Source],
    options: QueryOptions,
    choice: ServerChoice | None = None,
) -> Apex:
    """The apex of the zone holding `qname` (walking up past CNAMEs, following referrals)."""
    choice = choice or ServerChoice()
    name, referred, cut = qname, False, dns.name.root
    errors: dict[Server, str] = {}
    for _ in range(MAX_LABEL_WALK + MAX_REFERRALS):
        usable = await _asked(sources, name, dns.rdatatype.SOA, options, errors)
        best: dns.name.Name | None = None
        answered: list[tuple[int, Source]] = []
        for source, response in usable:
            soa = _soa(response, name)
            if soa is not None and (best is None or len(soa[0]) > len(best)):
                best, answered = soa[0], [(soa[1], source)]
            elif soa is not None and soa[0] == best:
                answered.append((soa[1], source))
        deeper = [
            (ns, response)
            for _, response in usable
            if (ns := referral(response, name)) is not None
            and (best is None or (ns.name.is_subdomain(best) and ns.name != best))
            and ns.name.is_subdomain(cut)
            and ns.name != cut
        ]
        if deeper:
            ns, response = max(deeper, key=lambda pair: len(pair[0].name))
            followed = await _referred_servers(ns, response, choice, sources, options)
            if not followed:
                targets = ", ".join(sorted(r.target.to_text() for r in ns))
                raise Blocked(
                    f"{ns.name} is delegated to {targets}, with no address to ask (no glue, "
                    "none found); give --nameserver NAME=ADDR:PORT"
                )
            sources, referred, cut = [Source(s, False) for s in followed], True, ns.name
            continue
        if best is not None:
            newest_first = sorted(answered, key=lambda pair: -pair[0])
            return Apex(best, tuple(source for _, source in newest_first), referred)
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


async def addresses(
    target: dns.name.Name, sources: Sequence[Source], options: QueryOptions
) -> list[str]:
    """Every A and AAAA of `target` that an authoritative source (or else a resolver) gives."""
    found: set[str] = set()
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        for source, response in await _asked(sources, target, rdtype, options):
            if source.rd or response.flags & dns.flags.AA:
                found |= {
                    r.address
                    for rrset in response.answer
                    if rrset.name == target and rrset.rdtype == rdtype
                    for r in rrset
                }
    return sorted(found)


async def ns_set(
    apex: dns.name.Name, sources: Sequence[Source], choice: ServerChoice, options: QueryOptions
) -> NsSet:
    """The apex NS set the zone's own servers publish, and every address of each name."""
    names: list[str] = []
    ttl: int | None = None
    for _, response in await _asked(sources, apex, dns.rdatatype.NS, options):
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == apex:
                names, ttl = sorted(r.target.to_text().lower() for r in rrset), int(rrset.ttl)
                break
        if names:
            break
    found: dict[str, tuple[Server, ...]] = {}
    problems: list[str] = []
    for target in names:
        if target in choice.pins:
            found[target] = choice.pins[target]
            continue
        addrs = await addresses(dns.name.from_text(target), sources, options)
        if not addrs:
            problems.append(f"nameserver {target} has no A/AAAA address: cannot ask it")
        found[target] = tuple(Server(a, choice.auth_port, target) for a in addrs)
    return NsSet(tuple(names), ttl, found, tuple(problems))


async def parent_view(
    apex: dns.name.Name, sources: Sequence[Source], choice: ServerChoice, options: QueryOptions
) -> Delegation | str:
    """The parent's delegation of `apex` as its own servers give it, or why it could not be read."""
    if apex == dns.name.root:
        return "the root zone has no parent"
    try:
        parent = await find_apex(apex.parent(), sources, options, choice)
    except Blocked as exc:
        return str(exc)
    asked = [*parent.answered, *(s for s in sources if s not in parent.answered)]
    servers_of_parent = await ns_set(parent.name, asked, choice, options)
    servers = [s for addrs in servers_of_parent.addresses.values() for s in addrs]
    if not servers:
        return f"no address for any server of the parent zone {parent.name}"
    outcomes = await asyncio.gather(
        *(ask(s, make_query(apex, dns.rdatatype.NS), options=options) for s in servers)
    )
    names: set[str] = set()
    ttl: int | None = None
    glued: dict[str, set[str]] = {}
    for outcome in outcomes:
        response = outcome.response
        if outcome.error is not None or response is None:
            continue
        ns = referral(response, apex)
        if ns is None or ns.name != apex:
            continue  # a parent server that also serves the child answers from the child's data
        names |= {r.target.to_text().lower() for r in ns}
        ttl = int(ns.ttl) if ttl is None else max(ttl, int(ns.ttl))
        for r in ns:
            glued.setdefault(r.target.to_text().lower(), set()).update(glue(response, r.target))
    if not names:
        errors = "; ".join(f"{o.server} {o.error}" for o in outcomes if o.error)
        return f"the servers of {parent.name} gave no delegation for {apex}" + (
            f" ({errors})" if errors else ""
        )
    return Delegation(
        parent=parent.name.to_text(),
        names=tuple(sorted(names)),
        ttl=ttl,
        glue={k: tuple(sorted(v)) for k, v in glued.items() if v},
    )


async def discover(
    qname: str,
    choice: ServerChoice,
    resolvers: Sequence[Server] = (),
    options: QueryOptions | None = None,
    *,
    also_ask: Sequence[Server] = (),
) -> Discovery:
    """Zone apex, then the child's NS set and the parent's delegation, then every address of both."""
    options = options or QueryOptions()
    name = dns.name.from_text(qname)
    first = [Source(s, False) for s in also_ask]
    sources = first + (
        sources_for(choice, resolvers)
        if choice.servers or choice.pins or resolvers or not first
        else []
    )
    apex = await find_apex(name, sources, options, choice)
    # a named server is asked even when neither side lists it (a hidden primary, a dead secondary),
    # unless it only referred us to the zone's servers (a parent's server)
    on_apex = {s.server for s in apex.answered}
    named = tuple(s for s in choice.servers if not apex.referred or s in on_apex)
    asked = [*apex.answered, *(s for s in sources if s not in apex.answered)]
    child = await ns_set(apex.name, asked, choice, options)
    if not child.names:
        if named:  # the servers named are asked whatever else can be found
            answered = ", ".join(str(s.server) for s in apex.answered)
            note = f"no NS set for {apex.name} from {answered}: only the --nameserver servers are asked"
            return _by_family(Discovery(apex.name.to_text(), named, notes=(note,)), choice)
        where = ", ".join(str(s.server) for s in apex.answered)
        raise Blocked(f"no NS records for {apex.name} from {where}; give --nameserver HOST[:PORT]")
    parent = await parent_view(apex.name, sources, choice, options)
    parent_only = (
        await _parent_only(parent, child, asked, choice, options)
        if isinstance(parent, Delegation)
        else {}
    )
    servers, one_sided, notes = merge(
        child.names, child.ttl, child.addresses, parent, parent_only, choice
    )
    notes += [
        f"{target.rstrip('.')} is in the parent's delegation but has no address to ask "
        "(no glue, none found): resolvers that pick it time out"
        for target, addrs in parent_only.items()
        if not addrs
    ]
    servers = tuple({**dict.fromkeys(servers), **dict.fromkeys(named)})
    if not servers:
        raise Blocked(f"no address for any nameserver of {apex.name} ({', '.join(child.names)})")
    found = Discovery(
        apex.name.to_text(),
        servers,
        child.problems,
        tuple(notes),
        parent if isinstance(parent, Delegation) else None,
        one_sided,
    )
    return _by_family(found, choice)


async def _parent_only(
    parent: Delegation,
    child: NsSet,
    asked: Sequence[Source],
    choice: ServerChoice,
    options: QueryOptions,
) -> dict[str, tuple[Server, ...]]:
    """Every address of each name only the parent lists: its pin, else its glue, else a lookup."""
    found: dict[str, tuple[Server, ...]] = {}
    for target in parent.names:
        if target in child.names:
            continue
        if target in choice.pins:
            found[target] = choice.pins[target]
            continue
        addrs = parent.glue.get(target) or tuple(
            await addresses(dns.name.from_text(target), asked, options)
        )
        found[target] = tuple(Server(a, choice.auth_port, target) for a in addrs)
    return found


def _by_family(found: Discovery, choice: ServerChoice) -> Discovery:
    """Only the addresses of the family asked for (-4/-6); the others are named, not blockers."""
    if choice.family is None:
        return found
    kept = tuple(s for s in found.nameservers if choice.allows(s))
    left = [s for s in found.nameservers if not choice.allows(s)]
    if not kept:
        raise Blocked(
            f"no IPv{choice.family} address for any nameserver of {found.zone} "
            f"(only {', '.join(s.host for s in left)}); drop -{choice.family}"
        )
    notes = found.notes
    if left:
        shown = ", ".join(f"{s.name.rstrip('.')} {s.host}" if s.name else s.host for s in left)
        notes += (f"not asked (-{choice.family}): {shown}; their answers are not checked",)
    return Discovery(
        found.zone,
        kept,
        found.problems,
        notes,
        found.delegation,
        {s: why for s, why in found.one_sided.items() if choice.allows(s)},
    )
