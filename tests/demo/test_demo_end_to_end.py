"""The whole rehearsal, end to end: the shipped runbook against the loopback night, then nothing left."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from pathlib import Path

import pytest

from opskit.demo import stage
from opskit.demo.run import DemoOptions, run_demo


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _listening_on(addresses: tuple[str, ...]) -> list[str]:
    """TCP listeners on the given IPv4 addresses (from /proc/net/tcp)."""
    wanted = {"".join(f"{int(b):02X}" for b in reversed(a.split("."))): a for a in addresses}
    found = []
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address, port = local.split(":")
        if state == "0A" and address in wanted:
            found.append(f"{wanted[address]}:{int(port, 16)}")
    return found


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_the_rehearsal_moves_every_phone_and_leaves_nothing_running(tmp_path: Path) -> None:
    """TTL gate NOT READY then READY, all phones on the new host, drain safe, old stopped, all cleaned up."""
    threads_before = {t.ident for t in threading.enumerate()}
    # Session fixtures of other tests (sshd, DNS lab, nginx) are children of pytest too: not the demo's.
    children_before = set(_children(os.getpid()))
    lines: list[str] = []

    result = run_demo(DemoOptions(state_dir=tmp_path / "state", clients=8), lines.append)

    transcript = "\n".join(lines)
    assert result.state == "succeeded", transcript + f"\n{result.message}"
    assert result.exit_code == 0
    assert result.ttl_verdicts == ["NOT READY", "READY"]
    assert result.fleet is not None
    assert result.fleet.all_on_new, result.fleet
    assert result.fleet.attempts_to_old_after_switch >= result.fleet.carried_by_bridge > 0
    fleet = result.fleet
    assert (
        fleet.carried_by_bridge
        + fleet.served_by_old_after_switch
        + (fleet.refused_at_old_after_switch + fleet.unanswered_at_old_after_switch)
        == fleet.attempts_to_old_after_switch
    )  # every attempt accounted for
    assert fleet.unanswered_at_old_after_switch >= 0
    assert result.drain_safe, result.drain_summary
    assert result.old_stopped
    assert "stop old" in result.service_commands
    assert result.dns_changes == 2  # the TTL lowering and the switch
    assert "1 s here = 1h on a real night" in transcript
    assert result.report_html is not None
    assert "Connections through the bridge" in Path(result.report_html).read_text()
    assert result.report_md is not None
    assert "point-of-no-return" in Path(result.report_md).read_text()

    left = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not left, f"threads left running: {left}"
    assert [pid for pid in _children(os.getpid()) if pid not in children_before] == []
    # Only this demo's port: other demos may run on this machine at the same time.
    ours = {f"{a}:{result.service_port}" for a in (stage.OLD_ADDRESS, stage.NEW_ADDRESS)}
    assert ours.isdisjoint(_listening_on((stage.OLD_ADDRESS, stage.NEW_ADDRESS)))
    assert result.bridge_pid is not None
    assert not _pid_alive(result.bridge_pid), f"bridge pid {result.bridge_pid} still running"


@pytest.mark.slow
def test_ctrl_c_during_the_drain_stops_the_bridge_too(opskit_proc) -> None:
    """Ctrl-C while the bridge runs exits 130 and leaves no bridge process and no listener behind."""
    proc = opskit_proc("demo", "--clients", "4")
    assert proc.stdout is not None
    seen: list[str] = []
    bridge_pid = None
    port = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        text = proc.stdout.readline()
        seen.append(text)
        if "runs as pid" in text:
            bridge_pid = int(text.split("runs as pid", 1)[1].split(";")[0])
        if text.startswith("DNS: ") and " old " in text:
            port = int(text.split(" old ", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])
        if "▶ drained" in text:
            break
    assert bridge_pid is not None, "".join(seen)

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, "".join(seen) + out + err
    assert "interrupted" in out + err
    assert not _pid_alive(bridge_pid)
    ours = {f"{a}:{port}" for a in (stage.OLD_ADDRESS, stage.NEW_ADDRESS)}
    assert port > 0
    assert ours.isdisjoint(_listening_on((stage.OLD_ADDRESS, stage.NEW_ADDRESS)))


def test_dry_run_changes_nothing_and_forecasts_the_night(tmp_path: Path) -> None:
    """--dry-run probes for real, changes no DNS record and no service, and checks the window."""
    lines: list[str] = []

    result = run_demo(
        DemoOptions(state_dir=tmp_path / "state", clients=3, dry_run=True, window="02:00-05:00"),
        lines.append,
    )

    assert result.dry_run
    assert result.ttl_verdicts == ["NOT READY", "NOT READY"]
    assert result.dns_changes == 0
    assert result.service_commands == []
    assert result.forecast_s is not None
    assert result.forecast_s > 24  # the live 24 s TTL must be waited out after lowering it
    assert result.fits_window is False
    assert "lower the TTL at least 1d before the window opens" in result.message
