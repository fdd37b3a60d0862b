"""A step never outlives the opskit that started it: kill -9, SIGHUP, timeout, whatever the command does."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.transport.local import LocalTransport
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write
from tests.servers.sleepers import alive, gone_within, kill_all, sleep_marker
from tests.servers.sshd import Sshd

Proc = Callable[..., subprocess.Popen[str]]


ESCAPES = {
    "exec": "exec sleep {m}",
    "nohup": "nohup sleep {m} >/dev/null 2>&1 & wait",
    "own-group": "set -m; sleep {m} & wait",
    "setsid": "setsid sleep {m} & wait",
    "orphan": "( sleep {m} & ) ; sleep {m}",
}


def _runbook(tmp_path: Path, command: str) -> Path:
    return write(
        tmp_path,
        f"""
        name: lifetime
        steps:
          - id: long
            run: echo started >> {tmp_path}/markers; {command}
        """,
    )


@pytest.mark.parametrize("how", sorted(ESCAPES))
def test_kill_9_of_opskit_ends_the_step_whatever_it_does(
    opskit_proc: Proc, tmp_path: Path, how: str
) -> None:
    """After kill -9 of opskit, the step's processes end within seconds (exec, nohup, setsid, groups)."""
    marker = sleep_marker(700000)
    proc = opskit_proc("run", str(_runbook(tmp_path, ESCAPES[how].format(m=marker))))
    try:
        wait_for(lambda: lines(tmp_path / "markers") == ["started"], what="step started")
        wait_for(lambda: bool(alive(marker)), what="sleep started")

        proc.kill()
        proc.wait(timeout=10)

        assert gone_within(marker, 5.0), f"still running: {alive(marker)}"
    finally:
        kill_all(marker)


def test_sighup_interrupts_the_run_resumably(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """A dropped terminal (SIGHUP) is an interruption: exit 130, the step is stopped, status says resume."""
    marker = sleep_marker(700000)
    proc = opskit_proc("run", str(_runbook(tmp_path, f"sleep {marker}")))
    try:
        wait_for(lambda: bool(alive(marker)), what="sleep started")

        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=20)

        assert proc.returncode == ExitCode.INTERRUPTED, out + err
        assert gone_within(marker, 5.0)
        rid = run_id(out)
        state = json.loads(opskit("status", rid, "--json", expect=ExitCode.OK).stdout)
        assert state["state"] == "interrupted"
        assert state["resume_hint"] == f"opskit resume {rid}"
    finally:
        kill_all(marker)


def test_timeout_stops_a_command_that_used_exec_and_setsid() -> None:
    """A timeout stops the step even when it exec'd into another program that left its session."""
    marker = sleep_marker(700000)
    started = time.monotonic()
    try:
        result = LocalTransport().run(f"setsid sleep {marker} & exec sleep {marker}", timeout_s=0.5)

        assert result.timed_out
        assert time.monotonic() - started < 5
        assert gone_within(marker, 3.0)
    finally:
        kill_all(marker)


def test_journal_names_where_the_step_runs(opskit: Invoke, tmp_path: Path) -> None:
    """step_started records host, opskit pid and time; the step's own process is journaled too."""
    path = write(tmp_path, "name: where\nsteps:\n  - id: a\n    run: 'true'\n")
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    evs = events(tmp_path / "state", rid)
    started = next(e for e in evs if e["event"] == "step_started")
    process = next(e for e in evs if e["event"] == "step_process")
    assert started["host"]
    assert isinstance(started["pid"], int)
    assert process["step"] == "a"
    assert process["host"] == started["host"]
    assert isinstance(process["pid"], int)


@pytest.mark.sshd
def test_kill_9_of_opskit_ends_a_remote_step_and_resume_runs_it_once(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path, sshd: Sshd
) -> None:
    """kill -9 during an SSH step ends it on the host; the resumed run completes the step exactly once."""
    marker = sleep_marker(700000)
    path = write(
        tmp_path,
        f"""
        name: remote-lifetime
        hosts:
          target: {{address: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, key_file: "{sshd.client_key}",
                    known_hosts: "{sshd.known_hosts}"}}
        steps:
          - id: pay
            on: target
            idempotent: true
            run: test -f {tmp_path}/fast || exec sleep {marker}; echo paid >> {tmp_path}/paid
        """,
    )
    proc = opskit_proc("run", str(path))
    try:
        wait_for(lambda: bool(alive(marker)), what="the remote sleep started")

        proc.kill()
        proc.wait(timeout=10)

        assert gone_within(marker, 6.0), f"still running on the host: {alive(marker)}"
        (tmp_path / "fast").touch()
        rid = next((tmp_path / "state" / "runs").iterdir()).name
        opskit("resume", rid, expect=ExitCode.OK)
        assert lines(tmp_path / "paid") == ["paid"]
    finally:
        kill_all(marker)
