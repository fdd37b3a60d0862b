"""A fleet of simulated drivers' phones: resolve the name, hold a connection, heartbeat, reconnect.

Each phone resolves through its own caching stub that honours TTLs (`StubCache`), as a phone's OS does.
Some phones also keep an address past its TTL (`stale_s`), as many mobile apps and JVMs do: those are the
drivers who still arrive at the old address after the switch, and whom the bridge carries. Some hold their
connection for the whole night (`holder`): only a stop of the old service or a nudge makes them reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import dns.asyncquery
import dns.message
import dns.rdatatype

from opskit.aio import spawn


@dataclass
class _Entry:
    addresses: list[str]
    expires_at: float  # monotonic
    resolved_at: float


class StubCache:
    """A caching stub resolver: asks the authoritative server, keeps each answer for its TTL."""

    def __init__(self, server: str, port: int, *, timeout_s: float = 1.0) -> None:
        self.server, self.port, self.timeout_s = server, port, timeout_s
        self._cache: dict[str, _Entry] = {}
        self.queries = 0

    async def resolve(self, name: str, *, keep_stale_s: float = 0.0) -> list[str]:
        """The A records of `name` (following a CNAME in the answer); cached until the TTL runs out.

        `keep_stale_s` keeps an expired answer that much longer (an app-level cache that ignores TTLs).
        """
        now = time.monotonic()
        entry = self._cache.get(name)
        if entry is not None and now < entry.expires_at + keep_stale_s:
            return entry.addresses
        query = dns.message.make_query(name, "A")
        self.queries += 1
        response = await dns.asyncquery.udp(
            query, self.server, port=self.port, timeout=self.timeout_s
        )
        addresses: list[str] = []
        ttl = 0
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.A:
                addresses += [rd.address for rd in rrset]
                ttl = rrset.ttl
        if not addresses:
            raise LookupError(f"{name}: no A record")
        # A stale app cache keeps what it first resolved until its own timer runs out, counted from then.
        self._cache[name] = _Entry(addresses, now + ttl, now)
        return addresses

    def flush(self) -> None:
        self._cache.clear()


def phone_address(client_id: int) -> str:
    """The loopback source address of phone N (Linux routes all of 127/8 to lo)."""
    return f"127.0.1.{client_id % 250 + 1}"


@dataclass
class ClientRecord:
    """One phone's night: which host answered, where it connected, what failed."""

    client_id: int
    holder: bool
    stale_s: float
    answered_by: Counter[str] = field(default_factory=Counter)
    last_answered_by: str | None = None
    last_address: str | None = None
    connects: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, address, ok)
    carried: list[float] = field(default_factory=list)  # times of connects to old, answered by new
    first_answers: list[tuple[float, str, str]] = field(default_factory=list)  # (t, address, host)
    failures: int = 0


@dataclass(frozen=True)
class FleetSummary:
    """The fleet's counters for the dashboard and the final sentence of the demo."""

    clients: int
    connected: int
    served_by: dict[str, int]  # last host that answered each client
    attempts_to_old_after_switch: int
    carried_by_bridge: (
        int  # connects to the old address after the switch that the new host answered
    )
    failures: int
    failures_after_switch: int
    all_on_new: bool
    # Every attempt at the old address after the switch, accounted for (they add up to the attempts):
    served_by_old_after_switch: int = 0  # the old service still answered (before it stopped)
    refused_at_old_after_switch: int = 0  # nobody listened: the old service stopped, no bridge yet
    unanswered_at_old_after_switch: int = 0  # connected, closed before any answer (a stop, a nudge)


def attempts_sentence(fleet: FleetSummary) -> str:
    """Where every attempt at the old address after the switch went; the parts add up to the whole."""
    parts = [f"the bridge carried {fleet.carried_by_bridge}"]
    parts.append(f"the old service (not yet stopped) served {fleet.served_by_old_after_switch}")
    parts.append(
        f"{fleet.refused_at_old_after_switch} refused (the old service had stopped and the bridge "
        "had not yet taken its port)"
    )
    if fleet.unanswered_at_old_after_switch:
        parts.append(f"{fleet.unanswered_at_old_after_switch} closed before any answer")
    return (
        f"After the switch, {fleet.attempts_to_old_after_switch} connection attempts still arrived at "
        f"the old address: {', '.join(parts)}. Without the bridge, {fleet.carried_by_bridge} "
        "drivers could not have connected."
    )


@dataclass(frozen=True)
class FleetConfig:
    """How many phones, how they behave, and how long the fleet may run at most."""

    name: str
    dns_server: str
    dns_port: int
    service_port: int
    clients: int = 12
    holders: float = 0.25  # share of phones that hold one connection all night
    stale: float = 0.25  # share of phones that keep an address past its TTL
    stale_s: float = 6.0
    heartbeat_s: float = 0.5
    holder_heartbeat_s: float = 2.5  # holders are quiet: a nudge after idle time reaches them
    session_s: tuple[float, float] = (1.5, 4.0)  # normal phones reconnect after this long
    retry_s: float = 0.3
    max_duration_s: float = 300.0
    seed: int = 6


class Fleet:
    """Runs `FleetConfig.clients` phones on the current loop until `stop()` or `max_duration_s`."""

    def __init__(self, config: FleetConfig, *, old_address: str, new_address: str) -> None:
        self.config = config
        self.old_address, self.new_address = old_address, new_address
        self.switched_at: float | None = None  # monotonic
        rng = random.Random(config.seed)  # noqa: S311 - reproducible behaviour, not security
        self._rng = rng
        n_hold = round(config.clients * config.holders)
        n_stale = round(config.clients * config.stale)
        self.records = [
            ClientRecord(
                client_id=i,
                holder=i < n_hold,
                # The ranges overlap: a phone that both holds and keeps a stale address stays on the
                # bridge until a nudge makes it reconnect.
                stale_s=config.stale_s if n_hold // 2 <= i < n_hold // 2 + n_stale else 0.0,
            )
            for i in range(config.clients)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._deadline = 0.0

    def mark_switch(self, at: float | None = None) -> None:
        """Remember when DNS was switched (monotonic; now by default), for the after-switch counters."""
        self.switched_at = time.monotonic() if at is None else at

    async def start(self) -> None:
        self._deadline = time.monotonic() + self.config.max_duration_s
        for record in self.records:
            self._tasks.append(spawn(self._phone(record), name=f"phone-{record.client_id}"))
            await asyncio.sleep(0.02)  # phones come online over a moment, not in one burst

    async def stop(self) -> None:
        """Stop every phone and close its connection."""
        for writer in list(self._writers):
            writer.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)
        self._tasks.clear()

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def summary(self) -> FleetSummary:
        served = Counter(r.last_answered_by or "none" for r in self.records)
        after = self.switched_at
        to_old = [
            c
            for r in self.records
            for c in r.connects
            if after is not None and c[0] >= after and c[1] == self.old_address
        ]
        carried = sum(
            1 for r in self.records for t in r.carried if after is not None and t >= after
        )
        fails_after = sum(
            1
            for r in self.records
            for c in r.connects
            if after is not None and c[0] >= after and not c[2]
        )
        firsts = [
            f
            for r in self.records
            for f in r.first_answers
            if after is not None and f[0] >= after and f[1] == self.old_address
        ]
        refused = sum(1 for c in to_old if not c[2])
        served_old = sum(1 for f in firsts if f[2] == "old")
        return FleetSummary(
            clients=len(self.records),
            connected=len(self._writers),
            served_by=dict(served),
            attempts_to_old_after_switch=len(to_old),
            carried_by_bridge=carried,
            failures=sum(r.failures for r in self.records),
            failures_after_switch=fails_after,
            all_on_new=all(r.last_answered_by == "new" for r in self.records),
            served_by_old_after_switch=served_old,
            refused_at_old_after_switch=refused,
            unanswered_at_old_after_switch=len(to_old) - refused - served_old - carried,
        )

    async def _phone(self, record: ClientRecord) -> None:
        stub = StubCache(self.config.dns_server, self.config.dns_port)
        cfg = self.config
        while time.monotonic() < self._deadline:
            try:
                addresses = await stub.resolve(cfg.name, keep_stale_s=record.stale_s)
            except (LookupError, OSError, TimeoutError, ValueError):
                record.failures += 1
                await asyncio.sleep(cfg.retry_s)
                continue
            address = addresses[0]
            record.last_address = address
            try:
                await self._session(record, address)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                record.failures += 1
                await asyncio.sleep(cfg.retry_s)

    async def _session(self, record: ClientRecord, address: str) -> None:
        cfg = self.config
        now = time.monotonic()
        try:
            # Each phone has its own source address (127.0.1.N), so the bridge counts it as one client.
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    address, cfg.service_port, local_addr=(phone_address(record.client_id), 0)
                ),
                timeout=2,
            )
        except (OSError, TimeoutError):
            record.connects.append((now, address, False))
            raise
        record.connects.append((now, address, True))
        self._writers.add(writer)
        heartbeat = cfg.holder_heartbeat_s if record.holder else cfg.heartbeat_s
        ends = self._deadline if record.holder else now + self._rng.uniform(*cfg.session_s)
        first = True
        try:
            while time.monotonic() < min(ends, self._deadline):
                writer.write(f"heartbeat phone-{record.client_id}\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), timeout=5)
                if not line:
                    return  # the server (or a nudge) closed it: reconnect, re-resolving
                host = line.decode(errors="replace").split(":", 1)[0]
                record.answered_by[host] += 1
                record.last_answered_by = host
                if first and address == self.old_address and host == "new":
                    record.carried.append(now)
                if first:
                    record.first_answers.append((now, address, host))
                first = False
                # Wait for the next heartbeat while watching for a close, so a nudge is seen at once.
                with contextlib.suppress(TimeoutError):
                    if not await asyncio.wait_for(reader.read(1), timeout=heartbeat):
                        return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
