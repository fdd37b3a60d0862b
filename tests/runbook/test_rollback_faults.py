"""Rollback is as crash-safe as the forward run: failed and cut-off undos, steps without undo, a preview."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import lines, run_id, wait_for, write

Proc = Callable[..., subprocess.Popen[str]]


def _statuses(opskit: Invoke, rid: str) -> dict[str, str]:
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    return {s["id"]: s["status"] for s in state["steps"]}


def test_a_failed_undo_is_tried_again_and_resume_never_redoes_it(
    opskit: Invoke, tmp_path: Path
) -> None:
    """The next rollback lists and retries a failed undo; resume refuses to re-apply a rolled-back step."""
    path = write(
        tmp_path,
        f"""
        name: retry-undo
        steps:
          - id: change
            run: echo change >> {tmp_path}/log
            undo: test -f {tmp_path}/fixed && echo undo >> {tmp_path}/log
          - id: fail
            run: exit 1
        """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)

    first = opskit("rollback", rid, "--yes", expect=ExitCode.NEGATIVE)
    assert "tries it again" in first.stdout
    assert _statuses(opskit, rid)["change"] == "undo_failed"
    refused = opskit("resume", rid, expect=ExitCode.BLOCKED)
    assert f"run {rid} was rolled back (change); resuming would redo them" in refused.stderr
    (tmp_path / "fixed").touch()
    second = opskit("rollback", rid, "--yes", expect=ExitCode.OK)

    assert "change: its undo failed last time; trying it again" in second.stderr
    assert lines(tmp_path / "log") == ["change", "undo"]
    assert _statuses(opskit, rid)["change"] == "undone"


def _slow_undo_run(opskit: Invoke, tmp_path: Path, check: str) -> tuple[Path, str]:
    path = write(
        tmp_path,
        f"""
        name: slow-undo
        steps:
          - id: change
            run: touch {tmp_path}/changed
            {check}
            undo: echo undo >> {tmp_path}/log; test -f {tmp_path}/fast || sleep 30; rm {tmp_path}/changed
        """,
    )
    return path, run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)


def test_sigterm_during_rollback_leaves_the_undo_in_doubt_for_its_check(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """SIGTERM mid-undo exits 130 with the undo in doubt; the next rollback asks check: and runs it again."""
    _, rid = _slow_undo_run(opskit, tmp_path, f"check: test -f {tmp_path}/changed")
    proc = opskit_proc("rollback", rid, "--yes")
    wait_for(lambda: lines(tmp_path / "log") == ["undo"], what="the undo started")

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    assert _statuses(opskit, rid)["change"] == "undo_in_doubt"
    (tmp_path / "fast").touch()
    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert lines(tmp_path / "log") == ["undo", "undo"]  # the change was still there: undone again
    assert not (tmp_path / "changed").exists()


def test_an_undo_cut_off_by_kill_9_needs_a_decision_without_check(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """After kill -9 mid-undo, status says undo in doubt; rollback without check: refuses until a flag."""
    _, rid = _slow_undo_run(opskit, tmp_path, "")
    proc = opskit_proc("rollback", rid, "--yes")
    wait_for(lambda: lines(tmp_path / "log") == ["undo"], what="the undo started")
    proc.kill()
    proc.communicate(timeout=10)

    assert _statuses(opskit, rid)["change"] == "undo_in_doubt"
    status = opskit("status", rid, expect=ExitCode.OK).stdout
    assert "the undo of change was cut off and it has no check:" in status
    assert f"opskit rollback {rid} --skip-in-doubt     (it did)" in status
    refused = opskit("rollback", rid, "--yes", expect=ExitCode.BLOCKED)
    assert "--skip-in-doubt (it did) or --rerun-in-doubt (it did not)" in refused.stderr
    opskit("rollback", rid, "--yes", "--skip-in-doubt", expect=ExitCode.OK)
    assert lines(tmp_path / "log") == ["undo"]
    assert _statuses(opskit, rid)["change"] == "undone"


def test_a_changing_step_without_undo_keeps_rollback_from_saying_done(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A step that changed something and has no undo: makes rollback exit 3 naming it."""
    path = write(
        tmp_path,
        f"""
        name: no-undo
        steps:
          - id: reversible
            run: echo a >> {tmp_path}/log
            undo: echo undo-a >> {tmp_path}/log
          - id: migrate
            run: echo migrate >> {tmp_path}/log
          - id: look
            kind: probe
            run: "true"
        """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    result = opskit("rollback", rid, "--yes", expect=ExitCode.BLOCKED)

    assert "still in effect (no undo:): migrate" in result.stdout
    assert "look" not in result.stdout.split("still in effect")[1]
    assert lines(tmp_path / "log") == ["a", "migrate", "undo-a"]


def test_rollback_previews_and_asks_before_it_starts(opskit: Invoke, tmp_path: Path) -> None:
    """--dry-run lists each undo with its values and runs nothing; without a terminal or --yes nothing starts."""
    path = write(
        tmp_path,
        f"""
        name: preview
        vars: {{old: 203.0.113.10}}
        steps:
          - id: point-new
            run: echo new >> {tmp_path}/log
            undo: echo "back to {{{{ old }}}}" >> {tmp_path}/log
        """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    preview = opskit("rollback", rid, "--dry-run", expect=ExitCode.OK)
    refused = opskit("rollback", rid, expect=ExitCode.BLOCKED)

    assert f'undo point-new: echo "back to 203.0.113.10" >> {tmp_path}/log' in preview.stdout
    assert "plan: would undo 1 step(s)" in preview.stdout
    assert "not started: no terminal to ask at; pass --yes" in refused.stderr
    assert lines(tmp_path / "log") == ["new"]
    assert _statuses(opskit, rid)["point-new"] == "succeeded"


def test_the_preview_of_a_dns_undo_names_the_record_and_the_values_put_back() -> None:
    """A dns.update undo is previewed as the record, the old values and the old TTL it puts back."""
    from opskit.runbook.rollback import _restores  # noqa: PLC0415 - the pure helper behind --dry-run

    data = {"name": "dispatch.example.net", "type": "A", "zone": "example.net",
            "before": {"values": ["203.0.113.10"], "ttl": 300}}  # fmt: skip

    assert _restores(data) == "dispatch.example.net A back to 203.0.113.10 TTL 300"
    assert _restores({"name": "new.example.net", "type": "A", "before": None}) == (
        "new.example.net A removed (it did not exist before)"
    )
