"""Durations as people write them ("500ms", "30s", "10m", "24h", "1d") and back."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class DurationError(ValueError):
    """A duration that is not of the form 500ms, 30s, 10m, 24h (or a plain number of seconds)."""


def parse_seconds(text: str | float | int) -> float:
    """Seconds in "500ms", "30s", "1h30m", "24h", or a bare number of seconds."""
    if isinstance(text, bool):
        raise DurationError(f"expected a duration like 30s, 10m or 24h, got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"a duration cannot be negative, got {text!r}")
        return float(text)
    cleaned = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return float(cleaned)
    pos, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_S[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or not cleaned:
        raise DurationError(f"expected a duration like 500ms, 30s, 10m or 24h, got {text!r}")
    return total


def parse(text: str | float | int) -> timedelta:
    """A timedelta from "500ms", "30s", "10m", "24h"."""
    return timedelta(seconds=parse_seconds(text))


def format_seconds(seconds: float) -> str:
    """The one way opskit prints a duration: 250ms, 42s, 5m07s, 1h00m, 1d02h (two units, padded).

    Never "3601 s": an operator reads "1h00m" at a glance. The second unit is rounded, so a wait of
    3601 s prints as 1h00m and one of 89 s as 1m29s.
    """
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    if seconds < 0.9995:
        return f"{round(seconds * 1000)}ms"
    if seconds < 59.5:
        return f"{round(seconds)}s"
    if seconds < 3599.5:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    if seconds < 86400 - 30:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days}d{hours:02d}h"

