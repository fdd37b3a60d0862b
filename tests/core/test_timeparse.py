"""The CLI's one time parser: a time of day is its nearest occurrence, the zone is said, guesses are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opskit import timeparse
from opskit.errors import ExitCode
from tests.conftest import Invoke

NOW = datetime(2026, 12, 1, 13, 35, tzinfo=UTC)


def test_time_of_day_just_ahead_is_today_not_yesterday() -> None:
    """--switched-at 13:49 typed at 13:35 is today's 13:49: never a day early."""
    moment = timeparse.parse("13:49", now=NOW, zone=UTC)

    assert moment.at == datetime(2026, 12, 1, 13, 49, tzinfo=UTC)
    assert moment.day == "today"


def test_time_of_day_just_before_midnight_is_yesterday() -> None:
    """23:50 typed at 00:10 is the one 20 minutes ago, not the one in almost a day."""
    moment = timeparse.parse("23:50", now=datetime(2026, 12, 2, 0, 10, tzinfo=UTC), zone=UTC)

    assert moment.at == datetime(2026, 12, 1, 23, 50, tzinfo=UTC)
    assert moment.day == "yesterday"


def test_explicit_offset_is_used_and_zone_shown() -> None:
    """An explicit offset is honoured, and the reading shows the zone it was taken in."""
    moment = timeparse.parse("15:49+02:00", now=NOW, zone=UTC)

    assert moment.at.astimezone(UTC) == datetime(2026, 12, 1, 13, 49, tzinfo=UTC)
    assert moment.zone_assumed is None
    assert moment.describe() == "15:49+02:00 read as 2026-12-01 15:49:00 +02:00 (today)"


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local zone is Europe/Berlin for this test (TZ, re-read by tzset)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("berlin")
def test_zoneless_time_is_local_and_says_so_with_that_dates_offset() -> None:
    """Without a zone the machine's zone is assumed and named, with the offset of that date (DST)."""
    winter = timeparse.parse("2026-11-24 02:11", now=NOW)
    summer = timeparse.parse("2026-07-01 02:11", now=NOW)

    assert winter.at.astimezone(UTC) == datetime(2026, 11, 24, 1, 11, tzinfo=UTC)
    assert summer.at.astimezone(UTC) == datetime(2026, 7, 1, 0, 11, tzinfo=UTC)
    assert winter.describe() == (
        "2026-11-24 02:11 read as 2026-11-24 02:11:00 CET (no zone given: local time, CET)"
    )
    assert "CEST" in summer.describe()


@pytest.mark.parametrize("text", ["2026", "1349", "2026-11-24", "25:00", "13:49 tomorrow", ""])
def test_ambiguous_or_malformed_input_is_refused(text: str) -> None:
    """Text that could only be read by guessing (a year, digits, a date alone) is an error."""
    with pytest.raises(timeparse.TimeError):
        timeparse.parse(text, now=NOW)


def test_cli_refuses_a_bare_year_with_exit_2(opskit: Invoke, tmp_path: Path) -> None:
    """`--switched-at 2026` exits 2 in one line naming the flag (it used to read as 20:26)."""
    result = opskit(
        "traffic",
        "wait",
        "--stats-file",
        str(tmp_path / "s.json"),
        "--switched-at",
        "2026",
        expect=ExitCode.BAD_INPUT,
    )

    assert result.stderr.count("\n") == 1
    assert "--switched-at" in result.stderr
    assert "Traceback" not in result.stderr


def test_dns_plan_refuses_a_bare_year(opskit: Invoke) -> None:
    """dns options go through the same parser: `--switch-at 2026` is bad input, not 20:26."""
    result = opskit(
        "dns",
        "plan",
        "example.test",
        "--switch-at",
        "2026",
        "--nameserver",
        "127.0.0.1:9",
        expect=ExitCode.BAD_INPUT,
    )

    assert "--switch-at" in result.stderr
