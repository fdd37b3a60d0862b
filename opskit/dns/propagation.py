"""Wait until every authoritative server serves a change, and say when the last one did.

A change is live for resolvers only once every server they may ask serves it: the safe time after a TTL
lowering counts from the slowest secondary, not from the primary that took the update (issue #12, point 2).
Every server is polled on its own, concurrently, each bounded by the propagation timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dns.message
import dns.name
import dns.rdatatype

from opskit.dns.aiorun import run_sync
from opskit.dns.chain import links_from
from opskit.dns.discovery import discover
from opskit.dns.query import QueryOptions, ask, make_query
from opskit.dns.servers import DNS_PORT, Server, ServerChoice
from opskit.errors import Blocked

DEFAULT_PROPAGATION_TIMEOUT_S = 120.0
FIRST_POLL_S = 0.1
MAX_POLL_S = 2.0

Published = tuple[tuple[str, ...], int] | None  # (sorted values, TTL), None: no such RRset


@dataclass(frozen=True)
class ServerState:
    """One authoritative address: when it first served the change, or what it still serves."""

    server: str
    name: str | None  # the NS name it was found under
    served_at: datetime | None
    serves: str  # what it served last ("192.0.2.10 ttl 3600", "nothing", or why it did not answer)

    @property
    def who(self) -> str:
        return f"{self.name.rstrip('.')} ({self.server})" if self.name else self.server


def published(response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> Published:
    """The RRset an authoritative answer publishes for NAME TYPE (None: it has none)."""
    links, _ = links_from(response, qname, dns.rdatatype.RdataType.make(rdtype))
    last = links[-1] if links else None
    if last is None or last.negative or last.name != qname.to_text() or last.ttl is None:
        return None
    return tuple(sorted(last.answers)), last.ttl


def shown(data: Published) -> str:
    return f"{', '.join(data[0])} ttl {data[1]}" if data else "nothing"


async def _until_served(  # noqa: PLR0917 - one server's poll, called once per server
    server: Server,
    qname: dns.name.Name,
    rdtype: int,
    wanted: Published,
    timeout_s: float,
    options: QueryOptions,
    started: tuple[datetime, float],
) -> ServerState:
    wall, mono = started
    deadline = mono + timeout_s
    pause = FIRST_POLL_S
    last = "no answer yet"
    while True:
        query = make_query(qname, dns.rdatatype.RdataType.make(rdtype))
        outcome = await ask(server, query, options=options, authoritative=True)
        seen_at = wall + timedelta(seconds=time.monotonic() - mono)
        if outcome.error is None and outcome.response is not None:
            data = published(outcome.response, qname, rdtype)
            if data == wanted:
                return ServerState(str(server), server.name, seen_at, shown(data))
            last = shown(data)
        else:
            last = outcome.error or "no answer"
        left = deadline - time.monotonic()
        if left <= 0:
            return ServerState(str(server), server.name, None, last)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_POLL_S)


async def watch(  # noqa: PLR0917 - the change and where to watch it
    servers: Sequence[Server],
    name: str,
    rdtype: int,
    wanted: Published,
    timeout_s: float,
    options: QueryOptions,
    started: tuple[datetime, float],
) -> tuple[ServerState, ...]:
    """Each server's state once it serves `wanted` or `timeout_s` after `started` (wall, monotonic)."""
    qname = dns.name.from_text(name)
    quick = QueryOptions(timeout_s=min(options.timeout_s, 1.0), retries=0)
    return tuple(
        await asyncio.gather(
            *(_until_served(s, qname, rdtype, wanted, timeout_s, quick, started) for s in servers)
        )
    )


def last_served(states: Sequence[ServerState]) -> datetime | None:
    """When the last server served the change (None while any server does not)."""
    times = [s.served_at for s in states]
    if not times or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def lagging(states: Sequence[ServerState]) -> list[ServerState]:
    """The servers that never served the change."""
    return [s for s in states if s.served_at is None]


def authoritative_set(
    primary: Server,
    zone: str,
    choice: ServerChoice,
    resolvers: Sequence[Server],
    options: QueryOptions,
) -> tuple[tuple[Server, ...], tuple[str, ...]]:
    """The primary and every server resolvers may ask for the zone (as `dns check` finds them).

    The walk starts at the primary (and at --nameserver); without --auth-port, servers found through
    NS records are asked on the primary's port, as on a lab where every server shares one.
    """
    if not choice.servers and choice.auth_port == DNS_PORT:
        choice = dataclasses.replace(choice, auth_port=primary.port)
    try:
        found = run_sync(discover(zone, choice, resolvers, options, also_ask=[primary]))
    except Blocked as exc:
        raise Blocked(
            f"cannot find every authoritative server of {zone} to verify the change on ({exc}); "
            "nothing was changed (give --nameserver NAME=ADDR:PORT and --auth-port)"
        ) from None
    # the primary's address found under an NS name is the primary itself, on the port we were given
    servers = {
        (primary if s.host == primary.host else s): None for s in (primary, *found.nameservers)
    }
    named = {s.host: s.name for s in found.nameservers if s.name}
    return (
        tuple(Server(s.host, s.port, s.name or named.get(s.host)) for s in servers),
        found.problems + found.notes,
    )
