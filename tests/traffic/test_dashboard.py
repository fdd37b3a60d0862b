"""The `traffic watch` dashboard drawn from plain values (no terminal, no bridge)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from opskit.proxy.stats import BridgeStats, ClientStats
from opskit.traffic.dashboard import History, render
from opskit.traffic.verdict import DrainPolicy, decide

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def _stats(total: int, active: int = 0) -> BridgeStats:
    seen = "2026-11-24T02:59:59+00:00"
    return BridgeStats(
        listener="0.0.0.0:443", target="203.0.113.20:443", engine="builtin", mode="tcp",
        started_at="2026-11-24T02:00:00+00:00", updated_at=seen, pid=1, state="running",
        active=active, total=total, bytes_in=10, bytes_out=20, errors=0, last_activity=seen,
        clients=[ClientStats("198.51.100.7", active, total, 10, 20, seen, seen)],
    )  # fmt: skip


def test_new_connections_show_even_when_none_stay_open() -> None:
    """Short requests between two refreshes draw a 'new' sparkline while 'open' stays flat."""
    history = History()
    for total in (5, 5, 8, 20):
        history.add(_stats(total))

    assert list(history.active) == [0, 0, 0, 0]
    assert list(history.new) == [0, 0, 3, 12]


def test_dashboard_shows_counters_clients_and_verdict_below() -> None:
    """The drawn dashboard carries the counters, the client, both sparklines and the verdict last."""
    stats = _stats(20, active=1)
    history = History()
    history.add(stats)
    verdict = decide(stats, DrainPolicy(quiet_s=60), now=NOW)
    console = Console(width=80, record=True, color_system=None)

    console.print(render(stats, verdict, history, now=NOW))
    text = console.export_text()

    assert "active 1   total 20" in text
    assert "198.51.100.7" in text
    assert "open █ (max 1)" in text
    assert "new  ▁" in text
    assert text.rstrip().splitlines()[-1].startswith("  a shutdown now would cut: 198.51.100.7")
    assert "NOT SAFE to shut down" in text
    assert max(len(line) for line in text.splitlines()) <= 80
