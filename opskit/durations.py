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
    """The one way opskit prints a duration: 250ms, 42s, 5m, 5m07s, 1h, 1h00m, 1d02h.

    Never "3601 s": an operator reads "1h00m" at a glance. A whole number of minutes, hours or days
    prints as one unit (5m, 1h, 1d); anything else as two, the second padded and rounded, so 3601 s is
    1h00m (about an hour, not exactly) and 89 s is 1m29s.
    """
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    if seconds < 0.9995:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    for unit, size, small, small_size in _UNIT_PAIRS:
        if whole >= size:
            if whole % size == 0:
                return f"{whole // size}{unit}"
            big, rest = divmod(round(seconds / small_size), size // small_size)
            return f"{big}{unit}{rest:02d}{small}"
    return f"{whole}s"


_UNIT_PAIRS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))
