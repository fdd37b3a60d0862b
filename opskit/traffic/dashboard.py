"""The live view of `opskit traffic watch`: counters, the newest clients, a sparkline, and the verdict.

The renderable is built from plain values (stats, verdict, history); the command prints it once to a pipe
or refreshes it in a rich `Live` on a terminal. rich is imported inside `render` only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opskit.durations import format_seconds
from opskit.proxy.stats import BridgeStats, parse_time
from opskit.traffic.source import StatsSource
from opskit.traffic.verdict import DrainPolicy, DrainVerdict, clock, decide

BARS = "▁▂▃▄▅▆▇█"
HISTORY_POINTS = 50  # two sparklines of this width fit an 80-column terminal
TOP_CLIENTS = 20


def sparkline(values: Sequence[int]) -> str:
    """One character per sample, scaled to the largest; an empty history is an empty string."""
    if not values:
        return ""
    top = max(values)
    if top == 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def human_bytes(count: int) -> str:
    """1.2 KiB, 3.4 MiB: bytes the way a person compares them."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


@dataclass
class History:
    """The last samples (one per refresh) for the sparklines: connections open, and new ones.

    Short connections (one HTTP request) open and close between two refreshes, so "active" alone
    would draw a flat line while clients still arrive: "new" shows them.
    """

    active: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    new: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    last_total: int | None = None

    def add(self, stats: BridgeStats) -> None:
        self.active.append(stats.active)
        # A restarted bridge may report a smaller total: count nothing rather than a negative.
        previous = stats.total if self.last_total is None else self.last_total
        self.new.append(max(0, stats.total - previous))
        self.last_total = stats.total


def render(stats: BridgeStats, verdict: DrainVerdict, history: History, *, now: datetime) -> Any:
    """The dashboard as a rich renderable."""
    # rich loads only when a dashboard is drawn: `traffic wait` never pays for it.
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    head = Text()
    head.append(f"bridge {stats.listener} -> {stats.target}", style="bold")
    started = parse_time(stats.started_at)
    since = f" since {clock(started, now)}" if started else ""
    head.append(f"\n{stats.engine} engine, {stats.mode} mode, {stats.state}{since}")
    counters = Text(
        f"active {stats.active}   total {stats.total}   in {human_bytes(stats.bytes_in)}"
        f"   out {human_bytes(stats.bytes_out)}   errors {stats.errors}   clients {len(stats.clients)}"
    )
    spark = Text(
        f"open {sparkline(list(history.active))} (max {max(history.active, default=0)})\n"
        f"new  {sparkline(list(history.new))} (max {max(history.new, default=0)} a refresh)"
    )

    clients = Table(title="clients, newest first", header_style="bold", expand=False)
    for name in ("address", "active", "total", "in", "out", "errors", "last seen"):
        clients.add_column(name, justify="left" if name in ("address", "last seen") else "right")
    for c in verdict.clients[:TOP_CLIENTS]:
        seen = parse_time(c.last_seen)
        ago = f"{format_seconds((now - seen).total_seconds())} ago" if seen else "?"
        clients.add_row(
            c.address,
            str(c.active),
            str(c.total),
            human_bytes(c.bytes_in),
            human_bytes(c.bytes_out),
            str(c.errors),
            ago,
        )
    if len(verdict.clients) > TOP_CLIENTS:
        clients.caption = f"{len(verdict.clients) - TOP_CLIENTS} more in --json / the stats file"

    if verdict.safe:
        status = Text("SAFE to shut down", style="bold green")
    else:
        status = Text("NOT SAFE to shut down", style="bold red")
        if verdict.earliest_safe_at is not None:
            status.append(f"  (no earlier than {clock(verdict.earliest_safe_at, now)})", style="")
    lines = [f"  - {r}" for r in verdict.reasons]
    lines += [f"  note: {n}" for n in verdict.not_watched if n not in verdict.reasons]
    lines += [
        f"  not watched (not quiet): {clock(g.start, now)} to {clock(g.end, now)}"
        for g in verdict.gaps[-3:]
    ]
    reasons = Text("\n".join(lines + [f"  {n}" for n in verdict.notes]))
    parts: list[Any] = [head, counters, spark, clients, status, reasons]
    if verdict.would_cut:
        parts.append(Text(f"  a shutdown now would cut: {', '.join(verdict.would_cut[:10])}"))
    if stats.requests:
        top = sorted(stats.requests.items(), key=lambda kv: kv[1], reverse=True)[:10]
        requests = Table(title="requests (http mode)", header_style="bold")
        requests.add_column("method host path")
        requests.add_column("count", justify="right")
        for key, count in top:
            requests.add_row(key, str(count))
        parts.insert(4, requests)
    return Group(*parts)


@dataclass
class Dashboard:
    """One source, one policy and the history the sparkline needs; `frame()` reads and draws once."""

    source: StatsSource
    policy: DrainPolicy
    history: History = field(default_factory=History)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def frame(self) -> tuple[Any, DrainVerdict]:
        """Read the counters, decide, and return (renderable, verdict)."""
        stats = self.source.read()
        self.history.add(stats)
        moment = self.now()
        verdict = decide(stats, self.policy, now=moment)
        return render(stats, verdict, self.history, now=moment), verdict
