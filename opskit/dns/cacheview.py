"""What resolvers hold now, asked so that the asking never refills what is measured.

A recursive query for a record a resolver does not hold caches it with the full current TTL, so a check
through resolvers while a 24 h TTL is live adds 24 h of exposure there. Every question here has recursion
off (RD=0), and none is ever repeated with recursion on. That is not enough on its own: unbound (lab,
1.17, `allow_snoop`) recurses even for RD=0 when it holds no delegation for the zone ("answer norec from
cache -- need to validate or not primed"), and then caches the record for its full TTL. So the zone's NS
RRset is peeked first: whatever that fills is the delegation, not the record being measured, and with it
cached the record peek is answered from cache or with a referral, never by recursing. A resolver that
refuses RD=0, or whose answer may still have come from recursion, gets "cache view unknown".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import dns.name
import dns.rcode
import dns.rdatatype

from opskit.dns.chain import effective_ttl, final_answers, links_from
from opskit.dns.query import Limiter, Outcome, QueryOptions, ask, make_query
from opskit.dns.report import ResolverAnswer
from opskit.dns.servers import Server

# RFC 8767 recommends 30 s for stale answers (unbound serve-expired-reply-ttl, BIND stale-answer-ttl)
STALE_REPLY_TTL_S = 30


def _answer(
    outcome: Outcome,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    *,
    primed: str | None,
    now: datetime,
    changes: str | None,
    auth_ttl: int | None,
) -> ResolverAnswer:
    server = str(outcome.server)
    response = outcome.response
    if outcome.error is not None or response is None:
        return ResolverAnswer(
            server,
            (),
            None,
            outcome.error or "no answer",
            cached=False,
            primed=primed is not None,
            primed_why=primed,
        )
    links, _ = links_from(response, qname, rdtype)
    if not links:  # RD=0 peek at a cache that does not hold the name: empty NOERROR
        return ResolverAnswer(
            server, (), None, None, cached=False, primed=primed is not None, primed_why=primed
        )
    remaining = effective_ttl(links, changes)
    if primed is not None and remaining is not None and remaining != auth_ttl:
        primed = None  # less than the published TTL: a copy it held before we asked
    label = (
        None  # the verdict tells a clamp from a copy older than a lowering (it knows the lowering)
    )
    until = None if remaining is None else now + timedelta(seconds=remaining)
    return ResolverAnswer(
        server,
        final_answers(links),
        remaining,
        None,
        cached=True,
        primed=primed is not None,
        primed_why=primed,
        serves_until=until,
        label=label,
        rcode=links[-1].rcode,
    )


class Delegations:
    """Each resolver's peek at each zone's NS RRset, once per check (500 names, one peek per zone)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Server, str], bool] = {}
        self._locks: dict[tuple[Server, str], asyncio.Lock] = {}

    async def cached(
        self, resolver: Server, zone: str, options: QueryOptions, limiter: Limiter | None
    ) -> bool:
        """Peek at the zone's NS RRset (RD=0); True when the resolver now holds the delegation."""
        key = (resolver, zone.lower())
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._seen:
                ns = await ask(
                    resolver, make_query(zone, dns.rdatatype.NS), options=options, limiter=limiter
                )
                # no NS RRset even after asking: one that would recurse has not cached the zone
                empty = ns.error is None and ns.response is not None and not ns.response.answer
                self._seen[key] = not empty
        return self._seen[key]


async def peek(
    resolver: Server,
    qname: str,
    rdtype: dns.rdatatype.RdataType,
    *,
    options: QueryOptions,
    limiter: Limiter | None = None,
    now: datetime,
    changes: str | None = None,
    auth_ttl: int | None = None,
    zone: str | None = None,
    delegations: Delegations | None = None,
) -> ResolverAnswer:
    """What one resolver holds for NAME TYPE, asked with recursion off only (see the module doc)."""
    name = dns.name.from_text(qname)
    unknown = None
    if zone is not None and rdtype != dns.rdatatype.NS:
        memo = delegations or Delegations()
        if not await memo.cached(resolver, zone, options, limiter):
            unknown = "holds no delegation for the zone, so its answer may come from recursion"
    outcome = await ask(resolver, make_query(name, rdtype), options=options, limiter=limiter)
    if outcome.response is not None and outcome.response.rcode() == dns.rcode.REFUSED:
        return ResolverAnswer(
            str(resolver),
            (),
            None,
            None,
            cached=False,
            primed=True,
            primed_why=(
                "refuses cache peeks (recursion off), and opskit never asks with recursion on "
                "(that would fill the cache it measures)"
            ),
        )
    return _answer(
        outcome, name, rdtype, primed=unknown, now=now, changes=changes, auth_ttl=auth_ttl
    )


async def peek_all(
    resolvers: Sequence[Server],
    qname: str,
    rdtype: dns.rdatatype.RdataType,
    *,
    options: QueryOptions,
    now: datetime,
    changes: str | None = None,
    auth_ttl: int | None = None,
    zone: str | None = None,
    delegations: Delegations | None = None,
) -> list[ResolverAnswer]:
    """peek() at every resolver concurrently."""
    limiter = Limiter(options.per_server)
    return list(
        await asyncio.gather(
            *(
                peek(
                    r,
                    qname,
                    rdtype,
                    options=options,
                    limiter=limiter,
                    now=now,
                    changes=changes,
                    auth_ttl=auth_ttl,
                    zone=zone,
                    delegations=delegations,
                )
                for r in resolvers
            )
        )
    )
