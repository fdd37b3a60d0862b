"""Where the bridge's counters come from: a stats file here, a HAProxy stats socket, or a file on a host.

Every source returns the same `BridgeStats`, so the verdict, `traffic wait` and `traffic watch` never
care which engine runs the bridge or where. A source that cannot give live counters raises `Blocked`
(exit 3): a verdict computed from a dead bridge's last file would be a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from opskit.errors import Blocked
from opskit.proxy import stats as stats_file
from opskit.proxy.stats import BridgeState, BridgeStats, WatchSpan
from opskit.transport.base import Transport


class StatsSource(Protocol):
    """Something that can be read for the bridge's current counters."""

    @property
    def label(self) -> str:
        """Where the counters come from, for messages ("bridge.json", "old-host:/run/bridge.json")."""
        ...

    def read(self) -> BridgeStats:
        """The counters now; Blocked when the bridge is not running or cannot be read."""
        ...


def check_live(
    stats: BridgeStats, label: str, *, now: datetime, write_error: str | None = None
) -> BridgeStats:
    """The same stats, or Blocked when they describe a bridge that has stopped or stopped writing.

    A running bridge rewrites its file every `heartbeat_s` even when idle; a file older than two
    heartbeats and a second is old news, so the verdict cannot tell (exit 3) and says why. The pid
    is not judged here: the caller checked it is alive when it could.
    """
    if stats.status is BridgeState.STOPPED:
        ended = f" ({stats.ended})" if stats.ended else ""
        raise Blocked(
            f"{label}: the bridge stopped at {stats.updated_at}{ended}: no live counters "
            "(start it with opskit proxy start)"
        )
    age_s = (now - stats.updated).total_seconds()
    if age_s > stats.stale_after_s:
        why = write_error or stats.last_write_error
        cause = f"its last write failed: {why}" if why else "see its log"
        heartbeat = stats.heartbeat_s or stats.stale_after_s
        raise Blocked(
            f"{label}: cannot tell: the bridge (pid {stats.pid}) is running but has not rewritten "
            f"its stats file for {age_s:.0f} s (it should every {heartbeat:g} s; {cause}); "
            "free the disk or fix the directory's permissions, then check opskit proxy status"
        )
    return stats


def watched_by_live_haproxy(stats: BridgeStats) -> BridgeStats:
    """A live stats-socket reading has no watch history; the process answering has watched at least
    since its own last session (HAProxy forgets `lastsess` when it restarts), so that is the span."""
    if stats.watch:
        return stats
    since = stats.last_activity_at or stats.updated
    return replace(stats, watch=[WatchSpan(stats.pid, stats.engine, since, None)])


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
        return check_live(
            stats,
            self.label,
            now=datetime.now(UTC),
            write_error=stats_file.read_write_error(self.path),
        )


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
        from opskit.proxy.remote import read_stats_dated  # noqa: PLC0415 - only this source needs it

        stats, host_now = read_stats_dated(self.transport, self.path, timeout_s=self.timeout_s)
        stale = (host_now - stats.updated).total_seconds() > stats.stale_after_s
        if stale and stats.status is not BridgeState.STOPPED and stats.pid:
            # Only a stale file is worth the second command: is its writer alive on the host?
            probe = self.transport.run(f"kill -0 {int(stats.pid)}", timeout_s=self.timeout_s)
            if not probe.ok and "ermission" not in probe.stderr:
                raise Blocked(
                    f"{self.label}: the bridge (pid {stats.pid}) is not running any more on "
                    f"{self.transport.label}; start it again with opskit proxy start"
                )
        return check_live(stats, self.label, now=host_now)


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

        return watched_by_live_haproxy(read_socket(self.socket_path, timeout_s=self.timeout_s))


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

        return watched_by_live_haproxy(
            read_haproxy(self.transport, self.socket_path, python=self.python)
        )
