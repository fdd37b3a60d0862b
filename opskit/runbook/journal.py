"""The run journal: runs/<RUN_ID>/journal.jsonl, append-only, one JSON event per line.

Every event except `output` is fsynced before `append` returns, so a `step_started` is on disk before the
step's command starts (a crash can never leave a step that ran without a trace). `output` lines are written
with one unbuffered `os.write` (they survive `kill -9`; only a power loss can drop the last few), which keeps
a chatty step from costing one fsync per line. Everything is masked on the way in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets as pysecrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.errors import UsageError
from opskit.redaction import Masker

JOURNAL = "journal.jsonl"
OUTPUT_CAP_BYTES = 64 * 1024  # per step; the rest is counted, not kept
# step_process follows an fsynced step_started; a power loss also ends the process it names.
_NO_FSYNC = frozenset({"output", "step_process"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: journals hold who did what and when."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


def new_run_id(now: datetime) -> str:
    """Sortable and short: 20251123-031002-a1b2."""
    return now.strftime("%Y%m%d-%H%M%S-") + pysecrets.token_hex(2)


def run_dir(state_dir: Path, run_id: str) -> Path:
    """The directory of an existing run; a one-line error naming `opskit status` when there is none."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise UsageError(f"bad run id {run_id!r}")
    path = runs_dir(state_dir) / run_id
    if not (path / JOURNAL).is_file():
        raise UsageError(
            f"no run {run_id!r} in {state_dir} (list runs with `opskit status`, or pass --state-dir)"
        )
    return path


class Journal:
    """Appends events to one run's journal; every value is masked before it is written."""

    def __init__(self, path: Path, masker: Masker, *, clock: Any = utc_now) -> None:
        self.path = path
        self.masker = masker
        self._clock = clock
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._output_bytes: dict[str, int] = {}

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event (durably, unless it is an `output` line); returns it as written."""
        record = {"ts": iso(self._clock()), "event": event, **self.masker.value(_plain(fields))}
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        os.write(self._fd, data)
        if event not in _NO_FSYNC:
            os.fsync(self._fd)
        return record

    def output(self, step: str, host: str, stream: str, text: str) -> None:
        """One line of a step's output, until the step's cap; then one marker line."""
        used = self._output_bytes.get(step, 0)
        size = len(text.encode())
        self._output_bytes[step] = used + size
        if used + size <= OUTPUT_CAP_BYTES:
            self.append("output", step=step, host=host, stream=stream, line=text)
        elif used <= OUTPUT_CAP_BYTES:
            self.append(
                "output", step=step, host=host, stream=stream, line="[output capped at 64 KiB]"
            )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class JournalRead:
    """The events of one journal and what was odd about it (a torn last line after a power loss)."""

    events: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def read_journal(path: Path) -> JournalRead:
    """Every event in order; a torn last line is dropped with a warning, a torn middle line too."""
    events: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return JournalRead([], [f"{path}: no journal"])
    lines = raw.split(b"\n")
    for number, chunk in enumerate(lines, start=1):
        if not chunk.strip():
            continue
        try:
            event = json.loads(chunk)
            if not isinstance(event, dict) or "event" not in event:
                raise ValueError("not an event")
            events.append(event)
        except ValueError:
            last = number == len(lines) or all(not c.strip() for c in lines[number:])
            what = (
                "the last line is cut short (the machine stopped mid-write)"
                if last
                else "a line is damaged"
            )
            warnings.append(f"{path}:{number}: {what}; ignored")
    return JournalRead(events, warnings)
