"""The bridge's stats file: what every engine (built-in, HAProxy, HTTP) reports, and how it is read.

The file is JSON, rewritten atomically (temp file, fsync, rename) at least every `heartbeat_s` seconds
while the bridge runs, even when idle. Field names are the contract of issues #5 and #9: scripts and
`opskit traffic` read them. This module is the only reader: `from_json`/`load` validate the file into
typed values (times as aware datetimes, the state as an enum), and a file that does not fit is one
`StatsInvalid` line (exit 3), never a traceback.
"""

from __future__ import annotations

import enum
import json
import operator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.errors import Blocked

WATCH_KEEP = 50  # lifetimes kept in "watch" (the contract's "at most the last 50")
DEFAULT_HEARTBEAT_S = 1.0
LEGACY_HEARTBEAT_S = (
    5.0  # writers from before issue #9 rewrote the file every 5 s and wrote no heartbeat_s
)
WRITE_ERROR_SUFFIX = ".write-error"


class StatsInvalid(Blocked):
    """A stats file that is not what a bridge writes: the verdict cannot tell (exit 3)."""


class BridgeState(enum.StrEnum):
    """Where the bridge is in its life."""

    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the stats file (UTC when it carries no zone); None stays None."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    aborts: int = 0  # connections this client ended with a reset (built-in engine)

    @property
    def last_seen_at(self) -> datetime | None:
        """`last_seen` as an aware datetime."""
        return parse_time(self.last_seen)


@dataclass(frozen=True)
class WatchSpan:
    """One bridge lifetime: from its start until its clean stop (None: running, or died uncleanly)."""

    pid: int | None
    engine: str
    started_at: datetime
    stopped_at: datetime | None


@dataclass(frozen=True)
class OtherClients:
    """Idle clients folded together beyond the table's cap (the built-in engine keeps 10,000 rows)."""

    clients: int = 0
    active: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_seen: str | None = None


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
    # Issue #9 (STATS-CONTRACT.md): absent in files of older writers, hence the defaults.
    heartbeat_s: float | None = None  # None: an older writer (LEGACY_HEARTBEAT_S applies)
    watch: list[WatchSpan] = field(default_factory=list)  # oldest first
    write_errors: int = 0
    last_write_error: str | None = None
    aborts_client: int = 0
    aborts_upstream: int = 0
    clients_other: OtherClients | None = None
    clients_partial: bool = False
    carries: list[str] = field(default_factory=lambda: ["tcp"])
    udp_active_flows: int | None = None  # --udp: UDP flows open now ("udp"); None: TCP only

    @property
    def status(self) -> BridgeState:
        """`state` as an enum (validated when read)."""
        return BridgeState(self.state)

    @property
    def updated(self) -> datetime:
        """When the file was written."""
        moment = parse_time(self.updated_at)
        return moment if moment is not None else datetime.min.replace(tzinfo=UTC)

    @property
    def started(self) -> datetime | None:
        """When this bridge process started."""
        return parse_time(self.started_at)

    @property
    def last_activity_at(self) -> datetime | None:
        """The last connect, close or byte; None: never."""
        return parse_time(self.last_activity)

    @property
    def stale_after_s(self) -> float:
        """A running bridge's file older than this is not news any more: 2 heartbeats + 1 s."""
        return 2 * (self.heartbeat_s or LEGACY_HEARTBEAT_S) + 1.0


_REQUIRED: dict[str, tuple[type, ...]] = {
    "listener": (str,),
    "target": (str,),
    "engine": (str,),
    "mode": (str,),
    "started_at": (str,),
    "updated_at": (str,),
    "state": (str,),
    "active": (int,),
    "total": (int,),
    "bytes_in": (int,),
    "bytes_out": (int,),
    "errors": (int,),
}
_TIMES = ("started_at", "updated_at", "last_activity")
_COUNTS = ("active", "total", "bytes_in", "bytes_out", "errors")


def _problem(key: str, expected: str, value: Any) -> StatsInvalid:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return StatsInvalid(f"{key}: expected {expected}, got {shown}")


def _count(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _problem(key, "a count (an integer of at least 0)", value)
    return value


def _time_text(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _problem(key, "an ISO 8601 time", value)
    try:
        parse_time(value)
    except ValueError:
        raise _problem(key, "an ISO 8601 time", value) from None
    return value


_CLIENT_KEYS = frozenset(ClientStats.__dataclass_fields__)


_CLIENT_TYPES = {
    "address": str,
    "active": int,
    "total": int,
    "bytes_in": int,
    "bytes_out": int,
    "first_seen": str,
    "last_seen": str,
    "errors": int,
    "aborts": int,
}


# Their class-level defaults apply when a row omits them.
_OPTIONAL = frozenset(("errors", "aborts"))


def _client(n: int, row: Any) -> ClientStats:
    """One row, checked field by field (the slow path, which also names the row that is wrong)."""
    if not isinstance(row, dict):
        raise _problem(f"clients[{n}]", "a client row", row)
    try:
        client = ClientStats(**{k: v for k, v in row.items() if k in _CLIENT_KEYS})
    except TypeError:
        raise _problem(
            f"clients[{n}]", "a client row with address, counts and times", row
        ) from None
    for key, kind in _CLIENT_TYPES.items():
        if type(getattr(client, key)) is not kind:
            raise _problem(f"clients[{n}].{key}", kind.__name__, getattr(client, key))
    return client


def _all_rows_well_formed(rows: list[Any]) -> bool:
    """Every row a dict with every required client field of its type (optional ones, when present,
    too): checked a column at a time in C, since a per-row Python check made 200,000 rows take 1 s."""
    if set(map(type, rows)) != {dict}:
        return False
    try:
        for key, kind in _CLIENT_TYPES.items():
            if key in _OPTIONAL:
                column = map(operator.methodcaller("get", key, 0), rows)
            else:
                column = map(operator.itemgetter(key), rows)
            if set(map(type, column)) != {kind}:
                return False
    except KeyError:
        return False
    return True


def _clients(rows: Any) -> list[ClientStats]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise _problem("clients", "a list of client rows", rows)
    if rows and _all_rows_well_formed(rows):
        # A frozen dataclass's __init__ costs an object.__setattr__ per field: fill __dict__ instead
        # (an unknown key a newer writer adds just rides along; no field reads it).
        new = ClientStats.__new__
        out = []
        for row in rows:
            client = new(ClientStats)
            client.__dict__.update(row)
            out.append(client)
        return out
    return [_client(n, row) for n, row in enumerate(rows)]


def _watch(rows: Any) -> list[WatchSpan]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise _problem("watch", "a list of bridge lifetimes", rows)
    out = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _problem(f"watch[{n}]", "a bridge lifetime", row)
        try:
            started = parse_time(row.get("started_at"))
            stopped = parse_time(row.get("stopped_at"))
        except (ValueError, TypeError, AttributeError):
            raise _problem(f"watch[{n}]", "ISO 8601 started_at/stopped_at", row) from None
        if started is None:
            raise _problem(f"watch[{n}].started_at", "an ISO 8601 time", row.get("started_at"))
        pid = row.get("pid")
        out.append(
            WatchSpan(
                pid if isinstance(pid, int) else None,
                str(row.get("engine") or "?"),
                started,
                stopped,
            )
        )
    return out


def _other(value: Any) -> OtherClients | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _problem("clients_other", "an object of counts", value)
    return OtherClients(
        clients=_count(value, "clients"),
        active=_count(value, "active"),
        total=_count(value, "total"),
        bytes_in=_count(value, "bytes_in"),
        bytes_out=_count(value, "bytes_out"),
        last_seen=_time_text(value, "last_seen", required=False),
    )


def from_json(data: Any) -> BridgeStats:
    """A validated BridgeStats from the parsed stats file; StatsInvalid (one line) when it does not fit.

    Unknown keys are ignored for forward compatibility.
    """
    if not isinstance(data, dict):
        raise _problem("the file", "a JSON object", data)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise StatsInvalid(f"missing {', '.join(missing)}")
    for key, kinds in _REQUIRED.items():
        if not isinstance(data[key], kinds) or isinstance(data[key], bool):
            raise _problem(key, "a string" if kinds == (str,) else "a count", data[key])
    for key in _COUNTS:
        _count(data, key)
    for key in _TIMES:
        _time_text(data, key, required=key != "last_activity")
    if data["state"] not in {s.value for s in BridgeState}:
        raise _problem("state", "running, stopping or stopped", data["state"])
    pid = data.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise _problem("pid", "a process id", pid)
    heartbeat = data.get("heartbeat_s")
    if heartbeat is not None and (not isinstance(heartbeat, int | float) or heartbeat <= 0):
        raise _problem("heartbeat_s", "seconds (more than 0)", heartbeat)
    carries = data.get("carries", ["tcp"])
    if not isinstance(carries, list) or not all(c in ("tcp", "udp") for c in carries):
        raise _problem("carries", 'a list of "tcp" and "udp"', carries)
    requests = data.get("requests") or {}
    if not isinstance(requests, dict):
        raise _problem("requests", "an object of counts", requests)
    last_error = data.get("last_write_error")
    udp = data.get("udp")
    return BridgeStats(
        listener=data["listener"],
        target=data["target"],
        engine=data["engine"],
        mode=data["mode"],
        started_at=data["started_at"],
        updated_at=data["updated_at"],
        pid=pid,
        state=data["state"],
        active=data["active"],
        total=data["total"],
        bytes_in=data["bytes_in"],
        bytes_out=data["bytes_out"],
        errors=data["errors"],
        last_activity=data.get("last_activity"),
        clients=_clients(data.get("clients")),
        ended=None if data.get("ended") is None else str(data["ended"]),
        cut=_count(data, "cut"),
        requests=requests,
        heartbeat_s=None if heartbeat is None else float(heartbeat),
        watch=_watch(data.get("watch")),
        write_errors=_count(data, "write_errors"),
        last_write_error=None if last_error is None else str(last_error),
        aborts_client=_count(data, "aborts_client"),
        aborts_upstream=_count(data, "aborts_upstream"),
        clients_other=_other(data.get("clients_other")),
        clients_partial=bool(data.get("clients_partial", False)),
        carries=list(carries),
        udp_active_flows=_count(udp, "active_flows") if isinstance(udp, dict) else None,
    )


def parse(text: str | bytes, label: str) -> BridgeStats:
    """The stats file's text, validated; StatsInvalid naming `label` when it is not a stats file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StatsInvalid(f"{label}: not a bridge stats file (not JSON: {exc})") from None
    try:
        return from_json(data)
    except StatsInvalid as exc:
        raise StatsInvalid(f"{label}: not a bridge stats file: {exc.message}") from None


def load(path: Path) -> BridgeStats:
    """Read a stats file; Blocked (exit 3) when it does not exist, cannot be read, or is not valid."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise Blocked(
            f"{path}: no stats file (is the bridge running? start it with opskit proxy start)"
        ) from None
    except OSError as exc:
        raise Blocked(f"{path}: cannot read the stats file: {exc.strerror or exc}") from None
    return parse(text, str(path))


def write_error_marker(stats_file: Path | str) -> Path:
    """Where a bridge notes that it could not rewrite `stats_file` (next to it: `<stats>.write-error`)."""
    return Path(f"{stats_file}{WRITE_ERROR_SUFFIX}")


def read_write_error(stats_file: Path) -> str | None:
    """The last write failure a bridge noted for `stats_file`, or None when it noted none.

    The marker first; when the directory took the marker down with it (read-only), the bridge's log
    next to the stats file (`<stats>.log`, where `proxy start --detach` puts it), read from its tail.
    """
    try:
        text = write_error_marker(stats_file).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    if text:
        return text.splitlines()[-1]
    try:
        with Path(stats_file).with_suffix(".log").open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 65536))
            tail = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    failures = [row for row in tail if "could not write the stats file" in row]
    return failures[-1] if failures else None
