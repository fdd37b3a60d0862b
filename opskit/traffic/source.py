"""Where the bridge's counters come from: a stats file here, a HAProxy stats socket, or a file on a host.

Every source returns the same `BridgeStats`, so the verdict, `traffic wait` and `traffic watch` never
care which engine runs the bridge or where. A source that cannot give live counters raises `Blocked`
(exit 3): a verdict computed from a dead bridge's last file would be a guess.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from opskit.errors import Blocked
from opskit.proxy import stats as stats_file
from opskit.proxy.stats import BridgeStats
from opskit.transport.base import Transport

# Every engine rewrites its file at least every 5 s while it runs (heartbeat); far older means it died.
STALE_AFTER_S = 60.0


class StatsSource(Protocol):
    """Something that can be read for the bridge's current counters."""

    @property
    def label(self) -> str:
        """Where the counters come from, for messages ("bridge.json", "old-host:/run/bridge.json")."""
        ...

    def read(self) -> BridgeStats:
        """The counters now; Blocked when the bridge is not running or cannot be read."""
        ...


def check_live(stats: BridgeStats, label: str, *, now: datetime) -> BridgeStats:
    """The same stats, or Blocked when they describe a bridge that has stopped or stopped writing."""
    if stats.state == "stopped":
        ended = f" ({stats.ended})" if stats.ended else ""
        raise Blocked(
            f"{label}: the bridge stopped at {stats.updated_at}{ended}: no live counters "
            "(start it with opskit proxy start)"
        )
    try:
        updated = datetime.fromisoformat(stats.updated_at.replace("Z", "+00:00"))
    except ValueError:
        return stats
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    age_s = (now - updated).total_seconds()
    if age_s > STALE_AFTER_S:
        raise Blocked(
            f"{label}: not rewritten for {int(age_s)} s (the bridge's pid {stats.pid} is probably gone); "
            "check it with opskit proxy status"
        )
    return stats


def _pid_alive(pid: int) -> bool:
    from opskit.proxy.forwarder import pid_alive  # noqa: PLC0415 - stdlib only

    return pid_alive(pid)


@dataclass(frozen=True)
class FileSource:
    """The stats file of a bridge on this machine."""

    path: Path

    @property
    def label(self) -> str:
        return str(self.path)

    def read(self) -> BridgeStats:
        stats = stats_file.load(self.path)
        if stats.state != "stopped" and stats.pid and not _pid_alive(stats.pid):
            raise Blocked(
                f"{self.path}: the bridge (pid {stats.pid}) is not running any more; "
                "start it again with opskit proxy start"
            )
        return check_live(stats, self.label, now=datetime.now(UTC))


@dataclass(frozen=True)
class RemoteFileSource:
    """The stats file of a bridge on another host, read with `cat` over the step's SSH connection."""

    transport: Transport
    path: str
    timeout_s: float = 10.0

    @property
    def label(self) -> str:
        return f"{self.transport.label}:{self.path}"

    def read(self) -> BridgeStats:
        result = self.transport.run(f"cat {shlex.quote(self.path)}", timeout_s=self.timeout_s)
        if not result.ok:
            detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise Blocked(f"{self.label}: cannot read the stats file ({detail})")
        try:
            stats = stats_file.from_json(json.loads(result.stdout))
        except (ValueError, TypeError) as exc:
            raise Blocked(f"{self.label}: not a bridge stats file: {exc}") from None
        return check_live(stats, self.label, now=datetime.now(UTC))


@dataclass(frozen=True)
class HaproxySocketSource:
    """A HAProxy stats socket read directly (live numbers; clients only while they are connected)."""

    socket_path: Path
    timeout_s: float = 5.0

    @property
    def label(self) -> str:
        return str(self.socket_path)

    def read(self) -> BridgeStats:
        from opskit.proxy.haproxy_stats import read_socket  # noqa: PLC0415 - only this source needs it

        return read_socket(self.socket_path, timeout_s=self.timeout_s)


@dataclass(frozen=True)
class RemoteHaproxySource:
    """A HAProxy stats socket on another host, asked over the step's SSH connection."""

    transport: Transport
    socket_path: str
    python: str = "python3"

    @property
    def label(self) -> str:
        return f"{self.transport.label}:{self.socket_path}"

    def read(self) -> BridgeStats:
        from opskit.proxy.remote import read_haproxy  # noqa: PLC0415 - only this source needs it

        return read_haproxy(self.transport, self.socket_path, python=self.python)
