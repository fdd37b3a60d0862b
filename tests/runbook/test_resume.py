"""Crash and hand-over: kill -9 mid-step, resume in another process, no finished step runs twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit import actions
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write

Proc = Callable[..., subprocess.Popen[str]]

CRASHY = """
    name: crashy
    steps:
      - id: a
        run: echo a >> {dir}/markers
      - id: b
        run: echo $$ > {dir}/b.pid; echo b >> {dir}/markers; if [ ! -f {dir}/fast ]; then sleep 30; fi
        {extra}
      - id: c
        run: echo c >> {dir}/markers
"""


def _crash_in_b(opskit_proc: Proc, tmp_path: Path, extra: str) -> str:
    """Start a real run, kill -9 it while step b runs, and return its run id."""
    path = write(tmp_path, CRASHY.format(dir=tmp_path, extra=extra))
    proc = opskit_proc("run", str(path), "--operator", "alice")
    wait_for(lambda: lines(tmp_path / "markers") == ["a", "b"], what="step b started")
    proc.kill()  # SIGKILL: no chance to write anything
    out, _ = proc.communicate(timeout=10)
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.killpg(int((tmp_path / "b.pid").read_text()), signal.SIGKILL)  # the orphaned sleep
    (tmp_path / "fast").touch()
    return run_id(out)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("check", "markers", "decision"),
    [
        ("test -f {dir}/b.pid", ["a", "b", "c"], "done"),
        ("grep -q b-done {dir}/markers", ["a", "b", "b", "c"], "rerun"),
    ],
)
def test_kill_9_then_resume_lets_check_decide(
    opskit_proc: Proc, tmp_path: Path, check: str, markers: list[str], decision: str
) -> None:
    """After kill -9, a resume in another process runs `a` once, and the in-doubt step's check decides."""
    rid = _crash_in_b(opskit_proc, tmp_path, f'check: "{check.format(dir=tmp_path)}"')

    code, out, err = _finish(opskit_proc("resume", rid, "--operator", "bob"))

    assert code == 0, out + err
    assert lines(tmp_path / "markers") == markers
    evs = events(tmp_path / "state", rid)
    assert [e["decision"] for e in evs if e["event"] == "in_doubt"] == [decision]
    assert any(e["event"] == "resumed" and e["operator"] == "bob" for e in evs)


def test_in_doubt_step_without_check_is_never_rerun_silently(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """Without check or idempotent, resume refuses (exit 3) and names the two flags; nothing runs."""
    rid = _crash_in_b(opskit_proc, tmp_path, "")
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["state"] == "interrupted"
    assert [s["status"] for s in state["steps"]] == ["succeeded", "in_doubt", "pending"]

    result = opskit("resume", rid, expect=ExitCode.BLOCKED)

    assert "step b is in doubt" in result.stderr
    assert "--rerun-in-doubt or --skip-in-doubt" in result.stderr
    assert lines(tmp_path / "markers") == ["a", "b"]


@pytest.mark.parametrize(
    ("flag", "markers"),
    [("--skip-in-doubt", ["a", "b", "c"]), ("--rerun-in-doubt", ["a", "b", "b", "c"])],
)
def test_operator_decides_an_in_doubt_step(
    opskit_proc: Proc, tmp_path: Path, flag: str, markers: list[str]
) -> None:
    """The operator's flag decides the in-doubt step; the finished step `a` still runs only once."""
    rid = _crash_in_b(opskit_proc, tmp_path, "")

    code, out, err = _finish(opskit_proc("resume", rid, flag))

    assert code == 0, out + err
    assert lines(tmp_path / "markers") == markers


def test_idempotent_in_doubt_step_is_rerun(opskit_proc: Proc, tmp_path: Path) -> None:
    """An in-doubt step marked idempotent: true is simply run again."""
    rid = _crash_in_b(opskit_proc, tmp_path, "idempotent: true")

    code, out, err = _finish(opskit_proc("resume", rid))

    assert code == 0, out + err
    assert lines(tmp_path / "markers") == ["a", "b", "b", "c"]


def test_second_driver_is_refused_naming_the_holder(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """While a run is live, a resume is refused with the holder's name; SIGTERM then stops it with exit 130."""
    path = write(tmp_path, CRASHY.format(dir=tmp_path, extra=""))
    proc = opskit_proc("run", str(path), "--operator", "alice")
    wait_for(lambda: lines(tmp_path / "markers") == ["a", "b"], what="step b started")
    rid = next((tmp_path / "state" / "runs").iterdir()).name

    result = opskit("resume", rid, "--operator", "bob", "--rerun-in-doubt", expect=ExitCode.BLOCKED)

    assert f"run {rid} is being driven by alice on" in result.stderr
    assert f"(pid {proc.pid}," in result.stderr
    status = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert status["state"] == "running"
    proc.terminate()
    code, out, _ = _finish(proc)
    assert code == ExitCode.INTERRUPTED
    assert f"opskit resume {rid} --rerun-in-doubt" in out
    status = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert status["state"] == "interrupted"
    assert status["steps"][1]["status"] == "in_doubt"


def test_resume_refuses_a_changed_runbook(opskit: Invoke, tmp_path: Path) -> None:
    """A runbook edited after the run started is refused unless --accept-changes."""
    flag = tmp_path / "ok"
    path = write(
        tmp_path,
        f"""
        name: changing
        steps:
          - id: one
            run: echo one >> {tmp_path}/log
          - id: two
            run: test -f {flag}
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)
    path.write_text(
        path.read_text() + "  - id: three\n    run: echo three >> " + f"{tmp_path}/log\n"
    )
    flag.touch()

    refused = opskit("resume", rid, expect=ExitCode.BAD_INPUT)
    opskit("resume", rid, "--accept-changes", expect=ExitCode.OK)

    assert "changed since run" in refused.stderr
    assert "--accept-changes" in refused.stderr
    assert lines(tmp_path / "log") == ["one", "three"]
    resumed = [e for e in events(tmp_path / "state", rid) if e["event"] == "resumed"]
    assert resumed[-1]["accepted_changes"] is True


def test_captures_are_restored_on_resume(opskit: Invoke, tmp_path: Path) -> None:
    """A value captured before the failure is used after the resume, without re-running its step."""
    flag = tmp_path / "ok"
    path = write(
        tmp_path,
        f"""
        name: captures
        steps:
          - id: stamp
            run: date +%s%N | tee -a {tmp_path}/stamps
            capture: started_at
          - id: gate-file
            run: test -f {flag}
          - id: use
            run: echo "{{{{ started_at }}}}" > {tmp_path}/used
    """,
    )
    first = opskit("run", str(path), expect=ExitCode.NEGATIVE)
    flag.touch()

    result = opskit("resume", run_id(first.stdout), expect=ExitCode.OK)

    assert "(resumed)" in result.stdout
    assert len(lines(tmp_path / "stamps")) == 1
    assert lines(tmp_path / "used") == lines(tmp_path / "stamps")


def test_rollback_newest_first_stops_at_irreversible(opskit: Invoke, tmp_path: Path) -> None:
    """Rollback undoes succeeded steps newest first and stops at the point of no return (exit 3)."""
    log = tmp_path / "log"
    path = write(
        tmp_path,
        f"""
        name: rollback
        steps:
          - id: s1
            run: "true"
            undo: echo undo-s1 >> {log}
          - id: s2
            kind: irreversible
            run: "true"
          - id: s3
            run: "true"
            undo: echo undo-s3 >> {log}
          - id: probe
            kind: probe
            run: "true"
          - id: s4
            run: "true"
            undo: echo undo-s4 >> {log}
          - id: s5
            run: "exit 1"
            undo: echo undo-s5 >> {log}
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)

    result = opskit("rollback", rid, "--yes", expect=ExitCode.BLOCKED)

    assert lines(log) == ["undo-s4", "undo-s3"]
    assert (
        "STOPPED: stopped at irreversible step s2 (the point of no return) after undoing 2 step(s); "
        "still done: s2, s1"
    ) in result.stdout
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert [s["status"] for s in state["steps"]] == [
        "succeeded", "succeeded", "undone", "succeeded", "undone", "failed",
    ]  # fmt: skip
    assert state["rolled_back"] is True
    assert state["next_steps"] == [f"opskit run {path}    (a new run; this one was rolled back)"]


def test_rollback_of_a_reversible_run_undoes_everything(opskit: Invoke, tmp_path: Path) -> None:
    """Without an irreversible step every undo runs and rollback exits 0."""
    log = tmp_path / "log"
    path = write(
        tmp_path,
        f"""
        name: reversible
        steps:
          - id: one
            run: "true"
            undo: echo undo-one >> {log}
          - id: two
            run: "true"
            undo: echo undo-two >> {log}
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    opskit("rollback", rid, "--yes", expect=ExitCode.OK)

    assert lines(log) == ["undo-two", "undo-one"]


def test_a_crashing_undo_fails_the_rollback_in_one_line(
    opskit: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An action whose undo raises stops the rollback with exit 1 and its error, not a traceback."""
    monkeypatch.setitem(actions.REGISTRY, "test.faulty", "tests.runbook.faulty_action:FaultyUndo")
    log = tmp_path / "log"
    path = write(
        tmp_path,
        f"""
        name: faulty-undo
        steps:
          - id: one
            run: "true"
            undo: echo undo-one >> {log}
          - id: two
            uses: test.faulty
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    result = opskit("rollback", rid, "--yes", expect=ExitCode.NEGATIVE)

    assert "STOPPED: undo of two failed: test.faulty crashed: KeyError: 'records'" in result.stdout
    assert result.stderr == ""
    assert lines(log) == []
    finished = [e for e in events(tmp_path / "state", rid) if e["event"] == "undo_finished"]
    assert [(e["step"], e["status"]) for e in finished] == [("two", "failed")]


def test_torn_last_journal_line_is_tolerated(opskit: Invoke, tmp_path: Path) -> None:
    """A journal cut mid-line (power loss) still replays, with a warning naming the line."""
    path = write(tmp_path, "name: torn\nsteps:\n  - id: a\n    run: 'true'\n")
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
    journal = tmp_path / "state" / "runs" / rid / "journal.jsonl"
    with journal.open("a") as f:
        f.write('{"ts": "2026-01-01T00:00:00Z", "event": "no')

    result = opskit("status", rid, "--json", expect=ExitCode.OK)

    assert json.loads(result.stdout)["steps"][0]["status"] == "succeeded"
    assert "the last line is cut short" in result.stderr


def test_ctrl_c_stops_the_step_and_says_how_to_resume(opskit_proc: Proc, tmp_path: Path) -> None:
    """SIGINT during a step exits 130, journals the step as in doubt and prints the resume command."""
    path = write(tmp_path, CRASHY.format(dir=tmp_path, extra=""))
    proc = opskit_proc("run", str(path))
    wait_for(lambda: lines(tmp_path / "markers") == ["a", "b"], what="step b started")

    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)

    assert code == ExitCode.INTERRUPTED, out + err
    rid = run_id(out)
    assert (
        "next: step b was cut off and has no check:; see on its host whether it took effect" in out
    )
    assert f"  opskit resume {rid} --skip-in-doubt     (it took effect" in out
    assert f"  opskit resume {rid} --rerun-in-doubt    (it did not" in out
    assert "opskit rollback" not in out  # step a has no undo: nothing to roll back
    finished = [e for e in events(tmp_path / "state", rid) if e["event"] == "step_finished"]
    assert finished[-1]["step"] == "b"
    assert finished[-1]["status"] == "in_doubt"
    assert lines(tmp_path / "markers") == ["a", "b"]


def test_resume_dry_run_shows_finished_steps_as_done(opskit: Invoke, tmp_path: Path) -> None:
    """Planning a resume marks finished steps `done`, uses restored captures, and runs nothing."""
    flag = tmp_path / "ok"
    path = write(
        tmp_path,
        f"""
        name: replan
        steps:
          - id: stamp
            run: echo 1234
            capture: started_at
          - id: gate-file
            run: test -f {flag}
          - id: use
            run: echo {{{{ started_at }}}} > {tmp_path}/used
    """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.NEGATIVE).stdout)

    result = opskit("resume", rid, "--dry-run", "--json", expect=ExitCode.OK)

    steps = json.loads(result.stdout)["steps"]
    assert [s["status"] for s in steps] == ["done", "would_run", "would_run"]
    assert steps[2]["command"] == f"echo 1234 > {tmp_path}/used"
    assert not (tmp_path / "used").exists()


def test_resume_plan_is_honest_about_an_in_doubt_step(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """A cut-off step without check: is never planned as a plain would_run: the plan says resume refuses."""
    rid = _crash_in_b(opskit_proc, tmp_path, extra="")

    blocked = opskit("resume", rid, "--dry-run", "--json", expect=ExitCode.NEGATIVE)
    skipped = opskit("resume", rid, "--dry-run", "--skip-in-doubt", expect=ExitCode.OK)

    steps = {s["id"]: s for s in json.loads(blocked.stdout)["steps"]}
    assert steps["a"]["status"] == "done"
    assert steps["b"]["status"] == "unknown"
    assert steps["b"]["blocks"] is True
    assert "resume refuses until you pass --skip-in-doubt" in steps["b"]["reason"]
    assert "in doubt; counted as done (--skip-in-doubt)" in skipped.stdout
    assert f"next: opskit resume {rid} --skip-in-doubt" in skipped.stdout
    assert lines(tmp_path / "markers") == ["a", "b"]  # planning ran nothing


def test_resume_plan_runs_the_check_of_an_in_doubt_step(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """Planning a resume runs a cut-off step's check: (read-only) and shows it done when it passed."""
    rid = _crash_in_b(opskit_proc, tmp_path, extra=f"check: test -f {tmp_path}/b.pid")

    result = opskit("resume", rid, "--dry-run", "--json", expect=ExitCode.OK)

    b = json.loads(result.stdout)["steps"][1]
    assert (b["status"], b["reason"]) == (
        "done",
        "in doubt; check passed: it took effect, not running it again",
    )
    assert lines(tmp_path / "markers") == ["a", "b"]


def test_resume_skips_a_failure_the_runbook_accepted(opskit: Invoke, tmp_path: Path) -> None:
    """A continue_on_error failure finished; resuming after a later failure does not run it again."""
    log = tmp_path / "log"
    path = write(
        tmp_path,
        f"""
        name: tolerant
        steps:
          - id: optional
            run: echo optional >> {log}; exit 1
            continue_on_error: true
          - id: needs-flag
            run: test -f {tmp_path}/flag
    """,
    )
    first = opskit("run", str(path), expect=ExitCode.NEGATIVE)
    assert "<== FAILED optional" in first.stdout
    assert "(continue_on_error: going on)" in first.stdout
    (tmp_path / "flag").touch()

    opskit("resume", run_id(first.stdout), expect=ExitCode.OK)

    assert lines(log) == ["optional"]
