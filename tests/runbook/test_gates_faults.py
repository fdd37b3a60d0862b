"""Gates under faults: typos ask again, Ctrl-C is an interruption, approvals must name real steps."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write

GATED = """
    name: gated
    steps:
      - id: prepare
        run: echo prepared >> {dir}/log
      - id: stop-old
        gate: {{prompt: "Stop dispatch now?", level: typed}}
        run: echo stopped >> {dir}/log
"""

MANUAL = """
    name: manual
    steps:
      - id: call-client
        owner: customer-sysadmin
        manual: "Ask the customer's sysadmin to switch DNS"
      - id: after
        run: echo after >> {dir}/log
"""


def _terminal_run(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int, int]:
    main_fd, tty_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "opskit", *args],
        stdin=tty_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OPSKIT_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    return proc, main_fd, tty_fd


def test_a_mistyped_gate_answer_asks_again(tmp_path: Path) -> None:
    """Two typos at a typed gate ask again; the step id on the third try passes the gate."""
    path = write(tmp_path, GATED.format(dir=tmp_path))
    proc, main_fd, tty_fd = _terminal_run(tmp_path, "run", str(path))
    try:
        os.write(main_fd, b"y\nstop-ol\nstop-old\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(main_fd)
        os.close(tty_fd)

    assert proc.returncode == ExitCode.OK, out + err
    assert err.count("that is not the step id: type stop-old to go on") == 2
    assert lines(tmp_path / "log") == ["prepared", "stopped"]


def test_ctrl_c_at_a_gate_prompt_is_an_interruption(opskit: Invoke, tmp_path: Path) -> None:
    """Ctrl-C while a gate waits for an answer exits 130 and the run resumes at that gate."""
    path = write(tmp_path, GATED.format(dir=tmp_path))
    proc, main_fd, tty_fd = _terminal_run(tmp_path, "run", str(path))
    try:
        wait_for(lambda: lines(tmp_path / "log") == ["prepared"], what="the gate is reached")
        time.sleep(0.5)  # the prompt is up
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(main_fd)
        os.close(tty_fd)

    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    rid = run_id(out)
    state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
    assert state["state"] == "interrupted"
    assert not [e for e in events(tmp_path / "state", rid) if e["event"] == "gate"]
    opskit("resume", rid, "--approve", "stop-old", expect=ExitCode.OK)
    assert lines(tmp_path / "log") == ["prepared", "stopped"]


def test_approving_a_step_that_does_not_exist_is_bad_input(opskit: Invoke, tmp_path: Path) -> None:
    """--approve with a misspelt step id exits 2 before anything runs, naming the gated steps."""
    path = write(tmp_path, GATED.format(dir=tmp_path))

    result = opskit("run", str(path), "--approve", "stop-odl", expect=ExitCode.BAD_INPUT)

    assert "--approve stop-odl: no such step" in result.stderr
    assert "stop-old" in result.stderr
    assert lines(tmp_path / "log") == []


def test_yes_never_confirms_someone_elses_manual_step(opskit: Invoke, tmp_path: Path) -> None:
    """--yes does not confirm a manual step owned by another person; the owner's own --yes does."""
    path = write(tmp_path, MANUAL.format(dir=tmp_path))

    refused = opskit("run", str(path), "--yes", "--operator", "alice", expect=ExitCode.BLOCKED)
    opskit("run", str(path), "--yes", "--operator", "customer-sysadmin", expect=ExitCode.OK)

    assert "customer-sysadmin must do this, so --yes does not confirm it" in refused.stdout
    assert lines(tmp_path / "log") == ["after"]
