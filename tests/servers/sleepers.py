"""Find the `sleep` processes a test's step started, by a marker duration no other test uses (from /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path


def sleep_marker(base: int) -> str:
    """A sleep duration no other test uses (from `base` up): finds exactly this step's processes."""
    return f"{uuid.uuid4().int % 100000 + base}.25"


def alive(marker: str) -> list[int]:
    """Pids of live (not zombie) `sleep <marker>` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if f"sleep {marker}" in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def gone_within(marker: str, seconds: float) -> bool:
    """True once no `sleep <marker>` is alive, waiting at most `seconds`."""
    deadline = time.monotonic() + seconds
    while alive(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(marker)


def kill_all(marker: str) -> None:
    """SIGKILL whatever `sleep <marker>` survived, so a failing test leaves nothing behind."""
    for pid in alive(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
