"""The bridge's stats file: what every engine (built-in, HAProxy, HTTP) reports, and how it is read.

The file is JSON, rewritten atomically (temp file, fsync, rename) at least once a second while anything
changes. Field names are the contract of issue #5: scripts and `opskit traffic` read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.errors import Blocked


@dataclass(frozen=True)
class ClientStats:
    """One client address as the bridge saw it."""

    address: str
    active: int
    total: int
    bytes_in: int  # client -> new host
    bytes_out: int  # new host -> client
    first_seen: str  # ISO 8601 UTC
    last_seen: str  # ISO 8601 UTC: last connect, close or byte
    errors: int = 0


@dataclass(frozen=True)
class BridgeStats:
    """The whole bridge: listener, target, counters, and the per-client table."""

    listener: str  # HOST:PORT
    target: str  # HOST:PORT
    engine: str  # builtin | haproxy | http
    mode: str  # tcp | http
    started_at: str  # ISO 8601 UTC
    updated_at: str  # ISO 8601 UTC: when this file was written
    pid: int | None
    state: str  # running | stopping | stopped (how it ended: see `ended`)
    active: int
    total: int
    bytes_in: int
    bytes_out: int
    errors: int
    last_activity: str | None  # ISO 8601 UTC of the last connect, close or byte; None: never
    clients: list[ClientStats] = field(default_factory=list)
    ended: str | None = None  # "sigterm", "sigint", "drained", "error: ..." once stopped
    cut: int = 0  # bridged connections closed at stop because --drain-timeout ran out
    requests: dict[str, int] = field(default_factory=dict)  # http mode: "GET host /path" -> count


def from_json(data: dict[str, Any]) -> BridgeStats:
    """A BridgeStats from the parsed stats file (unknown keys are ignored for forward compatibility)."""
    known = set(BridgeStats.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in known}
    client_fields = set(ClientStats.__dataclass_fields__)
    values["clients"] = [
        ClientStats(**{k: v for k, v in c.items() if k in client_fields})
        for c in data.get("clients", [])
    ]
    return BridgeStats(**values)


def load(path: Path) -> BridgeStats:
    """Read a stats file; Blocked (exit 3) when it does not exist or cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise Blocked(
            f"{path}: no stats file (is the bridge running? start it with opskit proxy start)"
        ) from None
    except (OSError, ValueError) as exc:
        raise Blocked(f"{path}: cannot read the stats file: {exc}") from None
    return from_json(data)
