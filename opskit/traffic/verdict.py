"""SAFE or NOT SAFE to shut the old host down: pure, with the clock injected.

"Zero connections right now" is necessary but not sufficient (proxy-anchors.md section 4): DNS caches keep
sending new clients until switch time + old TTL, and a client that reconnects every few minutes looks
absent between two visits. So the verdict needs all three: (1) every honest cache can have forgotten the
old address, (2) active connections at most `max_active`, (3) no new connection and no byte for the
quiet window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opskit.durations import format_seconds
from opskit.proxy.stats import BridgeStats, ClientStats

# The longest common HTTP keep-alive / app heartbeat (anchors section 4).
DEFAULT_QUIET_S = 15 * 60.0
MIN_MARGIN_S = 5 * 60.0
NAMED_CLIENTS = 5  # a reason sentence names at most this many clients


@dataclass(frozen=True)
class DrainPolicy:
    """What "safe" means for this shutdown (all durations in seconds)."""

    switched_at: datetime | None = None
    old_ttl_s: float | None = None
    margin_s: float | None = None  # None: max(5 min, 10 % of the old TTL)
    quiet_s: float = DEFAULT_QUIET_S
    max_active: int = 0

    @property
    def effective_margin_s(self) -> float:
        """The margin actually added after the old TTL."""
        if self.margin_s is not None:
            return self.margin_s
        return max(MIN_MARGIN_S, 0.1 * (self.old_ttl_s or 0.0))

    @property
    def caches_forget_at(self) -> datetime | None:
        """switch time + old TTL + margin; None when the switch time or the TTL is not known."""
        if self.switched_at is None or self.old_ttl_s is None:
            return None
        return self.switched_at + timedelta(seconds=self.old_ttl_s + self.effective_margin_s)


@dataclass(frozen=True)
class DrainVerdict:
    """The answer; the first six fields are the `--json` contract of `opskit traffic wait`."""

    safe: bool
    reasons: tuple[str, ...]
    active: int
    last_activity: datetime | None
    earliest_safe_at: datetime | None  # no earlier than this, if nothing new arrives; None: unknown
    clients: tuple[ClientStats, ...]  # newest first
    would_cut: tuple[str, ...]  # addresses a nudge or a shutdown now would cut, newest first
    caches: str  # "expired" | "waiting" | "unknown"
    quiet_for_s: float
    checked_at: datetime

    @property
    def wait_s(self) -> float | None:
        """Seconds until `earliest_safe_at` (0 when it has passed; None when unknown)."""
        if self.earliest_safe_at is None:
            return None
        return max(0.0, (self.earliest_safe_at - self.checked_at).total_seconds())


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the stats file (UTC when it carries no zone); None stays None."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def clock(moment: datetime, now: datetime) -> str:
    """ "02:41:07 UTC" near now, "02:41 UTC" today, with the date otherwise."""
    # Rounded up, never down: a "safe from" time shown early would be a lie at the worst moment.
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    if abs((moment - now).total_seconds()) < 600:
        return f"{moment:%H:%M:%S} UTC"
    if moment.second:
        moment = moment.replace(second=0) + timedelta(minutes=1)
    if moment.date() == now.astimezone(UTC).date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _ago(seconds: float) -> str:
    return format_seconds(max(0.0, seconds)) if seconds >= 1 else "0s"


def newest_first(clients: list[ClientStats] | tuple[ClientStats, ...]) -> tuple[ClientStats, ...]:
    """Clients ordered by last seen, newest first (the people still arriving matter most)."""
    return tuple(sorted(clients, key=lambda c: c.last_seen or "", reverse=True))


def _active_reason(active: int, policy: DrainPolicy, cut: list[ClientStats], now: datetime) -> str:
    noun = "connection" if active == 1 else "connections"
    named = []
    for c in cut[:NAMED_CLIENTS]:
        seen = parse_time(c.last_seen)
        idle = f"idle {_ago((now - seen).total_seconds())}" if seen else "idle ?"
        count = f" x{c.active}" if c.active > 1 else ""
        named.append(f"{c.address}{count} ({idle})")
    more = f", and {len(cut) - NAMED_CLIENTS} more" if len(cut) > NAMED_CLIENTS else ""
    limit = f" (allowed: {policy.max_active})" if policy.max_active else ""
    who = f": {', '.join(named)}{more}" if named else ""
    return f"{active} {noun} still active{limit}{who}"


def _cache_reason(policy: DrainPolicy, forget_at: datetime | None, now: datetime) -> str | None:
    if policy.switched_at is None and policy.old_ttl_s is None:
        return (
            "unknown when caches forget the old address: pass --switched-at and --old-ttl "
            "(or journal the switch with dns.update)"
        )
    if policy.switched_at is None:
        return "unknown when the address was switched: pass --switched-at (or journal it with dns.update)"
    if forget_at is None:
        return "unknown how long caches keep the old address: pass --old-ttl (the TTL before the switch)"
    if now < forget_at:
        return (
            f"caches may still hold the old address until {clock(forget_at, now)} "
            f"(switch {clock(policy.switched_at, now)} + TTL {format_seconds(policy.old_ttl_s or 0)}"
            f" + margin {format_seconds(policy.effective_margin_s)})"
        )
    return None


def decide(stats: BridgeStats, policy: DrainPolicy, *, now: datetime) -> DrainVerdict:
    """The drain verdict for one reading of the bridge's stats file."""
    forget_at = policy.caches_forget_at
    caches = "unknown" if forget_at is None else ("expired" if now >= forget_at else "waiting")
    last = parse_time(stats.last_activity)
    quiet_since = last or parse_time(stats.started_at) or now
    quiet_for_s = max(0.0, (now - quiet_since).total_seconds())
    clients = newest_first(stats.clients)
    cut = [c for c in clients if c.active > 0]

    blockers: list[str] = []
    cache_reason = _cache_reason(policy, forget_at, now)
    if cache_reason:
        blockers.append(cache_reason)
    if stats.active > policy.max_active:
        blockers.append(_active_reason(stats.active, policy, cut, now))
    if quiet_for_s < policy.quiet_s:
        since = (
            f"last activity {clock(last, now)}" if last else "no traffic since the bridge started"
        )
        blockers.append(
            f"quiet for {_ago(quiet_for_s)} of {format_seconds(policy.quiet_s)} ({since})"
        )

    earliest: datetime | None = None
    if forget_at is not None:
        # Closing the remaining connections is itself activity: the quiet window restarts then.
        quiet_from = now if stats.active > policy.max_active else quiet_since
        earliest = max(forget_at, quiet_from + timedelta(seconds=policy.quiet_s), now)

    if blockers or forget_at is None:
        reasons = tuple(blockers)
    else:
        reasons = (
            f"caches have forgotten the old address since {clock(forget_at, now)}",
            f"{stats.active} active (allowed: {policy.max_active})",
            f"quiet for {_ago(quiet_for_s)} (needed {format_seconds(policy.quiet_s)})",
        )
    return DrainVerdict(
        safe=not blockers,
        reasons=reasons,
        active=stats.active,
        last_activity=last,
        earliest_safe_at=earliest,
        clients=clients,
        would_cut=tuple(c.address for c in cut),
        caches=caches,
        quiet_for_s=quiet_for_s,
        checked_at=now,
    )
