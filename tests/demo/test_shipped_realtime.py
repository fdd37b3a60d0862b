"""The shipped night-cutover runbook in real time: its own defaults, real durations, loopback stand-ins."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from opskit.demo import stage as st
from opskit.demo.reporter import DemoReporter
from opskit.demo.run import APPROVED, demo_vars, shipped_runbook
from opskit.demo.timescale import TimeScale
from opskit.errors import ExitCode
from opskit.runbook.engine import RunOptions, run
from opskit.runbook.validate import load_runbook

# Real seconds, not a scaled night: what a small service with short TTLs would write in its vars.
REAL_TIME_VARS = {
    "max_ttl": "2s",
    "low_ttl": "1s",
    "ttl_gate_wait": "30s",
    "bridge_nudge_after": "1s",
    "drain_margin": "1s",
    "drain_quiet": "3s",
    "drain_timeout": "40s",
    "drain_check_every": "500ms",
    "propagation_timeout": "20s",
}


@pytest.mark.slow
def test_the_shipped_runbook_runs_to_safe_in_real_time(tmp_path: Path) -> None:
    """night-cutover.yaml, only its service vars set, lowers a 3 s TTL, switches, bridges, drains: SAFE."""
    # The stand-in zone serves a 3 s TTL (24 h / 28800): the runbook itself runs unscaled.
    config = st.StageConfig(clients=6, scale=TimeScale(86400 / 3))
    lines: list[str] = []
    started = time.monotonic()
    with st.Stage(config) as world:
        assert world.wait_connected() == 6
        overrides = {**demo_vars(world, TimeScale(1.0)), **REAL_TIME_VARS}
        runbook = load_runbook(shipped_runbook(), overrides)
        reporter = DemoReporter(world, lines.append, state_dir=tmp_path, switch_ttl_s=1)
        options = RunOptions(
            state_dir=tmp_path, operator="night", overrides=overrides, approve=APPROVED
        )

        outcome = run(shipped_runbook(), options, reporter)

        took_s = time.monotonic() - started
        old_running = world.old.running
        fleet = world.fleet_summary()
    journal = tmp_path / "runs" / outcome.run_id / "journal.jsonl"
    finished = {
        e["step"]: e
        for e in map(json.loads, journal.read_text().splitlines())
        if e["event"] == "step_finished"
    }
    assert runbook.timeout_s == 600.0  # its own `defaults: timeout: 10m`, untouched
    assert outcome.exit_code == ExitCode.OK, "\n".join(lines)
    assert finished["ttl-gate"]["summary"].startswith("READY")
    assert finished["drained"]["summary"].startswith("SAFE"), finished["drained"]["summary"]
    assert not old_running
    accounted = (
        fleet.carried_by_bridge
        + fleet.served_by_old_after_switch
        + fleet.refused_at_old_after_switch
        + fleet.unanswered_at_old_after_switch
    )
    assert accounted == fleet.attempts_to_old_after_switch
    assert fleet.unanswered_at_old_after_switch >= 0
    assert took_s < 60
