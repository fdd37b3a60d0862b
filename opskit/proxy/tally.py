"""Per-client counters and the atomic stats file, for the engines that live inside opskit (HAProxy, HTTP).

The built-in forwarder keeps its own copy of this logic because it must stay a single stdlib-only file;
the keys written here are the same (opskit/proxy/stats.py and the stats-file contract of issue #9), so
every reader works with every engine.
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

# Rewrite at least this often, even when idle: a reader treats a file older than 2 heartbeats + 1 s as
# "cannot tell" (issue #9 point 2), so a live bridge must never look stale.
HEARTBEAT_S = 1.0
WATCH_KEEP = 50  # bridge lifetimes kept in "watch" (issue #9 contract)
CLIENT_CAP = 10_000  # client rows kept; idle ones past it are folded into "clients_other"


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
    aborts: int = 0


@dataclass
class Other:
    """Idle clients folded together once the table passed its cap (issue #9: a bounded table)."""

    clients: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_seen: float | None = None

    def fold(self, row: Client) -> None:
        self.clients += 1
        self.total += row.total
        self.bytes_in += row.bytes_in
        self.bytes_out += row.bytes_out
        self.last_seen = max(self.last_seen or row.last_seen, row.last_seen)

    def as_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "active": 0,  # only idle rows are folded
            "total": self.total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "last_seen": iso(self.last_seen),
        }


class Tally:
    """The bridge's counters; every method takes the lock, so a reader thread may feed it."""

    def __init__(self, *, carries: tuple[str, ...] = ("tcp",), cap: int = CLIENT_CAP) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.active = self.total = self.bytes_in = self.bytes_out = self.errors = 0
        self.aborts_client = self.aborts_upstream = 0
        self.last_activity: float | None = None
        self.requests: dict[str, int] = {}
        self.dirty = True
        self.carries = list(carries)
        self.cap = cap
        self.other = Other()
        # True once a client may be missing from the rows (e.g. HAProxy dropped log lines): the verdict
        # must then not say SAFE from the rows alone.
        self.clients_partial = False
        self.partial_reason: str | None = None
        self.write_errors = 0
        self.last_write_error: str | None = None
        self.watch: list[dict[str, Any]] = []

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

    def mark_partial(self, reason: str) -> None:
        """Say from now on that the client rows may be incomplete, and why."""
        with self.lock:
            if not self.clients_partial:
                self.dirty = True
            self.clients_partial, self.partial_reason = True, reason

    def restore(self, path: Path) -> int:
        """Continue the table, totals and watch history of a previous run's stats file; clients read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        if not isinstance(data, dict):
            return 0
        with self.lock:
            self._restore_watch(data)
            try:
                for key in ("total", "bytes_in", "bytes_out", "errors"):
                    setattr(self, key, int(data.get(key) or 0))
                for key in ("aborts_client", "aborts_upstream"):
                    setattr(self, key, int(data.get(key) or 0))
                self.last_activity = wall_of(data.get("last_activity"))
                for key, count in (data.get("requests") or {}).items():
                    self.requests[str(key)] = int(count)
                for row in data.get("clients") or []:
                    first = wall_of(row["first_seen"]) or time.time()
                    client = Client(str(row["address"]), first, wall_of(row["last_seen"]) or first)
                    for key in ("total", "bytes_in", "bytes_out", "errors", "aborts"):
                        setattr(client, key, int(row.get(key) or 0))
                    self.clients[client.address] = client
                other = data.get("clients_other") or {}
                self.other = Other(
                    int(other.get("clients") or 0),
                    int(other.get("total") or 0),
                    int(other.get("bytes_in") or 0),
                    int(other.get("bytes_out") or 0),
                    wall_of(other.get("last_seen")),
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                self.clients.clear()
                self.requests.clear()
                self.total = self.bytes_in = self.bytes_out = self.errors = 0
                self.aborts_client = self.aborts_upstream = 0
                self.last_activity = None
                self.other = Other()
                return 0
            return len(self.clients)

    def _restore_watch(self, data: dict[str, Any]) -> None:
        """Keep the previous lifetimes; one still open died uncleanly: it watched until its last write."""
        watch = data.get("watch")
        if not isinstance(watch, list):
            return
        entries = [dict(e) for e in watch if isinstance(e, dict)]
        for entry in entries:
            if entry.get("stopped_at") is None:
                entry["stopped_at"] = data.get("updated_at") or entry.get("started_at")
        self.watch = entries[-WATCH_KEEP:]

    def begin_watch(self, pid: int, engine: str, started_at: float) -> None:
        """Record that this process watches the listener from started_at on."""
        with self.lock:
            entry = {
                "pid": pid,
                "engine": engine,
                "started_at": iso(started_at),
                "stopped_at": None,
            }
            self.watch = [*self.watch, entry][-WATCH_KEEP:]

    def end_watch(self, stopped_at: float) -> None:
        """A clean stop: nothing is connected any more, and this process's lifetime ends here."""
        with self.lock:
            self.active = 0
            for row in self.clients.values():
                row.active = 0
            if self.watch and self.watch[-1].get("stopped_at") is None:
                self.watch[-1]["stopped_at"] = iso(stopped_at)

    def _fold_idle(self) -> None:
        """Past the cap, fold the idle clients seen longest ago; active ones and top talkers keep rows."""
        excess = len(self.clients) - self.cap
        if excess <= 0:
            return
        idle = [c for c in self.clients.values() if c.active == 0]
        talkers = sorted(idle, key=lambda c: c.bytes_in + c.bytes_out, reverse=True)
        keep = {c.address for c in talkers[: self.cap // 10]}
        candidates = sorted((c for c in idle if c.address not in keep), key=lambda c: c.last_seen)
        for row in candidates[:excess]:
            self.other.fold(row)
            del self.clients[row.address]

    def snapshot(self, **header: Any) -> dict[str, Any]:
        """The stats file's content: `header` gives listener, target, engine, mode, started_at, pid, state."""
        with self.lock:
            self.dirty = False
            self._fold_idle()
            rows = sorted(self.clients.values(), key=lambda c: c.last_seen, reverse=True)
            return {
                **header,
                "updated_at": iso(time.time()),
                "heartbeat_s": HEARTBEAT_S,
                "active": self.active,
                "total": self.total,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "errors": self.errors,
                "aborts_client": self.aborts_client,
                "aborts_upstream": self.aborts_upstream,
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
                        "aborts": c.aborts,
                    }
                    for c in rows
                ],
                "clients_other": self.other.as_json(),
                "clients_partial": self.clients_partial,
                "clients_partial_reason": self.partial_reason,
                "carries": list(self.carries),
                "watch": [dict(e) for e in self.watch],
                "write_errors": self.write_errors,
                "last_write_error": self.last_write_error,
                "requests": dict(self.requests),
            }

    def save(self, path: Path, **header: Any) -> tuple[dict[str, Any], str | None]:
        """Snapshot and write the stats file; (content, the error text when the write failed).

        A failed write (disk full, read-only, fd limit) is counted and reported, never fatal: the bridge
        keeps forwarding, and readers see the file age past two heartbeats (issue #9 point 2).
        """
        data = self.snapshot(**header)
        try:
            write_atomic(path, data)
        except OSError as exc:
            text = f"{path}: {exc.strerror or exc}"
            with self.lock:
                self.write_errors += 1
                self.last_write_error = text
                self.dirty = True
            return data, text
        return data, None


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
