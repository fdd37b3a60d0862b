"""Where a remote command runs (pid, start ticks, boot id) and whether it still runs, asked over SSH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opskit.transport.agent import AgentTransport
from opskit.transport.base import RemoteStart
from opskit.transport.process_probe import runs_still
from opskit.transport.ssh import SshTransport
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.sshd


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.mark.parametrize(
    ("through", "leader"), [("agent", "$BASHPID"), ("session", "$$")], ids=["agent", "session"]
)
def test_on_start_names_the_remote_process_as_its_kernel_knows_it(
    sshd: Sshd, through: str, leader: str
) -> None:
    """The command's leader (agent subshell or session wrapper), its start ticks and boot id reach on_start."""
    ssh = SshTransport(sshd.spec())
    transport = AgentTransport(ssh) if through == "agent" else ssh
    seen: list[tuple[int, RemoteStart | None]] = []
    try:
        result = transport.run(
            f"echo {leader}; cat /proc/{leader}/stat; echo after",
            on_start=lambda pid, remote=None: seen.append((pid, remote)),
        )
    finally:
        transport.close()

    shell_pid, stat, after = result.stdout.splitlines()  # the start line is not the step's output
    ((pid, remote),) = seen
    assert pid == int(shell_pid)
    assert remote == RemoteStart(
        host="target",
        address="127.0.0.1",
        port=sshd.port,
        start_ticks=stat.rsplit(")", 1)[1].split()[19],
        boot_id=Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    )
    assert after == "after"


def test_probe_tells_the_step_from_a_recycled_pid_and_from_the_dead(
    agent: AgentTransport, tmp_path: Path
) -> None:
    """Alive with the same start: yes; same pid, other start or boot: no; ended: no."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        ticks = _stat(proc.pid)[19]

        assert runs_still(agent, proc.pid, ticks, boot)
        assert runs_still(agent, proc.pid, None, None)  # no start time known: a live pid counts
        assert not runs_still(agent, proc.pid, str(int(ticks) + 1), boot)
        assert not runs_still(agent, proc.pid, ticks, "00000000-0000-0000-0000-000000000000")
        # A hand-edited journal value is an unknown start, never shell code.
        assert runs_still(agent, proc.pid, f"1; touch {tmp_path}/owned", boot)
        assert not (tmp_path / "owned").exists()
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert not runs_still(agent, proc.pid, ticks, boot)
