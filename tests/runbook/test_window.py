"""`--window HH:MM-HH:MM`: does the night's forecast fit the next maintenance window (injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from opskit.errors import UsageError
from opskit.runbook.window import check_window, parse_window

BERLIN_WINTER = timezone(timedelta(hours=1))


def at(hour: int, minute: int = 0, tz: timezone = UTC) -> datetime:
    return datetime(2025, 11, 23, hour, minute, tzinfo=tz)


def test_afternoon_plan_looks_at_tonights_window() -> None:
    """Planned at 14:00, a 02:00-05:00 window means tomorrow 02:00, three hours long."""
    verdict = check_window("02:00-05:00", 3600, now=at(14))

    assert verdict.start == "2025-11-24T02:00+00:00"
    assert verdict.end == "2025-11-24T05:00+00:00"
    assert not verdict.inside_now
    assert verdict.starts_in_s == 12 * 3600
    assert verdict.available_s == 3 * 3600
    assert verdict.fits
    assert verdict.margin_s == 2 * 3600
    assert "FITS window 02:00-05:00" in verdict.message
    assert "2h to spare" in verdict.message


def test_inside_the_window_only_the_rest_counts() -> None:
    """At 04:00 inside 02:00-05:00 one hour is left, so a 90-minute night does not fit."""
    verdict = check_window("02:00-05:00", 5400, now=at(4))

    assert verdict.inside_now
    assert verdict.available_s == 3600
    assert not verdict.fits
    assert verdict.margin_s == -1800
    assert "does NOT fit" in verdict.message
    assert "30m short" in verdict.message


def test_window_past_midnight_is_open_after_midnight() -> None:
    """23:00-02:00 checked at 01:00 is the window that opened yesterday, with one hour left."""
    verdict = check_window("23:00-02:00", 600, now=at(1, tz=BERLIN_WINTER))

    assert verdict.inside_now
    assert verdict.end == "2025-11-23T02:00+01:00"
    assert verdict.available_s == 3600
    assert verdict.fits


def test_window_past_midnight_planned_the_day_before() -> None:
    """23:00-02:00 checked at 22:00 opens in an hour and lasts three."""
    verdict = check_window("23:00-02:00", 4 * 3600, now=at(22))

    assert verdict.starts_in_s == 3600
    assert verdict.available_s == 3 * 3600
    assert not verdict.fits


def test_steps_without_estimate_are_named() -> None:
    """Gates and unmeasured commands are listed as not counted, so a fit is not oversold."""
    verdict = check_window("02:00-05:00", 60, now=at(14), untimed_steps=["sync", "go"])

    assert verdict.untimed_steps == ["sync", "go"]
    assert "not counted: the time 2 step(s) take with no estimate (sync, go)" in verdict.message


@pytest.mark.parametrize("text", ["2-5", "02:00", "25:00-03:00", "02:00-02:00", "02:60-03:00"])
def test_bad_window_is_bad_input(text: str) -> None:
    """A window that is not HH:MM-HH:MM (or is empty) is a usage error naming --window."""
    with pytest.raises(UsageError, match="--window"):
        parse_window(text)
