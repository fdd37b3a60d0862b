"""The bridge's counters over time, appended to the run's directory while a drain is watched.

Every run with a bridge records them (locally or over SSH: whatever source `traffic.drained` reads), so
`opskit report` draws the chart for a real night, not only for the demo. One JSON object a line:
`{"ts": ISO, "active": N, "residual_clients": N, "total": N}`; markers use `"marker"` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAMPLES_FILE = "traffic-samples.jsonl"


def append_sample(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one sample or marker to the run's samples file (private, like the journal)."""
    fd = os.open(run_dir / SAMPLES_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")


def record_verdict(run_dir: Path, verdict: Any) -> None:
    """One sample from a drain reading; a full disk never fails the drain it only illustrates."""
    clients = getattr(verdict, "clients", ())
    at: datetime = getattr(verdict, "checked_at", None) or datetime.now(UTC)
    record = {
        "ts": at.isoformat(),
        "active": int(verdict.active),
        "residual_clients": sum(1 for c in clients if getattr(c, "active", 0) > 0),
        "total": sum(int(getattr(c, "total", 0)) for c in clients),
    }
    with contextlib.suppress(OSError):
        append_sample(run_dir, record)
