"""The drain verdict across several bridges (a bridge on each old host of a fleet): SAFE only when every
bridge is safe; otherwise the busy ones are named. A bridge whose stats cannot be read makes the whole
answer "cannot tell" (its source raises Blocked), never "safe".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opskit.traffic.source import StatsSource
from opskit.traffic.verdict import DrainPolicy, DrainVerdict, decide


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BridgeVerdict:
    """One bridge's verdict, named by its stats source."""

    bridge: str
    verdict: DrainVerdict


@dataclass(frozen=True)
class FleetVerdict:
    """`safe` only when every bridge is; `busy` names the bridges that are not (the `--json` contract)."""

    safe: bool
    busy: tuple[str, ...]
    bridges: tuple[BridgeVerdict, ...]
    timed_out: bool
    waited_s: float


def decide_all(
    sources: Sequence[StatsSource], policy: DrainPolicy, *, now: datetime
) -> tuple[BridgeVerdict, ...]:
    """One reading of every bridge, one verdict each."""
    return tuple(BridgeVerdict(s.label, decide(s.read(), policy, now=now)) for s in sources)


def wait_all_safe(
    sources: Sequence[StatsSource],
    policy: DrainPolicy,
    *,
    timeout_s: float,
    interval_s: float = 1.0,
    on_progress: Callable[[tuple[BridgeVerdict, ...], float], None] | None = None,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> FleetVerdict:
    """Read every bridge, decide, sleep, repeat: until all are safe or `timeout_s` has passed."""
    started = time.monotonic()
    while True:
        verdicts = decide_all(sources, policy, now=now())
        elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(verdicts, elapsed)
        busy = tuple(b.bridge for b in verdicts if not b.verdict.safe)
        if not busy or elapsed >= timeout_s:
            return FleetVerdict(not busy, busy, verdicts, timed_out=bool(busy), waited_s=elapsed)
        sleep(max(0.01, min(interval_s, timeout_s - elapsed)))
