"""The state directory is the same from any directory, so a colleague finds the run (#11)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.statedir import default_state_dir
from tests.conftest import Invoke
from tests.runbook.helpers import run_id, write


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME with no OPSKIT_STATE_DIR nor XDG_STATE_HOME set."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return tmp_path / "home"


def test_a_run_is_found_from_another_directory(
    opskit: Invoke, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started in one directory, `opskit status` from another lists it: it lives in ~/.local/state/opskit."""
    monkeypatch.delenv("OPSKIT_STATE_DIR")
    path = write(tmp_path, "name: here\nsteps:\n  - {id: hello, kind: probe, run: 'true'}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
    monkeypatch.chdir(tmp_path / "b")

    status = opskit("status", rid, expect=ExitCode.OK)

    assert "hello" in status.stdout
    state = home / ".local" / "state" / "opskit"
    assert (state / "runs" / rid / "journal.jsonl").is_file()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not (tmp_path / "a" / ".opskit").exists()


def test_the_environment_still_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OPSKIT_STATE_DIR beats XDG_STATE_HOME, which beats ~/.local/state/opskit."""
    monkeypatch.delenv("OPSKIT_STATE_DIR", raising=False)
    assert default_state_dir() == home / ".local" / "state" / "opskit"
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_state_dir() == Path("/srv/state/opskit")
    monkeypatch.setenv("OPSKIT_STATE_DIR", "/srv/shared-night")
    assert default_state_dir() == Path("/srv/shared-night")
