"""Option values shared by the command families: durations and moments, with errors naming the flag."""

from __future__ import annotations

from datetime import UTC, datetime

from opskit import durations, timeparse
from opskit.cli import output
from opskit.errors import UsageError


def parse_duration(option: str, text: str | None) -> float | None:
    """Seconds from a duration option; UsageError (exit 2) naming the option when malformed."""
    if text is None:
        return None
    try:
        return durations.parse_seconds(text)
    except durations.DurationError as exc:
        raise UsageError(f"{option}: {exc}") from None


def parse_moment(
    option: str, text: str | None, *, now: datetime | None = None
) -> timeparse.Moment | None:
    """A time option read by opskit.timeparse (nearest occurrence of a time of day, local zone unless
    one is given); UsageError (exit 2) naming the option when it cannot be read without guessing."""
    if text is None:
        return None
    try:
        return timeparse.parse(text, now=now or datetime.now(UTC))
    except timeparse.TimeError as exc:
        raise UsageError(f"{option}: {exc}") from None


def parse_time(option: str, text: str | None, *, now: datetime | None = None) -> datetime | None:
    """The moment of a time option (see parse_moment), or None when the option was not given."""
    moment = parse_moment(option, text, now=now)
    return moment.at if moment else None


def describe(option: str, moment: timeparse.Moment | None) -> str | None:
    """ "--switched-at 13:49 read as 2026-12-01 13:49:00 UTC (today; ...)", for the output."""
    return f"{option} {moment.describe()}" if moment else None


def parse_time_said(option: str, text: str | None) -> datetime | None:
    """parse_time, with its reading said on stderr when it involved a choice (the day of a time of
    day, or the zone assumed): for commands whose output has no place for it."""
    moment = parse_moment(option, text)
    if moment is None:
        return None
    if moment.day or moment.zone_assumed:
        output.line(f"opskit: {describe(option, moment)}", err=True)
    return moment.at
