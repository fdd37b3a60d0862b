"""Times as an operator reads them at night: UTC, seconds only when they matter, never rounded early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def as_utc(moment: datetime) -> datetime:
    """The same moment in UTC (a time without a zone is UTC): every time shown here says "UTC"."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def ceil_minute(when: datetime) -> datetime:
    """Round up to the next whole minute: a "safe from" time must never be shown early."""
    if when.second == 0 and when.microsecond == 0:
        return when
    return when.replace(second=0, microsecond=0) + timedelta(minutes=1)


def ceil_second(when: datetime) -> datetime:
    """Round up to the next whole second."""
    if when.microsecond == 0:
        return when
    return when.replace(microsecond=0) + timedelta(seconds=1)


def when(moment: datetime, now: datetime) -> str:
    """ "01:12:05 UTC" within ten minutes of now, "01:12 UTC" today, "2026-11-24 01:12 UTC" otherwise."""
    moment, now = as_utc(moment), as_utc(now)
    ahead = abs((moment - now).total_seconds())
    if ahead < 600:
        return f"{ceil_second(moment):%H:%M:%S} UTC"
    rounded = ceil_minute(moment)
    if rounded.date() == now.date():
        return f"{rounded:%H:%M} UTC"
    return f"{rounded:%Y-%m-%d %H:%M} UTC"


def by(moment: datetime, now: datetime) -> str:
    """A deadline or an expiry in the format of `when`, rounded down: it is never shown late."""
    moment, now = as_utc(moment), as_utc(now)
    ahead = abs((moment - now).total_seconds())
    if ahead < 600:
        return f"{moment:%H:%M:%S} UTC"
    if moment.date() == now.date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"
