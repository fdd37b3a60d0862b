"""CNAME chains link by link, and the TTL that gates a switch.

The gate is the largest TTL on the path, or the TTL of the link the switch changes (`--changes NAME`):
for www(60) -> edge(86400) -> dispatch(8), switching dispatch A is stale for at most 8 s, repointing edge
for a day. dnspython's `minimum_ttl` is the right number for caching a whole answer and the wrong one here.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from opskit.dns.dnssec import signature
from opskit.dns.negative import negative_ttl
from opskit.dns.query import find
from opskit.dns.report import Link

MAX_CHAIN = 8


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
