"""The one time parser of the CLI: a moment typed by a person, and what it was taken to mean.

Accepted: an ISO 8601 date and time (`2026-11-24T02:11:00Z`, `2026-11-24 02:11+02:00`) or a time of day
(`02:11`, `02:11:30`, `13:49Z`, `13:49+02:00`, `13:49 UTC`). A time of day is the occurrence of it nearest
to now (yesterday, today or tomorrow): `--switched-at 13:49` typed at 13:35 is today's 13:49, never
yesterday's, and `23:50` typed at 00:10 is yesterday's. Without a zone the machine's local zone is
assumed, and the interpretation says so. Anything else (`2026`, `2026-11-24`, `1349`) is refused: a
guess on a time that decides a shutdown is worse than an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

_TIME = r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?P<frac>\.\d{1,6})?)?"
_ZONE = r"\s*(?P<zone>[zZ]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
_TIME_OF_DAY = re.compile(rf"^{_TIME}{_ZONE}$")
_DATE_TIME = re.compile(rf"^(?P<date>\d{{4}}-\d{{2}}-\d{{2}})[T ]{_TIME}{_ZONE}$")
EXAMPLES = "2026-11-24T02:11:00Z, 2026-11-24 02:11+02:00 or a time of day like 02:11"


class TimeError(ValueError):
    """Text that is not a moment we can read without guessing; the message says what is expected."""


@dataclass(frozen=True)
class Moment:
    """A parsed moment and how it was read (shown to the person, so a wrong guess is visible)."""

    at: datetime  # always zone-aware
    text: str
    zone_assumed: str | None  # the zone taken when the text named none, e.g. "local time, CET"
    day: str | None  # "yesterday" | "today" | "tomorrow" for a time of day; None for a full date

    def describe(self) -> str:
        """ "13:49 read as 2026-12-01 13:49:00 UTC (today; no zone given: local time, UTC)"."""
        shown = self.at.strftime("%Y-%m-%d %H:%M:%S") + f" {zone_name(self.at)}"
        notes = [
            n for n in (self.day, self.zone_assumed and f"no zone given: {self.zone_assumed}") if n
        ]
        detail = f" ({'; '.join(notes)})" if notes else ""
        return f"{self.text.strip()} read as {shown}{detail}"


def zone_name(moment: datetime) -> str:
    """A zone as people read it: "UTC", "CET", or "+02:00" when it has no name."""
    name = moment.tzname()
    if not name or (name.startswith("UTC") and name != "UTC"):
        offset = moment.utcoffset() or timedelta(0)
        if offset == timedelta(0):
            return "UTC"
        sign = "-" if offset < timedelta(0) else "+"
        minutes = int(abs(offset).total_seconds() // 60)
        return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return name


def _zone(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    if text in ("z", "Z", "UTC", "GMT"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise TimeError(f"{text} is not a UTC offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _clock(match: re.Match[str]) -> tuple[int, int, int, int]:
    hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    micro = int((match["frac"] or ".0")[1:].ljust(6, "0"))
    if hour > 23 or minute > 59 or second > 59:
        raise TimeError(f"{match.string.strip()!r} is not a time of day")
    return hour, minute, second, micro


def parse(text: str, *, now: datetime, zone: tzinfo | None = None) -> Moment:
    """The moment `text` names, relative to `now` (aware) for a time of day; TimeError when it cannot tell.

    `zone` is the zone assumed when the text gives none (default: the machine's local zone, with
    the offset it has on that date, so a time across a daylight-saving change is read right).
    """
    cleaned = text.strip()
    full = _DATE_TIME.match(cleaned)
    match = full or _TIME_OF_DAY.match(cleaned)
    if match is None:
        raise TimeError(f"expected {EXAMPLES}, got {text!r}")
    given = _zone(match["zone"])
    hour, minute, second, micro = _clock(match)

    def place(day: date) -> datetime:
        wall = datetime(day.year, day.month, day.day, hour, minute, second, micro)
        if given is not None or zone is not None:
            return wall.replace(tzinfo=given or zone)
        return wall.astimezone()  # naive = local: the system's rules for that date

    if full:
        try:
            day = datetime.strptime(match["date"], "%Y-%m-%d").date()
        except ValueError:
            raise TimeError(f"{match['date']!r} is not a date (expected {EXAMPLES})") from None
        at = place(day)
        return Moment(at, text, None if given else _assumed_label(zone, at), None)
    local_today = now.astimezone(given or zone).date()
    candidates = [
        (label, place(local_today + timedelta(days=shift)))
        for label, shift in (("yesterday", -1), ("today", 0), ("tomorrow", 1))
    ]
    label, at = min(candidates, key=lambda c: abs((c[1] - now).total_seconds()))
    return Moment(at, text, None if given else _assumed_label(zone, at), label)


def _assumed_label(zone: tzinfo | None, at: datetime) -> str:
    if zone is UTC:
        return "taken as UTC"
    return f"local time, {zone_name(at)}" if zone is None else f"taken as {zone_name(at)}"
