"""Ask every authoritative address the same question, recursion off, and keep each answer apart.

Answers are compared with their TTLs and the zone's SOA serial: two servers with the same serial and
different data disagree (a zone reloaded without a serial bump), and so do equal data under two serials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import dns.name
import dns.rdatatype

from opskit.dns.chain import effective_ttl, final_answers, links_from
from opskit.dns.negative import soa_serial
from opskit.dns.query import Limiter, QueryOptions, ask, make_query
from opskit.dns.report import Link, NameserverAnswer
from opskit.dns.servers import Server


async def serials(
    zone: str, servers: Sequence[Server], *, options: QueryOptions, limiter: Limiter
) -> dict[Server, int | str]:
    """Each server's SOA serial for the zone, or why it gave none."""
    outcomes = await asyncio.gather(
        *(
            ask(
                s,
                make_query(zone, dns.rdatatype.SOA),
                options=options,
                limiter=limiter,
                authoritative=True,
            )
            for s in servers
        )
    )
    result: dict[Server, int | str] = {}
    for o in outcomes:
        serial = soa_serial(o.response) if o.response is not None and o.error is None else None
        result[o.server] = serial if serial is not None else (o.error or "no SOA in its answer")
    return result


async def observe(
    qname: str,
    rdtype: dns.rdatatype.RdataType,
    zone: str,
    servers: Sequence[Server],
    zone_serials: Mapping[Server, int | str],
    *,
    options: QueryOptions,
    limiter: Limiter,
    changes: str | None = None,
) -> tuple[list[NameserverAnswer], dns.name.Name | None]:
    """Every server's view of NAME TYPE, and the CNAME target outside this zone still to follow."""
    name = dns.name.from_text(qname)
    query = make_query(name, rdtype, dnssec=True)
    outcomes = await asyncio.gather(
        *(ask(s, query, options=options, limiter=limiter, authoritative=True) for s in servers)
    )
    answers: list[NameserverAnswer] = []
    pending: dns.name.Name | None = None
    for o in outcomes:
        serial_or_error = zone_serials.get(o.server)
        serial = serial_or_error if isinstance(serial_or_error, int) else None
        if o.error is not None or o.response is None:
            answers.append(
                NameserverAnswer(str(o.server), (), None, serial, o.error or "no answer")
            )
            continue
        links, more = links_from(o.response, name, rdtype, dns.name.from_text(zone))
        pending = pending or more
        answers.append(
            NameserverAnswer(
                str(o.server),
                final_answers(links),
                effective_ttl(links, changes),
                serial,
                None if links else "answered with neither data nor a SOA",
                tuple(links),
                o.used_tcp,
            )
        )
    return answers, pending


def consensus(answers: Sequence[NameserverAnswer]) -> tuple[Link, ...]:
    """The chain most servers gave (ties: the first server's), for reporting the record once."""
    counts: dict[tuple[Link, ...], int] = {}
    for a in answers:
        if a.error is None and a.chain:
            counts[a.chain] = counts.get(a.chain, 0) + 1
    if not counts:
        return ()
    return max(counts, key=lambda chain: counts[chain])
