"""CNAME chains link by link, and the TTL that gates a switch.

The gate is the largest TTL on the path, or the TTL of the link the switch changes (`--changes NAME`):
for www(60) -> edge(86400) -> dispatch(8), switching dispatch A is stale for at most 8 s, repointing edge
for a day. dnspython's `minimum_ttl` is the right number for caching a whole answer and the wrong one here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from opskit.dns.dnssec import signature
from opskit.dns.negative import negative_ttl
from opskit.dns.query import find
from opskit.dns.report import Link

# Resolvers give up on a chain after this many CNAMEs and answer SERVFAIL: unbound's MAX_RESTART_COUNT
# is 11 (8 before 1.13.2, NLnetLabs/unbound#438) and BIND's max-query-restarts defaults to 11.
MAX_FOLLOWED_CNAMES = 11
# we follow a little further than resolvers do, to see (and say) that a chain is too long
MAX_CHAIN = MAX_FOLLOWED_CNAMES + 3


def links_from(
    response: dns.message.Message,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    zone: dns.name.Name | None = None,
) -> tuple[list[Link], dns.name.Name | None]:
    """Every link the response holds from qname on, and the CNAME target still to follow (or None).

    With `zone`, links outside it are left to that zone's own servers: a server that also serves the
    target zone may chase the CNAME into it, and another may not, which is no disagreement.
    """
    links: list[Link] = []
    name = qname
    seen = {qname}
    type_text = dns.rdatatype.to_text(rdtype)
    for _ in range(MAX_CHAIN):
        rrset = find(response, name, rdtype)
        if rrset is not None:
            answers = tuple(sorted(r.to_text() for r in rrset))
            links.append(
                Link(
                    name.to_text(),
                    type_text,
                    int(rrset.ttl),
                    answers,
                    "NOERROR",
                    signature(response, name, rdtype),
                )
            )
            return links, None
        cname = None if rdtype == dns.rdatatype.CNAME else find(response, name, dns.rdatatype.CNAME)
        if cname is None:
            break
        target = cname[0].target
        links.append(
            Link(
                name.to_text(),
                "CNAME",
                int(cname.ttl),
                (target.to_text(),),
                "NOERROR",
                signature(response, name, dns.rdatatype.CNAME),
            )
        )
        name = target
        if name in seen:  # a loop: the last link points back into the chain (chain_problem says so)
            return links, None
        seen.add(name)
        if zone is not None and not name.is_subdomain(zone):
            return links, name
    neg = negative_ttl(response)
    if response.rcode() == dns.rcode.NXDOMAIN:
        links.append(Link(name.to_text(), type_text, neg, (), "NXDOMAIN"))
        return links, None
    if neg is not None:
        links.append(Link(name.to_text(), type_text, neg, (), "NODATA"))
        return links, None
    return links, (name if links else None)


def final_answers(links: Sequence[Link]) -> tuple[str, ...]:
    """What a client ends up with: the last link's data (empty for a negative answer)."""
    return links[-1].answers if links and links[-1].type != "CNAME" else ()


def gate_link(links: Sequence[Link], changes: str | None = None) -> Link | None:
    """The link whose TTL gates the switch: the one named by --changes, else the largest TTL."""
    if changes:
        wanted = dns.name.from_text(changes).to_text().lower()
        named = [link for link in links if link.name.lower() == wanted]
        if named:
            return max(named, key=lambda link: link.ttl or 0)
    timed = [link for link in links if link.ttl is not None]
    return max(timed, key=lambda link: link.ttl or 0) if timed else None


def effective_ttl(links: Sequence[Link], changes: str | None = None) -> int | None:
    """The TTL that gates the switch (see gate_link)."""
    link = gate_link(links, changes)
    return None if link is None else link.ttl


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


def chain_problem(links: Sequence[Link]) -> str | None:
    """Why resolvers cannot follow this chain (a loop, or more CNAMEs than they follow), or None."""
    names = [link.name.lower() for link in links]
    cnames = [link for link in links if link.type == "CNAME"]
    if cnames and links[-1].type == "CNAME" and links[-1].answers:
        target = links[-1].answers[0].lower()
        if target in names:
            start = names.index(target)
            cycle = " -> ".join(_bare(n) for n in [*names[start:], target])
            reached = f" (reached from {_bare(names[0])})" if start else ""
            return (
                f"CNAME loop: {cycle}{reached}: resolvers answer SERVFAIL; point one of these "
                "names at a real address"
            )
    if len(cnames) > MAX_FOLLOWED_CNAMES:
        path = " -> ".join(_bare(n) for n in names)
        return (
            f"CNAME chain of {len(cnames)} links ({path}) is longer than resolvers follow "
            f"(unbound and BIND follow at most {MAX_FOLLOWED_CNAMES}, then answer SERVFAIL): "
            f"point {_bare(names[0])} closer to its target"
        )
    return None


def widest(chain: Sequence[Link], chains: Sequence[Sequence[Link]]) -> tuple[Link, ...]:
    """`chain` with each link's TTL raised to the largest any server gave for that name and type.

    Caches hold whatever copy they fetched, from whichever server: the effective TTL is the largest
    any server serves, whatever order the servers were given in.
    """
    top: dict[tuple[str, str], int] = {}
    for one in chains:
        for link in one:
            key = (link.name.lower(), link.type)
            if link.ttl is not None:
                top[key] = max(top.get(key, link.ttl), link.ttl)
    return tuple(
        dataclasses.replace(link, ttl=top.get((link.name.lower(), link.type), link.ttl))
        for link in chain
    )
