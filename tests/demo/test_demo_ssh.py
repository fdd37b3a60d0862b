"""`opskit demo --ssh`: the same rehearsal with the old and new host steps over real SSH, then nothing left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opskit.demo import stage
from opskit.demo.run import DemoOptions, run_demo
from tests.demo.test_demo_end_to_end import _children, _listening_on, _pid_alive
from tests.servers.common import require_binary


@pytest.mark.sshd
@pytest.mark.slow
def test_the_rehearsal_over_ssh_moves_every_phone_and_stops_sshd(tmp_path: Path) -> None:
    """With --ssh the host steps and the bridge run on old/new over SSH, and sshd and the bridge stop."""
    require_binary("sshd", "openssh-server")
    require_binary("ssh-keygen", "openssh-client")
    children_before = set(_children(os.getpid()))
    lines: list[str] = []

    result = run_demo(DemoOptions(state_dir=tmp_path / "state", clients=6, ssh=True), lines.append)

    transcript = "\n".join(lines)
    assert result.state == "succeeded", transcript + f"\n{result.message}"
    assert result.ttl_verdicts == ["NOT READY", "READY"]
    assert result.fleet is not None
    assert result.fleet.all_on_new, result.fleet
    assert result.drain_safe, result.drain_summary
    assert result.old_stopped
    assert result.ssh is not None
    assert result.ssh.startswith("127.0.0.1:")
    assert f"run over SSH to a private sshd on {result.ssh}" in transcript
    # Output prefixed with the host name: the command ran on that runbook host, not on `local`.
    assert "old| ok old stopped" in transcript, transcript
    assert "new| ok new running" in transcript, transcript
    assert "started on old (pid" in transcript
    assert "stopped on old" in transcript
    assert result.report_html is not None  # the chart's samples were read over SSH while it drained
    assert "Connections through the bridge" in Path(result.report_html).read_text()

    sshd_port = int(result.ssh.rsplit(":", 1)[1])
    assert _listening_on(("127.0.0.1",)).count(f"127.0.0.1:{sshd_port}") == 0
    assert [pid for pid in _children(os.getpid()) if pid not in children_before] == []
    ours = {f"{a}:{result.service_port}" for a in (stage.OLD_ADDRESS, stage.NEW_ADDRESS)}
    assert ours.isdisjoint(_listening_on((stage.OLD_ADDRESS, stage.NEW_ADDRESS)))
    assert result.bridge_pid is not None
    assert not _pid_alive(result.bridge_pid), f"bridge pid {result.bridge_pid} still running"
