"""The stats file has one reader: typed, validated, one line on a bad file, fast at any table size."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opskit.errors import Blocked, ExitCode
from opskit.proxy import stats
from opskit.traffic.source import FileSource, RemoteFileSource
from opskit.transport.local import LocalTransport
from tests.conftest import Invoke

NOW = datetime.now(UTC)


def stats_doc(**extra: Any) -> dict[str, Any]:
    """A running bridge's stats file (this test process plays the bridge, so its pid is alive)."""
    doc: dict[str, Any] = {
        "listener": "127.0.0.1:5060",
        "target": "127.0.0.2:5060",
        "engine": "builtin",
        "mode": "tcp",
        "started_at": (NOW - timedelta(hours=1)).isoformat(),
        "updated_at": datetime.now(UTC).isoformat(),
        "pid": os.getpid(),
        "state": "running",
        "active": 0,
        "total": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "errors": 0,
        "last_activity": None,
        "clients": [],
        "heartbeat_s": 1.0,
    }
    doc.update(extra)
    return doc


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"listener": "x"}', "missing target"),
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "not JSON"),
        (json.dumps(stats_doc(state="sleeping")), "state: expected running, stopping or stopped"),
        (json.dumps(stats_doc(updated_at="yesterday")), "updated_at: expected an ISO 8601 time"),
        (json.dumps(stats_doc(clients=[{"address": "127.0.0.9"}])), "clients[0]"),
        (json.dumps(stats_doc(active=-1)), "active: expected a count"),
    ],
)
def test_malformed_stats_file_is_one_line_exit_3(
    opskit: Invoke, tmp_path: Path, content: str, says: str
) -> None:
    """A file that is not what a bridge writes is 'cannot tell' in one line, never a traceback."""
    path = tmp_path / "bridge.json"
    path.write_text(content)

    result = opskit("traffic", "wait", "--stats-file", str(path), expect=ExitCode.BLOCKED)

    assert result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_values_are_typed() -> None:
    """Times come out as aware datetimes, the state as an enum, the watch history as spans."""
    doc = stats_doc(
        watch=[
            {
                "pid": 1,
                "engine": "builtin",
                "started_at": "2026-12-01T10:00:00Z",
                "stopped_at": None,
            }
        ]
    )

    read = stats.from_json(doc)

    assert read.status is stats.BridgeState.RUNNING
    assert read.updated.tzinfo is not None
    assert read.watch[0].started_at == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert read.stale_after_s == 3.0


def test_stale_file_of_a_running_bridge_is_cannot_tell_with_the_reason(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A live bridge whose file is older than 2 heartbeats + 1 s: exit 3, the write error named, and
    never "probably gone" (its pid is alive)."""
    path = tmp_path / "bridge.json"
    old = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    path.write_text(json.dumps(stats_doc(updated_at=old)))
    stats.write_error_marker(path).write_text(
        "2026-12-01T13:00:00Z could not write: No space left\n"
    )

    result = opskit(
        "traffic", "wait", "--stats-file", str(path), "--timeout", "0s", expect=ExitCode.BLOCKED
    )

    assert "cannot tell" in result.stderr
    assert "No space left" in result.stderr
    assert "gone" not in result.stderr


def test_reader_answers_in_under_a_second_for_200k_clients(tmp_path: Path) -> None:
    """A 200,000-row table (an older or foreign writer) is read and validated in under a second of
    CPU (CPU, not wall time: on the shared test machine other work preempts the reader)."""
    seen = NOW.isoformat()
    rows = [
        {
            "address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "active": 0,
            "total": 1,
            "bytes_in": 10,
            "bytes_out": 20,
            "first_seen": seen,
            "last_seen": seen,
            "errors": 0,
        }
        for i in range(200_000)
    ]
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps(stats_doc(clients=rows)))

    started = time.process_time()
    read = FileSource(path).read()
    elapsed = time.process_time() - started

    assert len(read.clients) == 200_000
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_wait_shows_how_switched_at_was_read(opskit: Invoke, tmp_path: Path) -> None:
    """A time of day given to --switched-at is echoed with its date and zone, in text and in JSON."""
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps(stats_doc()))
    args = ("traffic", "wait", "--stats-file", str(path), "--timeout", "0s", "--old-ttl", "1s")

    text = opskit(*args, "--switched-at", "00:00Z", expect=ExitCode.NEGATIVE)
    as_json = opskit(*args, "--switched-at", "00:00Z", "--json", expect=ExitCode.NEGATIVE)

    assert "--switched-at 00:00Z read as " in text.stdout
    assert " UTC (" in text.stdout
    assert json.loads(as_json.stdout)["notes"][0].startswith("--switched-at 00:00Z read as ")


def test_remote_stale_file_says_cannot_tell_or_gone_by_the_hosts_pid(tmp_path: Path) -> None:
    """Over a transport, a stale file of a live pid is "cannot tell"; of a dead pid, "not running"."""
    old = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    dead = subprocess.Popen(["true"])
    dead.wait()
    live_file, dead_file = tmp_path / "live.json", tmp_path / "dead.json"
    live_file.write_text(json.dumps(stats_doc(updated_at=old)))
    dead_file.write_text(json.dumps(stats_doc(updated_at=old, pid=dead.pid)))

    with pytest.raises(Blocked, match="cannot tell") as live:
        RemoteFileSource(LocalTransport(), str(live_file)).read()
    with pytest.raises(Blocked, match="not running any more"):
        RemoteFileSource(LocalTransport(), str(dead_file)).read()

    assert "gone" not in str(live.value)
