"""Is an answer synthesized from a wildcard (RFC 4592), and which `*.` owner does it come from?

An unsigned answer looks the same whether NAME has its own record or a `*.PARENT` supplied it, so we
ask a name below NAME: a wildcard never matches below a name that exists (RFC 4592 section 2.2.1), so
`_opskit-wildcard-probe.NAME` answered with NAME's data means NAME does not exist and the answer is
synthesized. The owner is then the nearest `*.ANCESTOR` that answers with that data. The fix for a
synthesized answer is on the wildcard, and undoing a change on NAME means deleting what was created,
not writing the synthesized data down as a record of its own.
"""

from __future__ import annotations

import asyncio

import dns.name
import dns.rdatatype

from opskit.dns.aiorun import run_sync
from opskit.dns.chain import final_answers, links_from
from opskit.dns.query import Limiter, QueryOptions, ask, make_query
from opskit.dns.servers import Server

PROBE_LABEL = "_opskit-wildcard-probe"


class Memo:
    """Which parents have a wildcard for a type, asked once per check (500 names, one question).

    `*.PARENT` answered NXDOMAIN or NODATA means no name below PARENT gets that type from a wildcard:
    either PARENT exists and has no `*` child, or a higher wildcard lacks the type too.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[Server, dns.name.Name, int], bool] = {}
        self._locks: dict[tuple[Server, dns.name.Name, int], asyncio.Lock] = {}

    async def covers(
        self,
        server: Server,
        parent: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        options: QueryOptions,
        limiter: Limiter | None,
    ) -> bool:
        key = (server, parent, int(rdtype))
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._known:
                star = dns.name.Name((b"*", *parent.labels))
                found = await _answers(server, star, rdtype, options, limiter)
                self._known[key] = found is not None
        return self._known[key]


async def _answers(
    server: Server,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    options: QueryOptions,
    limiter: Limiter | None,
) -> tuple[str, ...] | None:
    """The data the server gives for NAME TYPE itself (no chain), or None for none or an error."""
    outcome = await ask(
        server, make_query(qname, rdtype), options=options, limiter=limiter, authoritative=True
    )
    if outcome.error is not None or outcome.response is None:
        return None
    links, _ = links_from(outcome.response, qname, rdtype)
    if len(links) != 1 or links[0].negative:
        return None
    return final_answers(links) or links[0].answers


async def wildcard_owner(
    server: Server,
    name: str,
    rdtype: dns.rdatatype.RdataType,
    answers: tuple[str, ...],
    *,
    zone: str,
    options: QueryOptions,
    limiter: Limiter | None = None,
    memo: Memo | None = None,
) -> str | None:
    """`*.PARENT.` when the server synthesizes NAME TYPE (`answers`) from a wildcard, else None."""
    qname = dns.name.from_text(name)
    apex = dns.name.from_text(zone)
    if not answers or qname == apex or qname.labels[0] == b"*":
        return None
    memo = memo or Memo()
    if not await memo.covers(server, qname.parent(), rdtype, options, limiter):
        return None
    probe = dns.name.Name((PROBE_LABEL.encode(), *qname.labels))
    if await _answers(server, probe, rdtype, options, limiter) != answers:
        return None  # NAME exists (or the data differ): its answer is its own
    parent = qname.parent()
    while parent.is_subdomain(apex):
        owner = dns.name.Name((b"*", *parent.labels))
        if await _answers(server, owner, rdtype, options, limiter) == answers:
            return owner.to_text()
        if parent == apex:
            break
        parent = parent.parent()
    return None


def wildcard_owner_sync(
    server: Server,
    name: str,
    rdtype: str,
    answers: tuple[str, ...],
    *,
    zone: str,
    options: QueryOptions | None = None,
) -> str | None:
    """wildcard_owner() for callers outside an event loop (the dns.update action)."""
    return run_sync(
        wildcard_owner(
            server,
            name,
            dns.rdatatype.RdataType.make(rdtype),
            answers,
            zone=zone,
            options=options or QueryOptions(),
        )
    )
