"""The rehearsal says how its time is scaled, and the window check reads HH:MM-HH:MM."""

from __future__ import annotations

import pytest

from opskit.demo.run import window_seconds
from opskit.demo.timescale import TimeScale
from opskit.errors import UsageError


def test_one_second_is_one_hour_and_the_screen_says_so() -> None:
    """At the default scale a 24 h TTL lasts 24 s, a 5 min TTL is never shorter than 1 s."""
    scale = TimeScale()

    assert scale.ttl(86400) == 24
    assert scale.ttl(300) == 1
    assert scale.banner() == (
        "Time is scaled: 1 s here = 1h on a real night (a TTL of 24h is 24s here)."
    )
    assert scale.both(24) == "24s (= 1d on a real night)"


@pytest.mark.parametrize(
    ("window", "hours"), [("02:00-05:00", 3), ("23:00-02:00", 3), ("00:00-23:30", 23.5)]
)
def test_window_length(window: str, hours: float) -> None:
    """A maintenance window may run past midnight."""
    assert window_seconds(window) == hours * 3600


def test_a_bad_window_is_bad_input() -> None:
    """A window that is not HH:MM-HH:MM is a usage error naming the flag."""
    with pytest.raises(UsageError, match="--window"):
        window_seconds("2am to 5am")


def test_runbook_durations_are_scaled_to_milliseconds() -> None:
    """Half an hour of a real night is half a second here; nothing is shorter than 100 ms."""
    scale = TimeScale()

    assert scale.duration(30 * 60) == "500ms"
    assert scale.duration(1) == "100ms"
