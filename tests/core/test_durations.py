"""Durations are written the way people write them, and bad ones say what was expected."""

from __future__ import annotations

import pytest

from opskit import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("24h", 86400),
        ("1h30m", 5400),
        ("1d", 86400),
        ("45", 45),
    ],
)
def test_durations_people_write_are_understood(text: str, seconds: float) -> None:
    """500ms, 30s, 10m, 24h and combinations all parse to the seconds a person means."""
    assert durations.parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "-5s", "5s10"])
def test_a_bad_duration_names_the_expected_form(text: str) -> None:
    """A duration opskit cannot read is rejected with the forms it accepts."""
    with pytest.raises(durations.DurationError, match="expected a duration like"):
        durations.parse_seconds(text)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.25, "250ms"),
        (0.9996, "1s"),
        (42.4, "42s"),
        (59.6, "1m"),
        (61, "1m01s"),
        (89, "1m29s"),
        (300, "5m"),
        (3600, "1h"),
        (3601, "1h00m"),
        (5399, "1h30m"),
        (86400, "1d"),
        (93600, "1d02h"),
    ],
)
def test_durations_print_as_people_read_them(seconds: float, shown: str) -> None:
    """A wait prints as 1h00m, 5m07s or 5m, never as a raw number of seconds like 3601 s."""
    assert durations.format_seconds(seconds) == shown
