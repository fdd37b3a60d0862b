"""Poll the bridge's counters until the drain verdict says safe, or the timeout says stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from opskit.proxy.stats import BridgeStats
from opskit.traffic.source import StatsSource
from opskit.traffic.verdict import DrainPolicy, DrainVerdict, decide


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WaitOutcome:
    """The last verdict, the stats it was computed from, and whether the wait ran out of time."""

    verdict: DrainVerdict
    stats: BridgeStats
    timed_out: bool
    cancelled: bool
    waited_s: float
    polls: int


def check(source: StatsSource, policy: DrainPolicy, *, now: datetime | None = None) -> WaitOutcome:
    """One reading, one verdict, no waiting (a dry-run, or `--timeout 0`)."""
    stats = source.read()
    verdict = decide(stats, policy, now=now or _utcnow())
    return WaitOutcome(verdict, stats, timed_out=False, cancelled=False, waited_s=0.0, polls=1)


def wait_until_safe(
    source: StatsSource,
    policy: DrainPolicy,
    *,
    timeout_s: float,
    interval_s: float = 1.0,
    on_progress: Callable[[DrainVerdict, float], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitOutcome:
    """Read, decide, sleep, repeat: until safe, `timeout_s` has passed, or `cancelled()` says stop.

    `on_progress(verdict, elapsed_s)` is called after every reading. A source that stops answering
    (the bridge died) raises Blocked out of this loop: a wait must never turn a dead bridge into "safe".
    """
    started = time.monotonic()
    polls = 0
    while True:
        stats = source.read()
        polls += 1
        verdict = decide(stats, policy, now=now())
        elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(verdict, elapsed)
        if verdict.safe:
            return WaitOutcome(verdict, stats, False, False, elapsed, polls)
        if cancelled():
            return WaitOutcome(verdict, stats, False, True, elapsed, polls)
        if elapsed >= timeout_s:
            return WaitOutcome(verdict, stats, True, False, elapsed, polls)
        sleep(max(0.01, min(interval_s, timeout_s - elapsed)))
