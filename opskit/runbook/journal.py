"""The run journal: runs/<RUN_ID>/journal.jsonl, append-only, one JSON event per line.

Every event except `output` is fsynced before `append` returns, so a `step_started` is on disk before the
step's command starts (a crash can never leave a step that ran without a trace). `output` lines are written
with one unbuffered `os.write` (they survive `kill -9`; only a power loss can drop the last few), which keeps
a chatty step from costing one fsync per line. Everything is masked on the way in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import secrets as pysecrets
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.errors import Blocked, UsageError
from opskit.redaction import Masker

JOURNAL = "journal.jsonl"
OUTPUT_CAP_BYTES = 64 * 1024  # per step; the rest is counted, not kept
# A local step_process follows an fsynced step_started; a power loss also ends the process it names.
# A remote one is fsynced: the host's process outlives our power loss, and resume must find it (#10).
_NO_FSYNC = frozenset({"output", "step_process"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700: journals hold who did what and when.

    A directory that already exists keeps its permissions: a team's shared state directory (setgid,
    0770) is the operator's choice, not ours to tighten (issue #10).
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs, permissions included
        except OSError as exc:
            raise Blocked(
                f"cannot create {directory}: {exc.strerror or exc} (pass --state-dir or set "
                "OPSKIT_STATE_DIR to a writable directory)"
            ) from None
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    return path


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


def new_run_id(now: datetime) -> str:
    """Sortable and short: 20251123-031002-a1b2."""
    return now.strftime("%Y%m%d-%H%M%S-") + pysecrets.token_hex(2)


def run_dir(state_dir: Path, run_id: str) -> Path:
    """The directory of an existing run; a one-line error naming `opskit status` when there is none."""
    # Longer than a file name, or with a NUL: the file system would raise, not say which argument.
    if not run_id or "/" in run_id or run_id.startswith(".") or "\0" in run_id or len(run_id) > 64:
        raise UsageError(f"bad run id {run_id[:80]!r}: expected one like 20251123-031002-a1b2")
    path = runs_dir(state_dir) / run_id
    if not (path / JOURNAL).is_file():
        raise UsageError(
            f"no run {run_id!r} in {state_dir} (list runs with `opskit status`, or pass --state-dir)"
        )
    return path


class JournalUnwritable(Blocked):
    """The journal cannot be written (disk full, file-size limit, read-only): nothing more may run."""

    def __init__(self, path: Path, exc: OSError) -> None:
        why = exc.strerror or type(exc).__name__
        super().__init__(
            f"cannot write the journal {path}: {why}; stopped, nothing more runs "
            "(free space or fix permissions, then `opskit resume`)"
        )


class Journal:
    """Appends events to one run's journal; every value is masked before it is written.

    A write that fails raises JournalUnwritable (exit 3): a step whose start is not on disk never runs.
    """

    def __init__(self, path: Path, masker: Masker, *, clock: Any = utc_now) -> None:
        self.path = path
        self.masker = masker
        self._clock = clock
        _fail_writes_instead_of_dying()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(self._fd, 0o600)
            self._end_torn_line()
        except OSError as exc:
            raise JournalUnwritable(path, exc) from None
        self._output_bytes: dict[str, int] = {}

    def _end_torn_line(self) -> None:
        """A power loss may have cut the last line short: start ours on a line of its own."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event (durably, unless it is an `output` line); returns it as written."""
        record = {"ts": iso(self._clock()), "event": event, **self.masker.value(_plain(fields))}
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a file-size limit or a full disk can cut a write short
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(errno.ENOSPC, "the disk is full or the file-size limit was reached")
            if event not in _NO_FSYNC or fields.get("remote"):
                os.fsync(self._fd)
        except OSError as exc:
            raise JournalUnwritable(self.path, exc) from None
        return record

    def output(self, step: str, host: str, stream: str, text: str) -> None:
        """One line of a step's output, until the step's cap; then one marker line."""
        used = self._output_bytes.get(step, 0)
        size = len(text.encode())
        self._output_bytes[step] = used + size
        # A step's output that cannot be written is lost, but the step is not stopped for it: the
        # next event that matters (its step_finished) fails loudly if the journal is still unwritable.
        with contextlib.suppress(JournalUnwritable):
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


def _fail_writes_instead_of_dying() -> None:
    """Past RLIMIT_FSIZE the kernel sends SIGXFSZ, which kills silently; ignored, write fails with EFBIG."""
    with contextlib.suppress(ValueError, AttributeError):  # not the main thread / not POSIX
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


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
