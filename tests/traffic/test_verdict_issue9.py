"""The drain verdict of issue #9: gaps in watching, allowed clients, partial rows, what is not carried."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from opskit.proxy.stats import BridgeStats, ClientStats, OtherClients, WatchSpan
from opskit.traffic.verdict import DrainPolicy, decide

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
POLICY = DrainPolicy(
    switched_at=NOW - timedelta(hours=2), old_ttl_s=60, margin_s=0, quiet_s=60, max_active=0
)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def bridge(**fields: object) -> BridgeStats:
    base = BridgeStats(
        listener="127.0.0.1:5060",
        target="127.0.0.2:5060",
        engine="builtin",
        mode="tcp",
        started_at=iso(NOW - timedelta(hours=3)),
        updated_at=iso(NOW),
        pid=1,
        state="running",
        active=0,
        total=5,
        bytes_in=1,
        bytes_out=2,
        errors=0,
        last_activity=iso(NOW - timedelta(hours=1)),
        heartbeat_s=1.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def client(address: str, *, active: int, ago_s: float) -> ClientStats:
    seen = iso(NOW - timedelta(seconds=ago_s))
    return ClientStats(address, active, 1, 10, 10, seen, seen)


def test_restart_gap_is_not_quiet_and_is_shown() -> None:
    """A bridge restarted 28 s ago after 40 s down: its downtime is not quiet, and the gap is named."""
    restarted = NOW - timedelta(seconds=28)
    watch = [
        WatchSpan(10, "builtin", NOW - timedelta(hours=3), NOW - timedelta(seconds=68)),
        WatchSpan(11, "builtin", restarted, None),
    ]
    stats = bridge(started_at=iso(restarted), watch=watch)

    verdict = decide(stats, POLICY, now=NOW)

    assert not verdict.safe
    assert verdict.quiet_for_s == 28
    assert [(g.start, g.end) for g in verdict.gaps] == [(NOW - timedelta(seconds=68), restarted)]
    assert any("a gap is not quiet" in r for r in verdict.reasons)
    assert verdict.earliest_safe_at == restarted + timedelta(seconds=60)


def test_watched_without_gap_counts_quiet_across_restarts() -> None:
    """A clean hand-over (stop and start at the same moment) leaves no gap: quiet spans both."""
    handover = NOW - timedelta(seconds=30)
    watch = [
        WatchSpan(10, "builtin", NOW - timedelta(hours=3), handover),
        WatchSpan(11, "builtin", handover, None),
    ]

    verdict = decide(bridge(started_at=iso(handover), watch=watch), POLICY, now=NOW)

    assert verdict.safe
    assert verdict.gaps == ()


def test_file_without_watch_history_counts_quiet_only_since_its_own_start() -> None:
    """An older writer's restored last_activity does not make the time before its start quiet."""
    stats = bridge(started_at=iso(NOW - timedelta(seconds=10)))

    verdict = decide(stats, POLICY, now=NOW)

    assert not verdict.safe
    assert verdict.quiet_for_s == 10


def test_allowed_client_may_stay_and_its_heartbeat_does_not_break_quiet() -> None:
    """--max-active 1 --allow-client 127.0.0.9: its open connection and fresh bytes do not block."""
    policy = replace(POLICY, max_active=1, allow_clients=("127.0.0.9",))
    rows = [client("127.0.0.9", active=1, ago_s=2), client("127.0.0.8", active=0, ago_s=600)]
    stats = bridge(active=1, clients=rows, last_activity=iso(NOW - timedelta(seconds=2)))

    verdict = decide(stats, policy, now=NOW)

    assert verdict.safe, verdict.reasons
    assert verdict.quiet_for_s == 600


def test_other_client_blocks_even_within_max_active() -> None:
    """With an allow list, one connection from anyone else blocks, and that client is named."""
    policy = replace(POLICY, max_active=1, allow_clients=("127.0.0.9",))
    rows = [client("127.0.0.7", active=1, ago_s=300)]

    verdict = decide(bridge(active=1, clients=rows), policy, now=NOW)

    assert not verdict.safe
    assert any("from clients not allowed: 127.0.0.7" in r for r in verdict.reasons)


def test_folded_clients_activity_still_counts() -> None:
    """Activity of clients folded beyond the table cap breaks quiet, even with an allow list."""
    policy = replace(POLICY, max_active=1, allow_clients=("127.0.0.9",))
    other = OtherClients(clients=500, total=500, last_seen=iso(NOW - timedelta(seconds=5)))

    verdict = decide(bridge(clients=[], clients_other=other), policy, now=NOW)

    assert not verdict.safe
    assert verdict.quiet_for_s == 5


def test_partial_rows_never_let_an_allowed_client_through() -> None:
    """When the rows may be incomplete, an allow list cannot prove who is connected: not safe."""
    policy = replace(POLICY, max_active=1, allow_clients=("127.0.0.9",))
    rows = [client("127.0.0.9", active=1, ago_s=300)]

    verdict = decide(bridge(active=1, clients=rows, clients_partial=True), policy, now=NOW)

    assert not verdict.safe
    assert any("partial" in r for r in verdict.reasons)


def test_verdict_names_what_the_bridge_does_not_carry() -> None:
    """A TCP-only bridge on port 5060: the verdict says UDP to port 5060 is not watched."""
    verdict = decide(bridge(carries=["tcp"]), POLICY, now=NOW)

    assert verdict.safe
    assert verdict.not_watched == ("UDP to port 5060 is not watched (the bridge carries TCP)",)
    assert verdict.not_watched[0] in verdict.reasons


def test_an_older_lifetime_left_open_vouches_for_nothing_after_its_start() -> None:
    """A watch entry that never got closed (a writer that broke the contract) is not quiet time."""
    watch = [
        WatchSpan(10, "haproxy", NOW - timedelta(hours=3), None),
        WatchSpan(11, "haproxy", NOW - timedelta(seconds=20), None),
    ]

    verdict = decide(bridge(watch=watch), POLICY, now=NOW)

    assert not verdict.safe
    assert verdict.gaps[0].end == NOW - timedelta(seconds=20)
