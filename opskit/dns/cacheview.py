"""What resolvers hold now, asked so that the asking does not refill what is measured.

A recursive query for a record a resolver does not hold caches it with the full current TTL, so a check
through resolvers while a 24 h TTL is live adds 24 h of exposure there. We peek with recursion off first
(unbound answers from cache with `access-control: ... allow_snoop`), and only when the resolver refuses
that do we recurse, saying the probe may have primed the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import dns.name
import dns.rcode

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
    # unbound recurses even for RD=0 when it has no delegation cached; an answer carrying exactly the
    # published TTL may have been fetched by this very probe
    if primed is None and remaining is not None and remaining == auth_ttl:
        primed = f"answered with the full published TTL ({auth_ttl} s), as if fetched just now"
    label = None
    if remaining is not None and auth_ttl is not None and remaining > auth_ttl:
        label = (
            f"reports {remaining} s for a record published with TTL {auth_ttl} s: it clamps TTLs "
            "(cache-min-ttl) or serves stale answers"
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
    recurse: bool = False,
) -> ResolverAnswer:
    """What one resolver holds for NAME TYPE: RD=0 peek, RD=1 when refused (or when `recurse`)."""
    name = dns.name.from_text(qname)
    primed = "was asked with recursion on" if recurse else None
    outcome = await ask(
        resolver, make_query(name, rdtype, rd=recurse), options=options, limiter=limiter
    )
    if (
        not recurse
        and outcome.response is not None
        and outcome.response.rcode() == dns.rcode.REFUSED
    ):
        primed = "refused a cache peek (RD=0), so the probe asked with recursion on"
        outcome = await ask(
            resolver, make_query(name, rdtype, rd=True), options=options, limiter=limiter
        )
    return _answer(
        outcome, name, rdtype, primed=primed, now=now, changes=changes, auth_ttl=auth_ttl
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
    recurse: bool = False,
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
                    recurse=recurse,
                )
                for r in resolvers
            )
        )
    )
