"""Does the night fit the maintenance window? A pure verdict from the plan's forecast and a clock.

`--window 02:00-05:00` means the next 02:00 to 05:00 in local time, or the rest of it when we are inside it
right now; a window past midnight (`23:00-02:00`) ends the next day. Arithmetic is in the clock's UTC offset:
a window that spans a DST change is off by that hour, which the margin printed next to it makes visible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opskit.durations import format_seconds
from opskit.errors import UsageError

_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class WindowVerdict:
    """`window` in `opskit plan --json`: when the window is, how long the night takes, whether it fits."""

    window: str
    start: str  # ISO 8601, local time with offset: now when we are inside the window
    end: str
    inside_now: bool
    starts_in_s: float
    available_s: float
    forecast_s: float
    margin_s: float  # available - forecast; negative when the night does not fit
    fits: bool
    untimed_steps: list[str] = field(default_factory=list)  # gates and commands with no estimate
    message: str = ""


def parse_window(text: str) -> tuple[int, int]:
    """ "02:00-05:00" -> (start, end) in minutes after midnight; UsageError naming the flag otherwise."""
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise UsageError(f"--window: expected HH:MM-HH:MM (for example 02:00-05:00), got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise UsageError(f"--window: times must be between 00:00 and 23:59, got {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise UsageError(f"--window {text!r} is empty: start and end are the same time")
    return start, end


def check_window(
    text: str, forecast_s: float, *, now: datetime, untimed_steps: list[str] | None = None
) -> WindowVerdict:
    """The verdict for a forecast against the window's next occurrence (`now` must be timezone-aware)."""
    start_min, end_min = parse_window(text)
    length = timedelta(minutes=(end_min - start_min) % (24 * 60))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = midnight + timedelta(minutes=start_min)
    # The window that opened yesterday may still be open (23:00-02:00 at 01:00).
    current = next((s for s in (today - _DAY, today) if s <= now < s + length), None)
    if current is not None:
        start, end = now, current + length
    else:
        start = today if today > now else today + _DAY
        end = start + length
    available = (end - start).total_seconds()
    margin = available - forecast_s
    fits = margin >= 0
    verdict = WindowVerdict(
        window=f"{start_min // 60:02d}:{start_min % 60:02d}-{end_min // 60:02d}:{end_min % 60:02d}",
        start=start.isoformat(timespec="minutes"),
        end=end.isoformat(timespec="minutes"),
        inside_now=current is not None,
        starts_in_s=round((start - now).total_seconds(), 1),
        available_s=round(available, 1),
        forecast_s=round(forecast_s, 3),
        margin_s=round(margin, 1),
        fits=fits,
        untimed_steps=list(untimed_steps or []),
    )
    return _with_message(verdict, start)


def _with_message(v: WindowVerdict, start: datetime) -> WindowVerdict:
    from dataclasses import replace  # noqa: PLC0415 - imported on first use, keeps start-up fast

    when = (
        f"from now until {v.end[11:16]}, {format_seconds(v.available_s)} left"
        if v.inside_now
        else f"{format_seconds(v.available_s)} from {start:%a %H:%M} "
        f"(opens in {format_seconds(v.starts_in_s)})"
    )
    if v.fits:
        head = (
            f"the night FITS window {v.window}: forecast {format_seconds(v.forecast_s)}, "
            f"window {when}, {format_seconds(v.margin_s)} to spare"
        )
    else:
        head = (
            f"the night does NOT fit window {v.window}: forecast {format_seconds(v.forecast_s)}, "
            f"window {when}, {format_seconds(-v.margin_s)} short"
        )
    if v.untimed_steps:
        head += (
            f"; not counted: the time {len(v.untimed_steps)} step(s) take with no estimate "
            f"({', '.join(v.untimed_steps[:5])}{', ...' if len(v.untimed_steps) > 5 else ''})"
        )
    return replace(v, message=head)
