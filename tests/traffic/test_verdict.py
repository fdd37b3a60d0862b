"""The drain verdict: safe only once caches forgot the old address, nobody is connected, and all is quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opskit.proxy.stats import BridgeStats, ClientStats
from opskit.traffic.verdict import DrainPolicy, decide

SWITCH = datetime(2026, 11, 24, 2, 11, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def client(address: str, *, active: int, last_seen: datetime) -> ClientStats:
    return ClientStats(
        address, active, 3, 100, 2000, iso(SWITCH - timedelta(hours=1)), iso(last_seen)
    )


def stats(
    *, active: int = 0, last: datetime | None, clients: tuple[ClientStats, ...] = ()
) -> BridgeStats:
    return BridgeStats(
        listener="127.0.0.1:8080",
        target="127.0.0.2:80",
        engine="builtin",
        mode="tcp",
        started_at=iso(SWITCH - timedelta(hours=2)),
        updated_at=iso(SWITCH),
        pid=1,
        state="running",
        active=active,
        total=10,
        bytes_in=1,
        bytes_out=2,
        errors=0,
        last_activity=iso(last) if last else None,
        clients=list(clients),
    )


POLICY = DrainPolicy(switched_at=SWITCH, old_ttl_s=1800, margin_s=300, quiet_s=60)
AFTER_TTL = SWITCH + timedelta(minutes=40)


def test_open_connection_is_not_safe_and_names_the_client() -> None:
    """An open connection keeps the verdict at not safe and says who would be cut, and how idle it is."""
    last = AFTER_TTL - timedelta(minutes=5)
    seen = (client("127.0.0.7", active=1, last_seen=AFTER_TTL - timedelta(seconds=40)),)

    verdict = decide(stats(active=1, last=last, clients=seen), POLICY, now=AFTER_TTL)

    assert not verdict.safe
    assert verdict.would_cut == ("127.0.0.7",)
    assert any("1 connection still active: 127.0.0.7 (idle 40s)" in r for r in verdict.reasons)


def test_quiet_window_not_passed_is_not_safe() -> None:
    """With no connection left but a byte 12 s ago, the verdict waits for the quiet window."""
    verdict = decide(stats(last=AFTER_TTL - timedelta(seconds=12)), POLICY, now=AFTER_TTL)

    assert not verdict.safe
    assert any(r.startswith("quiet for 12s of 1m") for r in verdict.reasons)
    assert verdict.earliest_safe_at == AFTER_TTL + timedelta(seconds=48)


def test_before_ttl_and_margin_is_not_safe() -> None:
    """Before switch + TTL + margin caches may still send clients, even with zero traffic."""
    now = SWITCH + timedelta(minutes=20)

    verdict = decide(stats(last=SWITCH - timedelta(hours=1)), POLICY, now=now)

    assert not verdict.safe
    assert verdict.caches == "waiting"
    assert verdict.reasons == (
        "caches may still hold the old address until 02:46 UTC (switch 02:11 UTC + TTL 30m + margin 5m)",
    )
    assert verdict.earliest_safe_at == SWITCH + timedelta(minutes=35)
    assert verdict.wait_s == 15 * 60


def test_all_conditions_hold_is_safe() -> None:
    """Past TTL + margin, nothing active and quiet long enough: safe, with the reasons why."""
    verdict = decide(stats(last=AFTER_TTL - timedelta(minutes=2)), POLICY, now=AFTER_TTL)

    assert verdict.safe
    assert verdict.caches == "expired"
    assert verdict.wait_s == 0
    assert verdict.reasons[0].startswith("caches have forgotten the old address since 02:46")


def test_unknown_switch_time_is_never_safe_and_says_what_to_pass() -> None:
    """Without a switch time the verdict is "unknown", not safe, and names --switched-at."""
    policy = DrainPolicy(old_ttl_s=1800, quiet_s=60)

    verdict = decide(stats(last=AFTER_TTL - timedelta(hours=3)), policy, now=AFTER_TTL)

    assert not verdict.safe
    assert verdict.caches == "unknown"
    assert verdict.earliest_safe_at is None
    assert "--switched-at" in verdict.reasons[0]


def test_unknown_ttl_says_pass_old_ttl() -> None:
    """With a switch time but no TTL the reason asks for --old-ttl."""
    verdict = decide(stats(last=None), DrainPolicy(switched_at=SWITCH), now=AFTER_TTL)

    assert not verdict.safe
    assert "--old-ttl" in verdict.reasons[0]


def test_max_active_tolerates_a_known_straggler() -> None:
    """--max-active 1 lets one lingering connection through once everything else holds."""
    policy = DrainPolicy(switched_at=SWITCH, old_ttl_s=1800, margin_s=300, quiet_s=60, max_active=1)
    seen = (client("127.0.0.9", active=1, last_seen=AFTER_TTL - timedelta(minutes=3)),)

    verdict = decide(
        stats(active=1, last=AFTER_TTL - timedelta(minutes=3), clients=seen), policy, now=AFTER_TTL
    )

    assert verdict.safe
    assert verdict.would_cut == ("127.0.0.9",)


def test_clients_are_newest_first_and_margin_defaults_to_five_minutes() -> None:
    """Clients are listed newest first; the default margin is max(5 min, 10 % of the TTL)."""
    old = client("127.0.0.5", active=0, last_seen=AFTER_TTL - timedelta(hours=1))
    new = client("127.0.0.6", active=1, last_seen=AFTER_TTL - timedelta(seconds=3))

    verdict = decide(
        stats(active=1, last=AFTER_TTL, clients=(old, new)), DrainPolicy(), now=AFTER_TTL
    )

    assert [c.address for c in verdict.clients] == ["127.0.0.6", "127.0.0.5"]
    assert DrainPolicy(old_ttl_s=600).effective_margin_s == 300
    assert DrainPolicy(old_ttl_s=86400).effective_margin_s == 8640
