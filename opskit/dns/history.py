"""The one record of DNS changes: TTLs lowered and records switched, by `dns update` and `dns.update`.

`dns/changes.jsonl` under the state directory (opskit.statedir, or `--state-dir`): one JSON object per
line, the file 0600 in a 0700 directory. The standalone command and the runbook action write the same facts here (the action also
puts them in its run's journal), so `dns check`, `dns plan`, a runbook's `plan` and `resume --dry-run`
all read what either did (issue #11, point 3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.dns.timefmt import as_utc
from opskit.dns.verdict import Lowering
from opskit.statedir import default_state_dir

FACT = "dns.ttl_lowered"
SWITCHED = "dns.switched"


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


def as_lowering(fact: Mapping[str, Any], now: datetime | None = None) -> Lowering | None:
    """A `dns.ttl_lowered` fact as a Lowering (None when it lacks the time or the previous TTL).

    A lowering some server had not served yet (`pending`) counts from `now`: that server may serve it
    any moment, and until it does caches may still fetch the old TTL. A later `dns update` that sees
    every server serve it settles it (see `settle`).
    """
    try:
        at = datetime.fromisoformat(str(fact["lowered_at"]))
        previous = int(fact["previous_ttl"])
    except (KeyError, TypeError, ValueError):
        return None
    if fact.get("pending"):
        at = max(as_utc(at), now or datetime.now(UTC))
    new = fact.get("new_ttl")
    return Lowering(
        lowered_at=at,
        previous_ttl_s=previous,
        name=fact.get("name"),
        type=fact.get("type"),
        new_ttl_s=int(new) if isinstance(new, int) else None,
    )


def _key(fact: Mapping[str, Any]) -> tuple[str, str]:
    return str(fact.get("name", "")).lower().rstrip("."), str(fact.get("type", "")).upper()


def _unsettled(facts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pending lowerings no later lowering of the same record has settled."""
    done: dict[tuple[str, str], str] = {}
    for fact in facts:
        if not fact.get("pending") and "lowered_at" in fact:
            key = _key(fact)
            done[key] = max(done.get(key, ""), str(fact["lowered_at"]))
    return [
        f
        for f in facts
        if f.get("pending") and "lowered_at" in f and done.get(_key(f), "") < str(f["lowered_at"])
    ]


def lowerings(facts: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[Lowering]:
    """Every usable lowering among the facts, oldest first (settled pending ones left out)."""
    facts = list(facts)
    unsettled = [id(f) for f in _unsettled(facts)]
    kept = [f for f in facts if not f.get("pending") or id(f) in unsettled]
    return [low for low in (as_lowering(f, now) for f in kept) if low is not None]


def settle(
    facts: Mapping[str, dict[str, Any]],
    earlier: Sequence[Mapping[str, Any]],
    *,
    name: str,
    rtype: str,
    served_at: datetime | None,
) -> dict[str, dict[str, Any]]:
    """The facts of a change, with a lowering that settles an earlier pending one of the same record.

    Once every server serves the record, the earlier lowering was served by then at the latest: the
    safe time counts from now with the larger previous TTL (never earlier than the truth).
    """
    key = (name.lower().rstrip("."), rtype.upper())
    pending = [f for f in _unsettled(earlier) if _key(f) == key]
    if served_at is None or not pending:
        return dict(facts)
    last = max(pending, key=lambda f: str(f["lowered_at"]))
    own = facts.get(FACT, {})
    settled = {
        **{k: v for k, v in last.items() if k not in ("fact", "pending", "run", "step")},
        **own,
        "lowered_at": served_at.isoformat(),
        "previous_ttl": max(int(last["previous_ttl"]), int(own.get("previous_ttl", 0))),
        "settles": last["lowered_at"],
    }
    return {**facts, FACT: settled}


def latest_for(lows: Iterable[Lowering], name: str, rtype: str) -> Lowering | None:
    """The most recent lowering of NAME TYPE (a lowering for every name counts too)."""
    matching = [low for low in lows if low.applies_to(name, rtype)]
    return max(matching, key=lambda low: low.lowered_at) if matching else None


def change_facts(
    *,
    name: str,
    rtype: str,
    zone: str,
    server: str,
    before: tuple[Sequence[str], int] | None,
    after: tuple[Sequence[str], int] | None,
    at: datetime,
    pending: Sequence[str] = (),
    simulated: bool = False,
) -> dict[str, dict[str, Any]]:
    """The `dns.ttl_lowered` and `dns.switched` facts of one change (values, TTL) before -> after.

    `at` is when the last authoritative server served the change; `pending` names the servers that
    never did (then no safe time can count from `at`); `simulated` marks a rehearsal's would-be change.
    """
    where = {"name": name, "type": rtype, "zone": zone, "server": server}
    extra: dict[str, Any] = {"pending": list(pending)} if pending else {}
    if simulated:
        extra["simulated"] = True
    facts: dict[str, dict[str, Any]] = {}
    if before is not None and after is not None and after[1] < before[1]:
        facts[FACT] = {
            **where,
            "lowered_at": at.isoformat(),
            "previous_ttl": before[1],
            "new_ttl": after[1],
            "values": sorted(after[0]),
            **extra,
        }
    old_values = sorted(before[0]) if before else []
    new_values = sorted(after[0]) if after else []
    if old_values != new_values:
        # caches that fetched the old answer keep it for the TTL it had before this change
        facts[SWITCHED] = {
            **where,
            "switched_at": at.isoformat(),
            "old_ttl": before[1] if before else None,
            "old_values": old_values,
            "new_values": new_values,
            "new_ttl": after[1] if after else None,
            **extra,
        }
    return facts


def record_facts(
    facts: Mapping[str, Mapping[str, Any]], base: Path | None = None, **origin: Any
) -> None:
    """Append each fact with its kind (`fact`) and where it came from (run and step, when a runbook)."""
    for kind, value in facts.items():
        record({"fact": kind, **value, **origin}, base)
