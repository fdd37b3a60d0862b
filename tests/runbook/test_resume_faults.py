"""Resume after faults: waits re-run by themselves, a still-running step blocks, a skipped capture needs a value."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write

Proc = Callable[..., subprocess.Popen[str]]


def _kill_9_when(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> str:
    wait_for(ready, what="the step started")
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    return run_id(out)


def test_a_cut_off_wait_and_probe_run_again_by_themselves(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """kill -9 during a probe: resume re-runs it without any flag, and status never offers --skip-in-doubt."""
    path = write(
        tmp_path,
        f"""
        name: waits
        steps:
          - id: change
            run: echo change >> {tmp_path}/markers
          - id: probe
            kind: probe
            run: echo probe >> {tmp_path}/markers; test -f {tmp_path}/fast || sleep 30
          - id: pause
            wait: 0.2s
          - id: after
            run: echo after >> {tmp_path}/markers
        """,
    )
    proc = opskit_proc("run", str(path))
    rid = _kill_9_when(proc, lambda: lines(tmp_path / "markers") == ["change", "probe"])
    (tmp_path / "fast").touch()

    status = opskit("status", rid, expect=ExitCode.OK).stdout
    assert "--skip-in-doubt" not in status
    assert "it changes nothing, so it runs again" in status
    opskit("resume", rid, expect=ExitCode.OK)

    assert lines(tmp_path / "markers") == ["change", "probe", "probe", "after"]
    decided = [e for e in events(tmp_path / "state", rid) if e["event"] == "in_doubt"]
    assert [(e["step"], e["decision"]) for e in decided] == [("probe", "rerun")]


def test_resume_refuses_while_the_cut_off_step_still_runs(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """If a step's processes outlived opskit and its supervisor, resume refuses naming host and pid."""
    path = write(
        tmp_path,
        f"""
        name: survivor
        steps:
          - id: long
            run: echo $$ > {tmp_path}/pid; test -f {tmp_path}/fast || sleep 60
            idempotent: true
        """,
    )
    proc = opskit_proc("run", str(path))
    wait_for(lambda: (tmp_path / "pid").exists() and bool(lines(tmp_path / "pid")), what="started")
    state = tmp_path / "state"
    rid = next(p.name for p in (state / "runs").iterdir())
    supervisor = next(e["pid"] for e in events(state, rid) if e["event"] == "step_process")
    os.kill(supervisor, signal.SIGKILL)  # both die at once: nothing is left to end the step
    proc.kill()
    proc.communicate(timeout=10)
    shell = int(lines(tmp_path / "pid")[0])
    try:
        result = opskit("resume", rid, expect=ExitCode.BLOCKED)

        assert "step long is still running" in result.stderr
        assert f"pid {shell}" in result.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(supervisor, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{shell}").exists(), what="the survivor ended")
    (tmp_path / "fast").touch()
    opskit("resume", rid, expect=ExitCode.OK)


def test_skipping_an_in_doubt_capture_needs_its_value(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """--skip-in-doubt on a capture: step refuses (exit 2) until --set gives the value later steps use."""
    path = write(
        tmp_path,
        f"""
        name: capture
        steps:
          - id: ask
            run: echo asked >> {tmp_path}/markers; sleep 30; echo real
            capture: answer
          - id: use
            run: echo "got {{{{ answer }}}}" >> {tmp_path}/markers
        """,
    )
    proc = opskit_proc("run", str(path))
    rid = _kill_9_when(proc, lambda: lines(tmp_path / "markers") == ["asked"])

    refused = opskit("resume", rid, "--skip-in-doubt", expect=ExitCode.BAD_INPUT)
    assert "--set answer=VALUE" in refused.stderr
    opskit("resume", rid, "--skip-in-doubt", "--set", "answer=given", expect=ExitCode.OK)

    assert lines(tmp_path / "markers") == ["asked", "got given"]
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["steps"][0]["captured"] == {"answer": "given"}


def test_a_second_run_of_the_same_runbook_is_refused(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """While a run is live, another run of its runbook is refused naming it; after kill -9 one may start."""
    path = write(
        tmp_path,
        f"""
        name: once
        steps:
          - id: slow
            run: echo slow >> {tmp_path}/markers; test -f {tmp_path}/fast || sleep 30
        """,
    )
    proc = opskit_proc("run", str(path), "--operator", "alice")
    wait_for(lambda: lines(tmp_path / "markers") == ["slow"], what="the first run started")
    live = next((tmp_path / "state" / "runs").iterdir()).name

    refused = opskit("run", str(path), "--operator", "bob", expect=ExitCode.BLOCKED)
    assert f"is already being run: run {live} by alice on" in refused.stderr
    assert "--allow-concurrent" in refused.stderr
    assert lines(tmp_path / "markers") == ["slow"]

    proc.kill()  # the stale lock of a dead run is no obstacle
    proc.communicate(timeout=10)
    (tmp_path / "fast").touch()
    opskit("run", str(path), "--operator", "bob", expect=ExitCode.OK)
    assert lines(tmp_path / "markers") == ["slow", "slow"]
