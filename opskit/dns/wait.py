"""`dns wait`: poll until every authoritative server and every resolver returns exactly the expected set.

A resolver's TTL is the remaining life of its copy, so it flips at now + TTL (+1 s: unbound still returns
the old answer with TTL 0 in the expiry second). A resolver that jumps back to the same small TTL with the
old answer after reaching 0 serves stale data (RFC 8767); one that reports more than the published TTL
clamps. Their predictions allow one extra stale period.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import dns.name
import dns.rdatatype

from opskit.dns import family
from opskit.dns.aiorun import run_sync
from opskit.dns.cacheview import STALE_REPLY_TTL_S
from opskit.dns.chain import effective_ttl, final_answers, links_from
from opskit.dns.discovery import discover
from opskit.dns.query import Limiter, QueryOptions, ask, make_query, rdtype_of
from opskit.dns.servers import Server, ServerChoice, parse_name
from opskit.errors import UsageError

AUTHORITATIVE, RESOLVER = "authoritative", "resolver"


@dataclass(frozen=True)
class ServerState:
    """One server in one round: what it returns, whether that is the expected set, when it will flip."""

    server: str
    role: str
    answers: tuple[str, ...]
    ttl: int | None
    flipped: bool
    predicted_flip: datetime | None
    error: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class WaitResult:
    """How the wait ended: every server flipped (done), timed out, or nobody answered (blocked)."""

    name: str
    expected: tuple[str, ...]
    done: bool
    blocked: bool
    waited_s: float
    rounds: int
    servers: tuple[ServerState, ...]
    stale: tuple[str, ...] = ()  # servers seen returning the old answer at least once
    unflipped_types: tuple[str, ...] = ()  # the types some server did not return as expected
    notes: tuple[str, ...] = ()  # e.g. an AAAA still pointing at the old host while A switched


@dataclass
class _Memory:
    """Per server, what the previous rounds showed (for the serve-stale signature)."""

    answers: tuple[str, ...] = ()
    ttl: int | None = None
    label: str | None = None
    stale_period_s: int | None = None
    seen_old: bool = False


@dataclass(frozen=True)
class WaitOptions:
    """Who to watch and how."""

    nameservers: ServerChoice = field(default_factory=ServerChoice)
    resolvers: tuple[Server, ...] = ()
    types: tuple[str, ...] = ()  # default: from the expected addresses
    query: QueryOptions = field(default_factory=lambda: QueryOptions(timeout_s=1.0, retries=1))
    timeout_s: float = 600.0
    interval_s: float = 2.0


def types_for(expected: Sequence[str], given: Sequence[str]) -> list[dns.rdatatype.RdataType]:
    """A for IPv4 addresses, AAAA for IPv6, or the --type given."""
    if given:
        return [rdtype_of(t) for t in given]
    kinds: set[dns.rdatatype.RdataType] = set()
    for value in expected:
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise UsageError(
                f"--expect {value!r} is not an IP address; give --type for other records"
            ) from None
        kinds.add(dns.rdatatype.A if addr.version == 4 else dns.rdatatype.AAAA)
    return sorted(kinds)


def normalise(values: Sequence[str]) -> tuple[str, ...]:
    """Expected values as servers print them (IPv6 compressed, names fully qualified)."""
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            out.append(v if not v or v.endswith(".") or " " in v else v + ".")
    return tuple(sorted(set(out)))


def predict_flip(
    now: datetime, ttl_remaining: int | None, *, stale_period_s: int | None = None
) -> datetime | None:
    """When a cache holding the old answer should flip: now + TTL + 1 s (+ one stale period)."""
    if ttl_remaining is None:
        return None
    extra = stale_period_s or 0
    return now + timedelta(seconds=ttl_remaining + 1 + extra)


def judge_round(
    server: str,
    role: str,
    answers: tuple[str, ...],
    ttl: int | None,
    *,
    expected: tuple[str, ...],
    memory: _Memory,
    auth_ttl: int | None,
    auth_flipped: bool,
    now: datetime,
) -> ServerState:
    """Pure: one server's state this round, updating what we remember of it."""
    flipped = answers == expected
    label = memory.label
    if role == RESOLVER and not flipped:
        # the old answer back with a fresh TTL after the authoritatives switched: a conforming cache
        # would have fetched the new one, so this one serves stale data
        refreshed = ttl is not None and memory.ttl is not None and ttl > memory.ttl
        if memory.seen_old and auth_flipped and answers == memory.answers and refreshed:
            memory.stale_period_s = ttl
            label = f"serves stale answers (RFC 8767): old answer back with TTL {ttl} s"
        if label is None and ttl is not None and auth_ttl is not None and ttl > auth_ttl:
            label = f"clamps TTLs (above the published {auth_ttl} s)"
            memory.stale_period_s = memory.stale_period_s or STALE_REPLY_TTL_S
    predicted = None
    if not flipped and role == RESOLVER:
        predicted = predict_flip(now, ttl, stale_period_s=memory.stale_period_s)
    memory.answers, memory.ttl, memory.label = answers, ttl, label
    memory.seen_old = memory.seen_old or (not flipped and bool(answers))
    return ServerState(server, role, answers, ttl, flipped, predicted, None, label)


Row = tuple[Server, str, dns.rdatatype.RdataType, tuple[str, ...], int | None, str | None]


async def _poll(
    name: str,
    types: Sequence[dns.rdatatype.RdataType],
    auth: Sequence[Server],
    resolvers: Sequence[Server],
    options: QueryOptions,
    *,
    auth_only: Sequence[dns.rdatatype.RdataType] = (),
) -> list[Row]:
    """One round: (server, role, type, answers, ttl, error) for every server and type."""
    limiter = Limiter(options.per_server)
    qname = dns.name.from_text(name)
    jobs = []
    for role, servers in ((AUTHORITATIVE, auth), (RESOLVER, resolvers)):
        for server in servers:
            for t in [*types, *(auth_only if role == AUTHORITATIVE else ())]:
                q = make_query(qname, t, rd=role == RESOLVER)
                jobs.append(
                    (
                        server,
                        role,
                        t,
                        ask(
                            server,
                            q,
                            options=options,
                            limiter=limiter,
                            authoritative=role == AUTHORITATIVE,
                        ),
                    )
                )
    outcomes = await asyncio.gather(*(j[3] for j in jobs))
    rows: list[Row] = []
    for (server, role, t, _), o in zip(jobs, outcomes, strict=True):
        if o.error is not None or o.response is None:
            rows.append((server, role, t, (), None, o.error or "no answer"))
            continue
        links, _ = links_from(o.response, qname, t)
        ttl = effective_ttl(links)
        live = ttl if ttl is not None and links and not links[-1].negative else None
        rows.append((server, role, t, tuple(final_answers(links)), live, None))
    return rows


def _merged(
    rows: Sequence[Row],
) -> list[tuple[Server, str, tuple[str, ...], int | None, str | None]]:
    """Per server: every type's answers together, the largest TTL, the errors joined."""
    merged: dict[tuple[Server, str], tuple[list[str], list[int], list[str]]] = {}
    for server, role, _, answers, ttl, error in rows:
        got, ttls, errors = merged.setdefault((server, role), ([], [], []))
        if error is not None:
            errors.append(error)
            continue
        got += answers
        if ttl is not None:
            ttls.append(ttl)
    return [
        (server, role, tuple(sorted(set(a))), max(tt) if tt else None, "; ".join(e) or None)
        for (server, role), (a, tt, e) in merged.items()
    ]


def _family(rdtype: dns.rdatatype.RdataType, expected: Sequence[str]) -> tuple[str, ...]:
    """The expected values of one type: the IPv4 ones for A, the IPv6 ones for AAAA, else all."""
    if rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return tuple(expected)
    version = 4 if rdtype == dns.rdatatype.A else 6
    return tuple(v for v in expected if _version(v) == version)


def _version(value: str) -> int | None:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


def unflipped_types(
    rows: Sequence[Row], types: Sequence[dns.rdatatype.RdataType], expected: Sequence[str]
) -> tuple[str, ...]:
    """The types some answering server does not return exactly as expected yet (pure)."""
    late = {
        dns.rdatatype.to_text(t)
        for _, _, t, answers, _, error in rows
        if t in types and error is None and tuple(sorted(answers)) != _family(t, expected)
    }
    return tuple(sorted(late))


def still_published(rows: Sequence[Row], watched: Sequence[dns.rdatatype.RdataType]) -> list[str]:
    """The other address family the authoritatives still serve while only one type is switched."""
    notes = []
    for rdtype in (dns.rdatatype.AAAA, dns.rdatatype.A):
        if rdtype in watched:
            continue
        values = sorted(
            {
                v
                for _, role, t, answers, _, error in rows
                if role == AUTHORITATIVE and t == rdtype and error is None
                for v in answers
            }
        )
        if values:
            notes.append(family.still_published(dns.rdatatype.to_text(rdtype), values))
    return notes


async def _targets(name: str, options: WaitOptions) -> list[Server]:
    choice = options.nameservers
    if choice.servers:
        return list(choice.servers)
    if not choice.pins and options.resolvers:
        # watching resolvers only is fine; the authoritative view is a bonus when discovery works
        try:
            return list(
                (await discover(name, choice, options.resolvers, options.query)).nameservers
            )
        except Exception:  # noqa: BLE001 - any discovery failure leaves the resolver watch intact
            return []
    return list((await discover(name, choice, options.resolvers, options.query)).nameservers)


def wait(
    name: str,
    expected: Sequence[str],
    options: WaitOptions,
    *,
    on_round: Callable[[Sequence[ServerState]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    clock: Callable[[], datetime],
    max_rounds: int | None = None,
) -> WaitResult:
    """Poll every `interval_s` until all servers return `expected`, the timeout, or cancellation."""
    return run_sync(_wait(name, expected, options, on_round, cancelled, clock, max_rounds))


async def _wait(  # noqa: PLR0917 - the private body of wait()
    name: str,
    expected_in: Sequence[str],
    options: WaitOptions,
    on_round: Callable[[Sequence[ServerState]], None] | None,
    cancelled: Callable[[], bool] | None,
    clock: Callable[[], datetime],
    max_rounds: int | None,
) -> WaitResult:
    if not expected_in:
        raise UsageError("give at least one --expect value")
    name = parse_name("NAME", name)
    expected = normalise(expected_in)
    types = types_for(expected_in, options.types)
    auth = await _targets(name, options)
    resolvers = list(options.resolvers)
    if not auth and not resolvers:
        raise UsageError("nothing to watch: give --nameserver or --resolver")
    # the address family not being switched is asked of the authoritatives only (never of a cache)
    others = [
        t for t in (dns.rdatatype.A, dns.rdatatype.AAAA) if t not in types and not options.types
    ]
    memory: dict[tuple[Server, str], _Memory] = {}
    rows: list[Row] = []
    started = time.monotonic()
    rounds, answered_ever = 0, False
    states: list[ServerState] = []
    stale: set[str] = set()
    while True:
        rounds += 1
        now = clock()
        rows = await _poll(name, types, auth, resolvers, options.query, auth_only=others)
        polled = _merged([r for r in rows if r[2] in types])
        auth_ttls = [
            ttl for _, role, _, ttl, err in polled if role == AUTHORITATIVE and ttl and not err
        ]
        auth_ttl = max(auth_ttls) if auth_ttls else None
        auth_answers = [a for _, role, a, _, err in polled if role == AUTHORITATIVE and not err]
        auth_flipped = bool(auth_answers) and all(a == expected for a in auth_answers)
        states = []
        for server, role, answers, ttl, error in polled:
            mem = memory.setdefault((server, role), _Memory())
            if error is not None:
                states.append(
                    ServerState(str(server), role, (), None, False, None, error, mem.label)
                )
                continue
            answered_ever = True
            state = judge_round(
                str(server),
                role,
                answers,
                ttl,
                expected=expected,
                memory=mem,
                auth_ttl=auth_ttl,
                auth_flipped=auth_flipped,
                now=now,
            )
            # "old" only once the authoritatives serve the new answer (or when none are watched)
            if not state.flipped and role == RESOLVER and answers and (auth_flipped or not auth):
                stale.add(str(server))
            states.append(state)
        if on_round is not None:
            on_round(states)
        done = all(s.flipped for s in states)
        left = options.timeout_s - (time.monotonic() - started)
        if done or (cancelled is not None and cancelled()) or (max_rounds and rounds >= max_rounds):
            break
        if left <= 0:
            break
        # the last round lands on the deadline, so "timed out after 10 s" means 10 s of watching
        await asyncio.sleep(min(options.interval_s, left))
    return WaitResult(
        name=dns.name.from_text(name).to_text(),
        expected=expected,
        done=done,
        blocked=not answered_ever,
        waited_s=round(time.monotonic() - started, 3),
        rounds=rounds,
        servers=tuple(states),
        stale=tuple(sorted(stale)),
        unflipped_types=() if done else unflipped_types(rows, types, expected),
        notes=tuple(still_published(rows, types)),
    )


def predicted_wait_s(result: WaitResult, now: datetime) -> float:
    """How long a real wait should take from this round: the latest predicted flip (0 when done)."""
    flips = [s.predicted_flip for s in result.servers if not s.flipped and s.predicted_flip]
    if not flips:
        return 0.0
    return max(0.0, *((f - now).total_seconds() for f in flips))


def with_predictions(states: Sequence[ServerState], now: datetime) -> list[ServerState]:
    """States whose resolvers lack a prediction get one from their TTL (for a one-shot forecast)."""
    return [
        replace(s, predicted_flip=predict_flip(now, s.ttl))
        if s.predicted_flip is None and not s.flipped and s.role == RESOLVER
        else s
        for s in states
    ]
