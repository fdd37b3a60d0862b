"""Option values shared by the command families: durations and moments, with errors naming the flag."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from opskit import durations
from opskit.errors import UsageError


def parse_duration(option: str, text: str | None) -> float | None:
    """Seconds from a duration option; UsageError (exit 2) naming the option when malformed."""
    if text is None:
        return None
    try:
        return durations.parse_seconds(text)
    except durations.DurationError as exc:
        raise UsageError(f"{option}: {exc}") from None


def parse_time(option: str, text: str | None) -> datetime | None:
    """ISO 8601 (UTC when no zone); a bare time like 02:11 is the latest such moment, today or yesterday."""
    if text is None:
        return None
    cleaned = text.strip().replace("Z", "+00:00")
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        try:
            at = time.fromisoformat(cleaned)
        except ValueError:
            raise UsageError(
                f"{option}: expected a time like 2026-11-24T02:11:00Z or 02:11, got {text!r}"
            ) from None
        now = datetime.now(UTC)
        value = datetime.combine(now.date(), at.replace(tzinfo=at.tzinfo or UTC))
        if value > now:
            value -= timedelta(days=1)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
