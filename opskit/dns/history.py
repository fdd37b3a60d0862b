"""Where `opskit dns update` outside a runbook journals a TTL it lowered, so a later check knows when.

`$OPSKIT_STATE_DIR/dns/changes.jsonl` (default ./.opskit): one JSON object per line, the file 0600 in a
0700 directory. Inside a runbook the same fact goes to the run's journal as `dns.ttl_lowered`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from opskit.dns.verdict import Lowering
from opskit.statedir import default_state_dir

FACT = "dns.ttl_lowered"


def state_dir() -> Path:
    """The opskit state directory (see opskit.statedir)."""
    return default_state_dir()


def changes_file(base: Path | None = None) -> Path:
    """The DNS change journal under the state directory."""
    return (base or state_dir()) / "dns" / "changes.jsonl"


def record(fact: Mapping[str, Any], base: Path | None = None) -> Path:
    """Append one fact (a JSON object) to the change journal, creating it private."""
    path = changes_file(base)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(json.dumps(dict(fact), sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, 0o600)
    return path


def read(base: Path | None = None) -> list[dict[str, Any]]:
    """Every fact journaled so far (oldest first); a torn last line is skipped."""
    path = changes_file(base)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    facts = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            facts.append(value)
    return facts


def as_lowering(fact: Mapping[str, Any]) -> Lowering | None:
    """A `dns.ttl_lowered` fact as a Lowering (None when it lacks the time or the previous TTL)."""
    try:
        at = datetime.fromisoformat(str(fact["lowered_at"]))
        previous = int(fact["previous_ttl"])
    except (KeyError, TypeError, ValueError):
        return None
    new = fact.get("new_ttl")
    return Lowering(
        lowered_at=at,
        previous_ttl_s=previous,
        name=fact.get("name"),
        type=fact.get("type"),
        new_ttl_s=int(new) if isinstance(new, int) else None,
    )


def lowerings(facts: Iterable[Mapping[str, Any]]) -> list[Lowering]:
    """Every usable lowering among the facts, oldest first."""
    return [low for low in (as_lowering(f) for f in facts) if low is not None]


def latest_for(lows: Iterable[Lowering], name: str, rtype: str) -> Lowering | None:
    """The most recent lowering of NAME TYPE (a lowering for every name counts too)."""
    matching = [low for low in lows if low.applies_to(name, rtype)]
    return max(matching, key=lambda low: low.lowered_at) if matching else None
