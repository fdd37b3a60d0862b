"""Small helpers for the runbook tests: write a runbook, read a journal, find the run id."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, text: str, name: str = "runbook.yaml") -> Path:
    """A runbook file in tmp_path with `text` dedented."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def copy_data(tmp_path: Path, name: str) -> Path:
    """A copy of tests/runbook/data/NAME in tmp_path (messages then show an absolute path)."""
    target = tmp_path / name
    target.write_text((DATA / name).read_text())
    return target


def run_id(stdout: str) -> str:
    """The id printed by `run id: <ID>`."""
    match = re.search(r"run id: (\S+)", stdout)
    assert match, stdout
    return match.group(1)


def events(state_dir: Path, rid: str) -> list[dict[str, Any]]:
    """The journal events of a run."""
    path = state_dir / "runs" / rid / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Any, timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll until predicate() is true (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s}s")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    """The lines of a marker file (empty when it does not exist)."""
    return path.read_text().splitlines() if path.exists() else []
