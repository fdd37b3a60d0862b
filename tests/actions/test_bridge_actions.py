"""proxy.start, proxy.stop and traffic.drained called directly with a plain context (no runbook engine)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.actions import load
from opskit.actions.params import ParamError, Params
from opskit.actions.traffic_drained import switch_from_facts
from tests.dns.context import PlainContext
from tests.proxy.clients import http_get
from tests.proxy.conftest import nginx  # noqa: F401 - fixture
from tests.servers.common import free_port
from tests.servers.nginx import Nginx

SWITCH = datetime(2026, 11, 24, 2, 11, tzinfo=UTC)


def build(name: str, raw: dict[str, object]) -> object:
    return load(name).from_params(Params(raw))


def test_switch_time_and_ttl_come_from_journaled_facts() -> None:
    """A journaled switch gives the time and TTL; a lowering still in flight at the switch extends the TTL."""
    switched = [{"switched_at": SWITCH.isoformat(), "old_ttl": 300}]
    lowered = [
        {
            "lowered_at": (SWITCH - timedelta(minutes=10)).isoformat(),
            "previous_ttl": 3600,
            "new_ttl": 300,
        }
    ]

    assert switch_from_facts(switched, []) == (SWITCH, 300.0)
    assert switch_from_facts(switched, lowered) == (SWITCH, 3000.0)
    assert switch_from_facts([], lowered) == (None, 300.0)


def test_bad_listen_address_is_reported_at_load_time() -> None:
    """A listen value that is not HOST:PORT fails validation and names the key."""
    with pytest.raises(ParamError, match=r"with\.listen"):
        build("proxy.start", {"listen": "8080", "to": "127.0.0.1:80"})


@pytest.mark.proxy
def test_drained_rehearsal_predicts_the_wait_and_run_waits(tmp_path: Path, nginx: Nginx) -> None:  # noqa: F811
    """The dry-run reports the verdict and predicted wait; the real step waits until safe, with progress."""
    ctx = PlainContext(state_dir=tmp_path)
    start = build("proxy.start", {"listen": f"127.0.0.1:{free_port()}", "to": nginx.http})
    started = start.run(ctx)  # type: ignore[attr-defined]
    assert started.ok, started.summary
    stats_file = started.values["stats_file"]
    try:
        port = int(started.values["listen"].rsplit(":", 1)[1])
        assert http_get("127.0.0.1", port, "/1k.txt", bind="127.0.0.81")[0] == 200
        ctx.known_facts["dns.switched"] = [
            {"switched_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "old_ttl": 60}
        ]
        drained = build(
            "traffic.drained",
            {
                "stats_file": stats_file,
                "margin": "0s",
                "quiet": "1s",
                "timeout": "15s",
                "interval": "100ms",
            },
        )

        forecast = drained.rehearse(ctx)  # type: ignore[attr-defined]
        result = drained.run(ctx)  # type: ignore[attr-defined]

        assert forecast.ok
        assert forecast.predicted_wait_s is not None
        assert forecast.predicted_wait_s <= 1.0
        assert result.ok, result.detail
        assert result.summary.startswith("SAFE to shut down")
        assert ctx.progress_lines
    finally:
        stopped = start.undo(ctx, started.undo)  # type: ignore[attr-defined]
    assert stopped.ok
    assert json.loads(Path(stats_file).read_text())["state"] == "stopped"


@pytest.mark.proxy
def test_drained_without_switch_time_times_out_not_safe(tmp_path: Path, nginx: Nginx) -> None:  # noqa: F811
    """Without a switch time the step cannot say safe: it times out with the reason and exits not ok."""
    ctx = PlainContext(state_dir=tmp_path)
    start = build("proxy.start", {"listen": f"127.0.0.1:{free_port()}", "to": nginx.http})
    started = start.run(ctx)  # type: ignore[attr-defined]
    try:
        drained = build(
            "traffic.drained",
            {
                "stats_file": started.values["stats_file"],
                "quiet": "0s",
                "timeout": "300ms",
                "interval": "100ms",
            },
        )

        result = drained.run(ctx)  # type: ignore[attr-defined]

        assert not result.ok
        assert not result.blocked
        assert "--switched-at" in result.summary
    finally:
        stop = build("proxy.stop", {"stats_file": started.values["stats_file"]})
        assert stop.run(ctx).ok  # type: ignore[attr-defined]


def test_nudge_starts_when_the_journaled_switch_says_caches_forgot(tmp_path: Path) -> None:
    """proxy.start nudges from switch + old TTL (+ margin) of the dns.switched fact, and not at all without it."""
    action = build(
        "proxy.start", {"listen": "127.0.0.1:1", "to": "127.0.0.1:2", "nudge_after": "10m"}
    )
    journaled = PlainContext(
        tmp_path,
        known_facts={"dns.switched": [{"switched_at": SWITCH.isoformat(), "old_ttl": 300}]},
    )
    given = build(
        "proxy.start",
        {"listen": "127.0.0.1:1", "to": "127.0.0.2:2", "nudge_after": "10m",
         "switched_at": "2026-11-24T03:00:00Z", "old_ttl": "1h", "margin": "5m"},
    )  # fmt: skip

    assert action.nudge_not_before(journaled) == "2026-11-24T02:16:00+00:00"  # type: ignore[attr-defined]
    assert action.nudge_not_before(PlainContext(tmp_path)) is None  # type: ignore[attr-defined]
    assert given.nudge_not_before(PlainContext(tmp_path)) == "2026-11-24T04:05:00+00:00"  # type: ignore[attr-defined]
