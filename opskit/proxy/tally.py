"""Per-client counters and the atomic stats file, for the engines that live inside opskit (HAProxy, HTTP).

The built-in forwarder keeps its own copy of this logic because it must stay a single stdlib-only file;
the keys written here are the same (opskit/proxy/stats.py), so every reader works with every engine.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HEARTBEAT_S = 5.0  # rewrite at least this often, so readers can tell a live bridge from a dead one


def iso(wall: float | None) -> str | None:
    """ISO 8601 UTC from a time.time() value."""
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat()


def wall_of(text: str | None) -> float | None:
    """A time.time() value from ISO 8601 (None stays None)."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass
class Client:
    """One client address, mutable while the bridge runs."""

    address: str
    first_seen: float
    last_seen: float
    active: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0


class Tally:
    """The bridge's counters; every method takes the lock, so a reader thread may feed it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.active = self.total = self.bytes_in = self.bytes_out = self.errors = 0
        self.last_activity: float | None = None
        self.requests: dict[str, int] = {}
        self.dirty = True

    def client(self, address: str, now: float) -> Client:
        """The client row for an address (created on first sight); call with the lock held."""
        row = self.clients.get(address)
        if row is None:
            row = self.clients[address] = Client(address, now, now)
        return row

    def touch(self, row: Client, now: float) -> None:
        """Something happened for this client: its last_seen and the quiet-window clock move."""
        row.last_seen = now
        self.last_activity = now
        self.dirty = True

    def restore(self, path: Path) -> int:
        """Continue the table and totals of a previous run's stats file; the number of clients read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        with self.lock:
            try:
                for key in ("total", "bytes_in", "bytes_out", "errors"):
                    setattr(self, key, int(data.get(key) or 0))
                self.last_activity = wall_of(data.get("last_activity"))
                for key, count in (data.get("requests") or {}).items():
                    self.requests[str(key)] = int(count)
                for row in data.get("clients") or []:
                    first = wall_of(row["first_seen"]) or time.time()
                    client = Client(str(row["address"]), first, wall_of(row["last_seen"]) or first)
                    for key in ("total", "bytes_in", "bytes_out", "errors"):
                        setattr(client, key, int(row.get(key) or 0))
                    self.clients[client.address] = client
            except (KeyError, TypeError, ValueError, AttributeError):
                self.clients.clear()
                self.requests.clear()
                self.total = self.bytes_in = self.bytes_out = self.errors = 0
                self.last_activity = None
                return 0
            return len(self.clients)

    def snapshot(self, **header: Any) -> dict[str, Any]:
        """The stats file's content: `header` gives listener, target, engine, mode, started_at, pid, state."""
        with self.lock:
            self.dirty = False
            rows = sorted(self.clients.values(), key=lambda c: c.last_seen, reverse=True)
            return {
                **header,
                "updated_at": iso(time.time()),
                "active": self.active,
                "total": self.total,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "errors": self.errors,
                "last_activity": iso(self.last_activity),
                "clients": [
                    {
                        "address": c.address,
                        "active": c.active,
                        "total": c.total,
                        "bytes_in": c.bytes_in,
                        "bytes_out": c.bytes_out,
                        "first_seen": iso(c.first_seen),
                        "last_seen": iso(c.last_seen),
                        "errors": c.errors,
                    }
                    for c in rows
                ],
                "requests": dict(self.requests),
            }


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON: temp file in the same directory, fsync, rename, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
