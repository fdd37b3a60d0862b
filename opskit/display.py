"""How values print for people: captured numbers rounded, durations in the one format (durations.py)."""

from __future__ import annotations

from typing import Any

from opskit.durations import format_seconds


def display_value(key: str, value: Any) -> Any:
    """A captured value as a person reads it: `waited_s` as 1m29s, 0.30000000000000004 as 0.3."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and key.endswith("_s"):
        return format_seconds(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 2)
    if isinstance(value, dict):
        return {k: display_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [display_value(key, v) for v in value]
    return value
