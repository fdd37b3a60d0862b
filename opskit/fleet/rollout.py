"""Pure rollout arithmetic: `parallel:`, `batches:` and `max_failures:` of a step, as Ansible's
`forks`, `serial` and `max_fail_percentage` would read them.

`batches: [1, 25%, 100%]` is a canary of one host, then a quarter of the fleet, then the rest; the
last size repeats until every host had its turn. `max_failures: 2` allows two failed hosts, `10%`
a tenth of the step's hosts (rounded down); one more and the rollout stops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

DEFAULT_PARALLEL = 10
MAX_PARALLEL = 1000
_SIZE = re.compile(r"(\d+)(%?)")


def _size(value: Any) -> str | None:
    """ "5" or "25%" from 5 or "25%"; None when it is neither."""
    if isinstance(value, bool):
        return None
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    number = int(match.group(1))
    if match.group(2) and number > 100:
        return None
    return text


def parse_field(key: str, value: Any) -> tuple[str | None, Any]:
    """(problem, value) for one of the step's fleet fields, as written in YAML."""
    if key == "parallel":
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PARALLEL:
            return None, value
        return f"parallel must be a number of hosts from 1 to {MAX_PARALLEL}, got {value!r}", None
    if key == "batches":
        items = value if isinstance(value, list) else [value]
        sizes = [_size(v) for v in items]
        if not items or any(s is None or s in ("0", "0%") for s in sizes):
            return (
                f"batches must be a list of host counts or percentages (e.g. [1, 25%, 100%]), got {value!r}",
                None,
            )
        return None, tuple(s for s in sizes if s is not None)
    size = _size(value)
    if size is None:
        return (
            f"max_failures must be a number of hosts or a percentage (0, 2, 10%), got {value!r}",
            None,
        )
    return None, size


def _count(size: str, total: int) -> int:
    if size.endswith("%"):
        return max(1, math.floor(total * int(size[:-1]) / 100))
    return int(size)


def batch_sizes(total: int, batches: Sequence[str]) -> list[int]:
    """How many hosts each batch takes; one batch of all hosts when `batches:` is not given."""
    if not batches:
        return [total] if total else []
    sizes: list[int] = []
    left, index = total, 0
    while left > 0:
        size = min(left, _count(batches[min(index, len(batches) - 1)], total))
        sizes.append(size)
        left -= size
        index += 1
    return sizes


def allowed_failures(max_failures: str | None, total: int) -> int:
    """How many hosts may fail before the rollout stops (default 0: the first failure stops it)."""
    if max_failures is None:
        return 0
    if max_failures.endswith("%"):
        return math.floor(total * int(max_failures[:-1]) / 100)
    return int(max_failures)
