"""SAFE or NOT SAFE to shut the old host down: pure, with the clock injected.

"Zero connections right now" is necessary but not sufficient (proxy-anchors.md section 4): DNS caches keep
sending new clients until switch time + old TTL, and a client that reconnects every few minutes looks
absent between two visits. So the verdict needs all three: (1) every honest cache can have forgotten the
old address, (2) active connections at most `max_active`, (3) no new connection and no byte for the
quiet window.

Quiet is only ever measured over time some bridge was watching: the stats file's "watch" history lists
every bridge lifetime, and a gap between two (a restart, a crash) is not quiet: clients refused then
left no trace. Clients named with `allow_clients` may stay connected, and their own traffic (heartbeats)
does not restart the quiet window. What the bridge does not carry (UDP) is named, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opskit.durations import format_seconds
from opskit.proxy.stats import BridgeStats, ClientStats, parse_time

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
    allow_clients: tuple[
        str, ...
    ] = ()  # clients that may remain; their traffic does not break quiet
    notes: tuple[
        str, ...
    ] = ()  # how the options were read ("--switched-at 13:49 read as ..."), shown

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
class Gap:
    """A stretch of time no bridge was watching the old address (between a stop or crash and a start)."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


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
    gaps: tuple[Gap, ...] = ()  # times no bridge was watching, oldest first: never counted as quiet
    not_watched: tuple[str, ...] = ()  # "UDP to port 5060 is not watched"
    notes: tuple[str, ...] = ()  # how the options were read

    @property
    def wait_s(self) -> float | None:
        """Seconds until `earliest_safe_at` (0 when it has passed; None when unknown)."""
        if self.earliest_safe_at is None:
            return None
        return max(0.0, (self.earliest_safe_at - self.checked_at).total_seconds())


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


def _active_reason(
    active: int, limit: int, cut: list[ClientStats], now: datetime, what: str = "still active"
) -> str:
    noun = "connection" if active == 1 else "connections"
    named = []
    for c in cut[:NAMED_CLIENTS]:
        seen = parse_time(c.last_seen)
        idle = f"idle {_ago((now - seen).total_seconds())}" if seen else "idle ?"
        count = f" x{c.active}" if c.active > 1 else ""
        named.append(f"{c.address}{count} ({idle})")
    more = f", and {len(cut) - NAMED_CLIENTS} more" if len(cut) > NAMED_CLIENTS else ""
    allowed = f" (allowed: {limit})" if limit else ""
    who = f": {', '.join(named)}{more}" if named else ""
    return f"{active} {noun} {what}{allowed}{who}"


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


def watch_gaps(stats: BridgeStats) -> tuple[Gap, ...]:
    """Times between bridge lifetimes (from the "watch" history), oldest first."""
    spans = sorted(stats.watch, key=lambda w: w.started_at)
    gaps = []
    covered_until = None
    for n, span in enumerate(spans):
        if covered_until is not None and span.started_at > covered_until:
            gaps.append(Gap(covered_until, span.started_at))
        # Only the newest lifetime may be open (it is the one writing); an older open one broke the
        # contract (its successor should have closed it), so nothing after its start is vouched for.
        open_end = stats.updated if n == len(spans) - 1 else span.started_at
        end = span.stopped_at or open_end
        covered_until = end if covered_until is None else max(covered_until, end)
    return tuple(gaps)


def watched_since(stats: BridgeStats, gaps: tuple[Gap, ...]) -> datetime | None:
    """Since when some bridge has watched without a gap (None: not known at all)."""
    if gaps:
        return gaps[-1].end
    if stats.watch:
        return min(w.started_at for w in stats.watch)
    # A writer without a "watch" history: only this process's own lifetime is known to be watched.
    return stats.started


def not_watched(stats: BridgeStats) -> tuple[str, ...]:
    """What reaches the old address but not the bridge: "UDP to port 5060 is not watched"."""
    port = stats.listener.rpartition(":")[2]
    return tuple(
        f"{proto.upper()} to port {port} is not watched (the bridge carries "
        f"{' and '.join(p.upper() for p in stats.carries) or 'nothing'})"
        for proto in ("tcp", "udp")
        if proto not in stats.carries
    )


def _last_counted_activity(
    stats: BridgeStats, allowed: frozenset[str]
) -> tuple[datetime | None, str | None]:
    """The last activity that breaks quiet: everything, or everything but the allowed clients'."""
    if not allowed:
        return stats.last_activity_at, None
    if stats.clients_partial:
        # Rows may be missing: whatever is not in them may have been anyone, so all activity counts.
        return (
            stats.last_activity_at,
            "the per-client rows are partial: every client's traffic counts",
        )
    seen = [c.last_seen_at for c in stats.clients if c.address not in allowed]
    if stats.clients_other is not None and stats.clients_other.last_seen:
        seen.append(parse_time(stats.clients_other.last_seen))
    known = [moment for moment in seen if moment is not None]
    return (max(known) if known else None), None


def _active_blocker(
    stats: BridgeStats, policy: DrainPolicy, cut: list[ClientStats], now: datetime
) -> str | None:
    allowed = frozenset(policy.allow_clients)
    if not allowed:
        if stats.active > policy.max_active:
            return _active_reason(stats.active, policy.max_active, cut, now)
        return None
    others = [c for c in cut if c.address not in allowed]
    listed = sum(c.active for c in cut)
    unattributed = stats.active - listed  # folded into clients_other, or rows missing
    if stats.clients_partial and stats.active:
        return (
            f"{stats.active} active, but the per-client rows are partial: cannot tell the allowed "
            "clients from others"
        )
    if others or unattributed > 0:
        count = sum(c.active for c in others) + max(0, unattributed)
        return _active_reason(count, 0, others, now, "still active from clients not allowed")
    if stats.active > policy.max_active:
        return _active_reason(stats.active, policy.max_active, cut, now)
    return None


def decide(stats: BridgeStats, policy: DrainPolicy, *, now: datetime) -> DrainVerdict:
    """The drain verdict for one reading of the bridge's stats file."""
    forget_at = policy.caches_forget_at
    caches = "unknown" if forget_at is None else ("expired" if now >= forget_at else "waiting")
    allowed = frozenset(policy.allow_clients)
    last, partial_note = _last_counted_activity(stats, allowed)
    gaps = watch_gaps(stats)
    watched_from = watched_since(stats, gaps)
    # Quiet starts at the last counted activity, or where watching (re)started, whichever is later.
    quiet_since = max((m for m in (last, watched_from) if m is not None), default=now)
    quiet_for_s = max(0.0, (now - quiet_since).total_seconds())
    clients = newest_first(stats.clients)
    cut = [c for c in clients if c.active > 0]

    blockers: list[str] = []
    cache_reason = _cache_reason(policy, forget_at, now)
    if cache_reason:
        blockers.append(cache_reason)
    active_reason = _active_blocker(stats, policy, cut, now)
    if active_reason:
        blockers.append(active_reason)
    if quiet_for_s < policy.quiet_s:
        if last is not None and watched_from is not None and last >= watched_from:
            since = f"last activity {clock(last, now)}"
        elif gaps:
            gap = gaps[-1]
            since = (
                f"nothing watched the old address from {clock(gap.start, now)} to "
                f"{clock(gap.end, now)} ({_ago(gap.seconds)}, a bridge restart): a gap is not quiet"
            )
        elif last is None:
            since = "no traffic since the bridge started"
        else:
            since = f"watched only since the bridge started at {clock(quiet_since, now)}"
        blockers.append(
            f"quiet for {_ago(quiet_for_s)} of {format_seconds(policy.quiet_s)} ({since})"
        )
        if partial_note:
            blockers[-1] += f"; {partial_note}"

    earliest: datetime | None = None
    if forget_at is not None:
        # Closing the remaining connections is itself activity: the quiet window restarts then.
        quiet_from = now if active_reason else quiet_since
        earliest = max(forget_at, quiet_from + timedelta(seconds=policy.quiet_s), now)

    unwatched = not_watched(stats)
    if blockers or forget_at is None:
        reasons = tuple(blockers)
    else:
        allowed_note = f", only from {', '.join(policy.allow_clients)}" if allowed else ""
        reasons = (
            f"caches have forgotten the old address since {clock(forget_at, now)}",
            f"{stats.active} active (allowed: {policy.max_active}{allowed_note})",
            f"quiet for {_ago(quiet_for_s)} (needed {format_seconds(policy.quiet_s)})",
            *unwatched,
        )
    return DrainVerdict(
        safe=not blockers,
        reasons=reasons,
        active=stats.active,
        last_activity=stats.last_activity_at,
        earliest_safe_at=earliest,
        clients=clients,
        would_cut=tuple(c.address for c in cut),
        caches=caches,
        quiet_for_s=quiet_for_s,
        checked_at=now,
        gaps=gaps,
        not_watched=unwatched,
        notes=policy.notes,
    )
