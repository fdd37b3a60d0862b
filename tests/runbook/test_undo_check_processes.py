"""An undo or a check: that outlived opskit blocks the next rollback or resume, like a forward step (#10)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, run_id, wait_for, write
from tests.servers.relay import relay_to
from tests.servers.sleepers import alive, kill_all, sleep_marker
from tests.servers.sshd import Sshd

Proc = Callable[..., subprocess.Popen[str]]


def _kill_9_with_its_supervisor(proc: subprocess.Popen[str], pid_file: Path) -> tuple[int, int]:
    """kill -9 of opskit and of the supervisor of the command that wrote `pid_file` (its shell's
    session leader), both at once: nothing is left to end the command. Returns (shell, supervisor)."""
    wait_for(lambda: bool(lines(pid_file)), what="the command started")
    shell = int(lines(pid_file)[-1])
    supervisor = os.getsid(shell)
    os.kill(supervisor, signal.SIGKILL)
    proc.kill()
    proc.communicate(timeout=10)
    return shell, supervisor


def _end(shell: int, supervisor: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(supervisor, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{shell}").exists(), what="the survivor ended")


def test_rollback_refuses_while_a_cut_off_undo_still_runs(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """kill -9 mid-undo, the undo living on: the next rollback exits 3 naming host and pid, never runs it twice."""
    path = write(
        tmp_path,
        f"""
        name: slow-undo
        steps:
          - id: change
            run: touch {tmp_path}/changed
            undo: echo $$ >> {tmp_path}/undo-pids; test -f {tmp_path}/fast || sleep 60; rm {tmp_path}/changed
        """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
    proc = opskit_proc("rollback", rid, "--yes")
    shell, supervisor = _kill_9_with_its_supervisor(proc, tmp_path / "undo-pids")
    try:
        refused = opskit("rollback", rid, "--yes", "--rerun-in-doubt", expect=ExitCode.BLOCKED)

        assert (
            f"the undo of step change is still running ({socket.gethostname()}: pid {shell}"
            in refused.stderr
        )
        assert "wait for it to end or stop it, then roll back" in refused.stderr
        assert lines(tmp_path / "undo-pids") == [str(shell)]  # not started a second time
        journaled = [e for e in events(tmp_path / "state", rid) if e["event"] == "step_process"]
        assert [(e["step"], e.get("kind")) for e in journaled] == [
            ("change", None),
            ("change", "undo"),
        ]
        assert journaled[-1]["pid"] == supervisor
    finally:
        _end(shell, supervisor)
    (tmp_path / "fast").touch()
    opskit("rollback", rid, "--yes", "--rerun-in-doubt", expect=ExitCode.OK)
    assert not (tmp_path / "changed").exists()


def test_resume_refuses_while_a_cut_off_check_still_runs(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """kill -9 while resume runs an in-doubt step's check:, the check living on: resume exits 3 naming it."""
    path = write(
        tmp_path,
        f"""
        name: slow-check
        steps:
          - id: change
            run: echo $$ > {tmp_path}/run-pid; test -f {tmp_path}/fast || sleep 60
            check: echo $$ >> {tmp_path}/check-pids; test -f {tmp_path}/fast || sleep 60; true
        """,
    )
    proc = opskit_proc("run", str(path))
    first = _kill_9_with_its_supervisor(proc, tmp_path / "run-pid")
    _end(*first)
    rid = next(p.name for p in (tmp_path / "state" / "runs").iterdir())
    proc = opskit_proc("resume", rid)
    shell, supervisor = _kill_9_with_its_supervisor(proc, tmp_path / "check-pids")
    try:
        refused = opskit("resume", rid, expect=ExitCode.BLOCKED)

        assert (
            f"the check of step change is still running ({socket.gethostname()}: pid {shell}"
            in refused.stderr
        )
        assert lines(tmp_path / "check-pids") == [str(shell)]
        kinds = [
            e.get("kind") for e in events(tmp_path / "state", rid) if e["event"] == "step_process"
        ]
        assert kinds == [None, "check"]
    finally:
        _end(shell, supervisor)
    (tmp_path / "fast").touch()
    opskit("resume", rid, expect=ExitCode.OK)


@pytest.mark.sshd
def test_rollback_refuses_while_a_cut_off_undo_runs_on_behind_a_partition(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path, sshd: Sshd
) -> None:
    """The host never saw opskit die: its undo runs on, and rollback names host and pid until it ends."""
    marker = sleep_marker(730000)
    with relay_to(sshd.host, sshd.port) as relay:
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_key_public}\n")
        path = write(
            tmp_path,
            f"""
            name: remote-undo
            hosts:
              target: {{address: 127.0.0.1, port: {relay.port}, user: {sshd.user},
                        key_file: "{sshd.client_key}", known_hosts: "{known}"}}
            steps:
              - id: pay
                on: target
                run: echo paid >> {tmp_path}/log
                undo: test -f {tmp_path}/fast || sleep {marker}; echo refund >> {tmp_path}/log
            """,
        )
        rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
        proc = opskit_proc("rollback", rid, "--yes")
        try:

            def undo_process() -> list[dict[str, object]]:
                evs = events(tmp_path / "state", rid)
                return [e for e in evs if e["event"] == "step_process" and e.get("kind") == "undo"]

            wait_for(lambda: bool(alive(marker)) and bool(undo_process()), what="remote undo")
            relay.freeze()  # the host never hears that opskit died: its undo runs on
            proc.kill()
            proc.wait(timeout=10)
            (ev,) = undo_process()
            assert ev["remote"] is True
            assert ev["start_ticks"]

            refused = opskit("rollback", rid, "--yes", "--rerun-in-doubt", expect=ExitCode.BLOCKED)

            assert "the undo of step pay is still running (target (127.0.0.1:" in refused.stderr
            assert f"pid {ev['pid']} since {ev['ts']}" in refused.stderr
            kill_all(marker)  # the first copy ends by itself: it refunds, once
            wait_for(lambda: lines(tmp_path / "log") == ["paid", "refund"], what="the refund")
            wait_for(lambda: not Path(f"/proc/{ev['pid']}").exists(), what="the undo ended")
            opskit("rollback", rid, "--yes", "--skip-in-doubt", expect=ExitCode.OK)
        finally:
            kill_all(marker)
    assert lines(tmp_path / "log") == ["paid", "refund"]


def test_resume_refuses_while_an_actions_own_command_still_runs(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path
) -> None:
    """kill -9 while proxy.start's stop_old runs, stop_old living on: resume exits 3 naming it, never a second stop."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    path = write(
        tmp_path,
        f"""
        name: slow-stop
        steps:
          - id: bridge
            uses: proxy.start
            with:
              listen: "127.0.0.1:{port.getsockname()[1]}"
              to: "127.0.0.1:9"
              stats_file: "{tmp_path}/bridge.json"
              bind_timeout: 60s
              stop_old: "echo $$ >> {tmp_path}/stop-pids; test -f {tmp_path}/fast || sleep 60"
        """,
    )
    port.close()
    proc = opskit_proc("run", str(path))
    shell, supervisor = _kill_9_with_its_supervisor(proc, tmp_path / "stop-pids")
    try:
        rid = next(p.name for p in (tmp_path / "state" / "runs").iterdir())
        refused = opskit("resume", rid, "--rerun-in-doubt", expect=ExitCode.BLOCKED)

        assert (
            f"step bridge is still running ({socket.gethostname()}: pid {shell}" in refused.stderr
        )
        assert lines(tmp_path / "stop-pids") == [str(shell)]  # not stopped a second time
        journaled = [e for e in events(tmp_path / "state", rid) if e["event"] == "step_process"]
        assert [e["pid"] for e in journaled] == [supervisor]
    finally:
        _end(shell, supervisor)
