"""The journal tells the truth under faults: torn lines, a file-size limit, a shared state directory."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import REPO, Invoke
from tests.runbook.helpers import lines, run_id, write

THREE = """
    name: three
    steps:
      - id: a
        run: echo a >> {dir}/markers
      - id: b
        run: echo b >> {dir}/markers
      - id: c
        run: echo c >> {dir}/markers
"""


def test_a_note_after_a_torn_line_is_not_swallowed(opskit: Invoke, tmp_path: Path) -> None:
    """After a power loss cut the last line short, the next note starts on its own line and shows."""
    path = write(tmp_path, THREE.format(dir=tmp_path))
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
    journal = tmp_path / "state" / "runs" / rid / "journal.jsonl"
    with journal.open("a") as f:
        f.write('{"ts": "2026-01-01T00:00:00Z", "event": "no')

    opskit("note", rid, "power came back at 03:12", "--operator", "bob", expect=ExitCode.OK)

    result = opskit("status", rid, "--json", expect=ExitCode.OK)
    assert [n["text"] for n in json.loads(result.stdout)["notes"]] == ["power came back at 03:12"]
    assert "is damaged" in result.stderr or "cut short" in result.stderr


def _run_limited(path: Path, state: Path, limit: int) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "opskit", "run", str(path)],
        env={**os.environ, "OPSKIT_STATE_DIR": str(state)},
        capture_output=True, text=True, timeout=60, cwd=REPO, preexec_fn=cap,
        check=False,
    )  # fmt: skip


def test_a_journal_that_cannot_grow_stops_the_run_in_one_line(tmp_path: Path) -> None:
    """Past the file-size limit, a step whose start cannot be journaled never runs: exit 3, one line."""
    path = write(tmp_path, THREE.format(dir=tmp_path))
    free = _run_limited(path, tmp_path / "measure", 10**9)
    assert free.returncode == 0, free.stderr
    journal = next((tmp_path / "measure" / "runs").iterdir()) / "journal.jsonl"
    raw = journal.read_bytes()
    b_starts = raw.index(b'"event": "step_started", "step": "b"')
    limit = raw.rindex(b"\n", 0, b_starts) + 1 + 20  # everything before b's start, and 20 bytes
    (tmp_path / "markers").unlink()

    limited = _run_limited(path, tmp_path / "state", limit)

    assert limited.returncode == ExitCode.BLOCKED, limited.stdout + limited.stderr
    assert lines(tmp_path / "markers") == ["a"]
    assert limited.stderr.count("\n") == 1
    assert limited.stderr.startswith("opskit: cannot write the journal ")
    assert "nothing more runs" in limited.stderr


def test_an_existing_state_dir_keeps_its_permissions(opskit: Invoke, tmp_path: Path) -> None:
    """A team's shared state directory (0750) is left as it is; the run directories opskit makes are 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o750)
    path = write(tmp_path, THREE.format(dir=tmp_path))

    rid = run_id(opskit("run", str(path), "--state-dir", str(shared), expect=ExitCode.OK).stdout)

    assert stat.S_IMODE(shared.stat().st_mode) == 0o750
    assert stat.S_IMODE((shared / "runs").stat().st_mode) == 0o700
    assert stat.S_IMODE((shared / "runs" / rid).stat().st_mode) == 0o700


def test_an_immutable_journal_is_one_line_and_nothing_runs(opskit: Invoke, tmp_path: Path) -> None:
    """A journal that cannot be written (chattr +i) makes note and resume exit 3 in one line, running nothing."""
    path = write(tmp_path, THREE.format(dir=tmp_path).replace("echo c", "exit 1; echo c"))
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)
    journal = tmp_path / "state" / "runs" / rid / "journal.jsonl"
    locked = subprocess.run(["chattr", "+i", str(journal)], capture_output=True, check=False)
    if locked.returncode != 0:
        pytest.skip(f"this filesystem has no immutable files: {locked.stderr!r}")
    try:
        note = opskit("note", rid, "hello", expect=ExitCode.BLOCKED)
        resumed = opskit("resume", rid, expect=ExitCode.BLOCKED)
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)

    for result in (note, resumed):
        assert result.stderr.startswith("opskit: cannot write the journal ")
        assert result.stderr.count("\n") == 1
    assert lines(tmp_path / "markers") == ["a", "b"]
