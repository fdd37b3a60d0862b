"""One DNS question to one server, the way an operator's checker must ask it.

UDP with EDNS (1232-byte buffer, DNS Flag Day 2020), TCP when the answer is truncated, a per-query
timeout and bounded retries on timeout (tenacity), and every failure classified in words: timed out,
REFUSED, SERVFAIL, refused the TCP connection. Concurrency is bounded per server because authoritative
servers rate-limit per client network (NSD's RRL drops answers beyond 200 qps per /24 by default).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import tenacity

from opskit.dns.servers import Server

EDNS_PAYLOAD = 1232
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
PER_SERVER_CONCURRENCY = 32


@dataclass(frozen=True)
class QueryOptions:
    """How hard to try: seconds per attempt, extra attempts after a timeout, parallel queries per server."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    per_server: int = PER_SERVER_CONCURRENCY


@dataclass(frozen=True)
class Outcome:
    """What one server said (`response`), or why it said nothing usable (`error`)."""

    server: Server
    response: dns.message.Message | None
    error: str | None
    used_tcp: bool = False
    elapsed_s: float = 0.0

    @property
    def rcode(self) -> str | None:
        return None if self.response is None else dns.rcode.to_text(self.response.rcode())


DEFAULT_OPTIONS = QueryOptions()


class Limiter:
    """One semaphore per server, created inside the running loop."""

    def __init__(self, per_server: int) -> None:
        self._per_server = per_server
        self._sems: dict[Server, asyncio.Semaphore] = {}

    def __call__(self, server: Server) -> asyncio.Semaphore:
        sem = self._sems.get(server)
        if sem is None:
            sem = self._sems[server] = asyncio.Semaphore(self._per_server)
        return sem


def make_query(
    qname: str | dns.name.Name,
    rdtype: dns.rdatatype.RdataType | str,
    *,
    rd: bool = False,
    dnssec: bool = False,
) -> dns.message.QueryMessage:
    """A query with EDNS; recursion desired only when asked (authoritative questions never want it)."""
    query = dns.message.make_query(
        qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD, want_dnssec=dnssec
    )
    if not rd:
        query.flags &= ~dns.flags.RD
    return query


def describe_error(exc: BaseException, timeout_s: float, tries: int) -> str:
    """A failure in the words an operator uses."""
    if isinstance(exc, dns.exception.Timeout):
        return f"timed out ({tries} {'try' if tries == 1 else 'tries'} of {timeout_s:g} s)"
    if isinstance(exc, ConnectionRefusedError):
        return "refused the TCP connection"
    if isinstance(exc, OSError):
        return f"unreachable from here ({exc.strerror or exc})"
    if isinstance(exc, dns.exception.DNSException):
        return f"bad answer ({exc})"
    return f"{type(exc).__name__}: {exc}"


async def ask(
    server: Server,
    query: dns.message.Message,
    *,
    options: QueryOptions = DEFAULT_OPTIONS,
    limiter: Limiter | None = None,
    authoritative: bool = False,
) -> Outcome:
    """Ask one server; never raises for network trouble (the error is in the outcome)."""
    started = time.monotonic()
    sem = limiter(server) if limiter else None
    tries = 0

    async def attempt() -> tuple[dns.message.Message, bool]:
        nonlocal tries
        tries += 1
        return await dns.asyncquery.udp_with_fallback(
            query, server.host, timeout=options.timeout_s, port=server.port
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(options.retries + 1),
        retry=tenacity.retry_if_exception_type(dns.exception.Timeout),
        reraise=True,
    )
    response: dns.message.Message
    used_tcp: bool
    try:
        if sem is not None:
            async with sem:
                response, used_tcp = await retrying(attempt)
        else:
            response, used_tcp = await retrying(attempt)
    except (dns.exception.DNSException, OSError, EOFError) as exc:
        error = describe_error(exc, options.timeout_s, tries)
        if ":" in server.host and isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            error += "; if this machine has no IPv6, give -4 to ask the IPv4 addresses only"
        return Outcome(server, None, error, False, _since(started))
    return Outcome(
        server,
        response,
        classify(response, authoritative=authoritative),
        used_tcp,
        _since(started),
    )


def _since(started: float) -> float:
    return round(time.monotonic() - started, 4)


def classify(response: dns.message.Message, *, authoritative: bool) -> str | None:
    """None for a usable answer; otherwise why it cannot be used (SERVFAIL, REFUSED, not authoritative)."""
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return f"answered {dns.rcode.to_text(rcode)}"
    if authoritative and not response.flags & dns.flags.AA:
        return "not authoritative for this name (lame delegation?)"
    return None


def find(
    response: dns.message.Message,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    covers: dns.rdatatype.RdataType = dns.rdatatype.NONE,
) -> dns.rrset.RRset | None:
    """The RRset of that owner and type in the answer section, or None."""
    try:
        return response.find_rrset(response.answer, name, dns.rdataclass.IN, rdtype, covers=covers)
    except KeyError:
        return None


def rdtype_of(text: str) -> dns.rdatatype.RdataType:
    """The numeric type of "A", "AAAA", ... (ValueError names the bad type)."""
    try:
        return dns.rdatatype.RdataType.make(text.upper())
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"unknown record type {text!r}") from None
