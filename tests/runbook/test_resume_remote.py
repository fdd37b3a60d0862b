"""Resume refuses while a cut-off SSH step still runs on its host, and tells a recycled pid from the step."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opskit.errors import ExitCode
from opskit.runbook.resume import still_running
from opskit.transport.local import LocalTransport
from tests.conftest import Invoke
from tests.runbook.helpers import events, lines, wait_for, write
from tests.servers.relay import Relay, relay_to
from tests.servers.sleepers import alive, kill_all, sleep_marker
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.sshd

Proc = Callable[..., subprocess.Popen[str]]


def _runbook(tmp_path: Path, sshd: Sshd, port: int, marker: str) -> Path:
    """One SSH step that pays once: its check sees the payment, so a resume never pays twice."""
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {sshd.host_key_public}\n")
    return write(
        tmp_path,
        f"""
        name: remote-survivor
        hosts:
          target: {{address: 127.0.0.1, port: {port}, user: {sshd.user}, key_file: "{sshd.client_key}",
                    known_hosts: "{known}"}}
        steps:
          - id: pay
            on: target
            check: test -s {tmp_path}/paid
            run: test -f {tmp_path}/fast || sleep {marker}; echo paid >> {tmp_path}/paid
        """,
    )


def _process_event(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    runs = list((tmp_path / "state" / "runs").iterdir())
    if not runs:
        return "", {}
    found = [e for e in events(tmp_path / "state", runs[0].name) if e["event"] == "step_process"]
    return runs[0].name, (found[-1] if found else {})


def _cut_off(
    opskit_proc: Proc, tmp_path: Path, path: Path, marker: str, relay: Relay | None = None
) -> tuple[str, dict[str, Any]]:
    """Start the run, wait until the remote step sleeps and is journaled, then kill -9 opskit."""
    proc = opskit_proc("run", str(path))
    wait_for(lambda: bool(alive(marker)) and bool(_process_event(tmp_path)[1]), what="remote step")
    if relay is not None:
        relay.freeze()  # the host never hears that opskit died: its step runs on
    proc.kill()
    proc.wait(timeout=10)
    return _process_event(tmp_path)


def _pgrp(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[2])


def _start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _rewrite_process_event(state: Path, rid: str, **fields: Any) -> None:
    journal = state / "runs" / rid / "journal.jsonl"
    out = []
    for line in journal.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "step_process":
            ev.update(fields)
        out.append(json.dumps(ev))
    journal.write_text("\n".join(out) + "\n")


@pytest.fixture(params=["1", "0"], ids=["agent", "session-per-command"])
def ssh_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Commands through the host's long-lived agent, or one SSH session each (OPSKIT_SSH_AGENT=0)."""
    monkeypatch.setenv(
        "OPSKIT_SSH_AGENT", request.param
    )  # the run (a child process) and the resumes
    return str(request.param)


@pytest.mark.usefixtures("ssh_mode")
def test_resume_refuses_while_the_remote_step_runs_then_runs_it_once(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path, sshd: Sshd
) -> None:
    """opskit's side of the network dies with it: resume names host and pid until the step ends, then settles it once."""
    marker = sleep_marker(710000)
    with relay_to(sshd.host, sshd.port) as relay:
        path = _runbook(tmp_path, sshd, relay.port, marker)
        try:
            rid, ev = _cut_off(opskit_proc, tmp_path, path, marker, relay)
            (sleeper,) = alive(marker)
            assert ev["remote"] is True
            assert (ev["host"], ev["address"], ev["port"]) == ("target", "127.0.0.1", relay.port)
            assert ev["pid"] == _pgrp(sleeper)
            assert ev["start_ticks"] == _start_ticks(ev["pid"])

            refused = opskit("resume", rid, expect=ExitCode.BLOCKED)

            assert "step pay is still running (target (127.0.0.1:" in refused.stderr
            assert f"pid {ev['pid']} since {ev['ts']}" in refused.stderr
            assert alive(marker) == [sleeper]
            _cannot_tell(opskit, relay, rid)

            kill_all(marker)  # the first copy ends by itself: it pays, once
            wait_for(lambda: lines(tmp_path / "paid") == ["paid"], what="the first copy paid")
            wait_for(lambda: not _runs(ev["pid"]), what="the first copy ended")
            opskit("resume", rid, expect=ExitCode.OK)
        finally:
            kill_all(marker)

    assert lines(tmp_path / "paid") == ["paid"]
    decided = [e for e in events(tmp_path / "state", rid) if e["event"] == "in_doubt"]
    assert [(e["step"], e["decision"]) for e in decided] == [("pay", "done")]


def _cannot_tell(opskit: Invoke, relay: Relay, rid: str) -> None:
    """A host that cannot be asked blocks the resume (exit 3) with the fix, never a blind resume."""
    relay.refuse()
    try:
        blocked = opskit("resume", rid, expect=ExitCode.BLOCKED)
    finally:
        relay.refuse(False)
    assert "cannot tell whether step pay still runs on target" in blocked.stderr
    assert "resume once target answers over SSH" in blocked.stderr


def _runs(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_recycled_remote_pid_is_not_the_step(
    opskit: Invoke, opskit_proc: Proc, tmp_path: Path, sshd: Sshd
) -> None:
    """A live process that only shares the journaled pid (another start time) does not block resume."""
    marker = sleep_marker(720000)
    path = _runbook(tmp_path, sshd, sshd.port, marker)
    (tmp_path / "known_hosts").write_text(sshd.known_hosts.read_text())
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        rid, _ = _cut_off(opskit_proc, tmp_path, path, marker)  # the agent ends the step itself
        state = tmp_path / "state"
        ticks = _start_ticks(stranger.pid)
        _rewrite_process_event(state, rid, pid=stranger.pid, start_ticks=ticks)
        assert f"pid {stranger.pid}" in opskit("resume", rid, expect=ExitCode.BLOCKED).stderr

        _rewrite_process_event(state, rid, start_ticks=str(int(ticks) - 1))
        (tmp_path / "fast").touch()
        opskit("resume", rid, expect=ExitCode.OK)
    finally:
        stranger.kill()
        stranger.wait(timeout=5)
        kill_all(marker)

    assert lines(tmp_path / "paid") == ["paid"]


def test_only_hosts_that_never_finished_are_asked() -> None:
    """A fleet step's resume asks only the hosts whose last process never finished, one question each."""
    asked: list[str] = []

    def transport(host: str) -> LocalTransport:
        asked.append(host)
        return LocalTransport()  # the probe runs for real, on this machine standing in for the host

    def process(host: str, ticks: str) -> dict[str, Any]:
        return {"event": "step_process", "step": "pay", "host": host, "pid": os.getpid(),
                "remote": True, "start_ticks": ticks, "ts": "T"}  # fmt: skip

    mine = _start_ticks(os.getpid())
    evs = [
        process("a", mine),
        {"event": "host_finished", "step": "pay", "host": "a", "status": "succeeded"},
        process("b", str(int(mine) + 1)),
        process("b", str(int(mine) + 2)),
        process("c", mine),
        {"event": "host_finished", "step": "other", "host": "c", "status": "succeeded"},
    ]

    where = still_running(evs, "pay", transport)

    assert asked == ["b", "c"]
    assert where == f"c: pid {os.getpid()} since T"
    assert still_running(evs, "pay", transport, only={"a", "b"}) is None  # --limit leaves c alone
