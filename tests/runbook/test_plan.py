"""`opskit plan` / `run --dry-run`: probes run for real, nothing mutates, every step gets one honest status."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opskit.errors import ExitCode
from opskit.runbook.plan import StepFacts, step_status
from tests.conftest import Invoke
from tests.runbook.helpers import events, write
from tests.servers.common import free_port

REHEARSAL = """
    name: rehearsal
    vars: {{dir: "{dir}", mode: real}}
    steps:
      - id: probe-up
        kind: probe
        run: echo probe-ran; echo probed > {dir}/probe-evidence
        capture: probed
      - id: mutate
        run: touch {dir}/marker
        owner: us
      - id: stamp
        run: date +%s
        capture: started_at
      - id: later
        run: echo {{{{ started_at }}}} {{{{ probed }}}}
      - id: only-in-test
        when: "mode == 'test'"
        run: touch {dir}/never
      - id: confirm
        gate: {{prompt: "Go?", level: critical}}
      - id: call-client
        manual: "Ask the sysadmin to switch DNS"
        owner: customer-sysadmin
      - id: pause
        wait: 2s
"""


def test_dry_run_executes_probes_and_nothing_else(opskit: Invoke, tmp_path: Path) -> None:
    """The probe ran (its evidence file exists), the mutating step left no marker, and statuses are honest."""
    path = write(tmp_path, REHEARSAL.format(dir=tmp_path))

    result = opskit("plan", str(path), "--json", expect=ExitCode.OK)

    plan = json.loads(result.stdout)
    status = {s["id"]: s["status"] for s in plan["steps"]}
    assert status == {
        "probe-up": "probe_ok", "mutate": "would_run", "stamp": "would_run", "later": "unknown",
        "only-in-test": "skip", "confirm": "gate", "call-client": "gate", "pause": "would_run",
    }  # fmt: skip
    assert (tmp_path / "probe-evidence").exists()
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "never").exists()
    later = next(s for s in plan["steps"] if s["id"] == "later")
    assert later["command"] == "echo <started_at> probe-ran"  # the probe's capture is real
    assert plan["forecast_s"] >= 2.0
    assert plan["mode"] == "dry-run"


def test_run_dry_run_is_journaled_as_a_rehearsal(opskit: Invoke, tmp_path: Path) -> None:
    """`run --dry-run` is the same rehearsal, and its journal says mode dry-run with every planned status."""
    path = write(tmp_path, REHEARSAL.format(dir=tmp_path))

    result = opskit("run", str(path), "--dry-run", expect=ExitCode.OK)

    assert not (tmp_path / "marker").exists()
    assert "  us: mutate\n" in result.stdout
    assert (
        "  customer-sysadmin: call-client (MUST ACT: Ask the sysadmin to switch DNS; "
        "then confirm call-client)" in result.stdout
    )
    assert "forecast:" in result.stdout
    (rid,) = [p.name for p in (tmp_path / "state" / "runs").iterdir()]
    evs = events(tmp_path / "state", rid)
    assert evs[0]["event"] == "run_started"
    assert evs[0]["mode"] == "dry-run"
    planned = [e["step"] for e in evs if e["event"] == "step_planned"]
    assert len(planned) == 8
    status = opskit("status", rid, "--json", expect=ExitCode.OK)
    assert json.loads(status.stdout)["mode"] == "dry-run"


def test_failing_probe_blocks_the_plan(opskit: Invoke, tmp_path: Path) -> None:
    """A probe that fails makes the plan exit 1 and says which one."""
    path = write(
        tmp_path,
        """
        name: blocked
        steps:
          - id: new-up
            kind: probe
            run: "exit 3"
          - id: switch
            run: "true"
    """,
    )

    result = opskit("plan", str(path), expect=ExitCode.NEGATIVE)

    assert "probe_failed" in result.stdout
    assert "BLOCKED" in result.stdout


def test_offline_plan_executes_nothing(opskit: Invoke, tmp_path: Path) -> None:
    """With --offline even probes stay unexecuted but are shown as would_run, never as skipped."""
    path = write(
        tmp_path,
        f"""
        name: offline
        steps:
          - id: look
            kind: probe
            run: touch {tmp_path}/probe-ran
    """,
    )

    result = opskit("plan", str(path), "--offline", "--json", expect=ExitCode.OK)

    assert json.loads(result.stdout)["steps"][0]["status"] == "would_run"
    assert not (tmp_path / "probe-ran").exists()


def test_secret_is_masked_in_the_plan(opskit: Invoke, tmp_path: Path) -> None:
    """A secret in a command is shown as *** in the plan and never printed."""
    path = write(
        tmp_path,
        """
        name: secret-plan
        secrets: {db_pw: {env: PLAN_DB_PW}}
        steps:
          - id: sync
            run: mysqldump -p{{ db_pw }} app
    """,
    )

    result = opskit("plan", str(path), env={"PLAN_DB_PW": "hunter2-plan"}, expect=ExitCode.OK)

    assert "mysqldump -p*** app" in result.stdout
    assert "hunter2-plan" not in result.stdout + result.stderr


def test_status_priority_never_hides_a_command() -> None:
    """Only a false `when:` skips; a gate or a runtime dependency is shown as such, done wins over all."""
    assert step_status(StepFacts(when=False)) == "skip"
    assert step_status(StepFacts(when=None)) == "unknown"
    assert step_status(StepFacts(is_gate=True, needs_runtime=True)) == "gate"
    assert step_status(StepFacts(needs_runtime=True)) == "unknown"
    assert step_status(StepFacts(done=True, when=False)) == "done"
    assert step_status(StepFacts(is_probe=True, probe_ok=False)) == "probe_failed"
    assert step_status(StepFacts(is_probe=True, host_ok=False)) == "probe_failed"
    assert step_status(StepFacts(rehearsal_ok=False)) == "probe_failed"
    assert step_status(StepFacts()) == "would_run"


WAITS = """
    name: waits
    steps:
      - id: settle
        wait: {wait}
      - id: check
        kind: probe
        run: "true"
      - id: switch
        run: "true"
"""


def test_window_too_short_for_the_night_exits_1(opskit: Invoke, tmp_path: Path) -> None:
    """A 4-hour wait never fits a 3-hour window: the plan says so, names the shortfall and exits 1."""
    path = write(tmp_path, WAITS.format(wait="4h"))

    result = opskit("plan", str(path), "--window", "02:00-05:00", expect=ExitCode.NEGATIVE)

    assert "window: the night does NOT fit window 02:00-05:00: forecast 4h" in result.stdout
    assert "1h short" in result.stdout
    assert "BLOCKED: the night does not fit the window" in result.stdout
    assert "next: start the night earlier, pass a longer --window" in result.stdout


def test_window_verdict_is_in_the_json_and_the_journal(opskit: Invoke, tmp_path: Path) -> None:
    """`run --dry-run --window --json` carries the verdict; a short night fits (exit 0) and says so."""
    path = write(tmp_path, WAITS.format(wait="1s"))

    result = opskit(
        "run", str(path), "--dry-run", "--window", "00:00-23:59", "--json", expect=ExitCode.OK
    )

    plan = json.loads(result.stdout)
    window = plan["window"]
    assert window["window"] == "00:00-23:59"
    assert window["fits"] is True
    assert window["forecast_s"] == plan["forecast_s"] >= 1.0
    assert window["untimed_steps"] == ["switch"]  # the probe was measured, the wait is known
    finished = events(tmp_path / "state", plan["run_id"])[-1]
    assert finished["event"] == "run_finished"
    assert finished["window"]["fits"] is True


def test_bad_window_runs_nothing(opskit: Invoke, tmp_path: Path) -> None:
    """A malformed --window is bad input (exit 2) before any probe runs or any journal is written."""
    path = write(tmp_path, WAITS.format(wait="1s"))

    result = opskit("plan", str(path), "--window", "2am-5am", expect=ExitCode.BAD_INPUT)

    assert "--window: expected HH:MM-HH:MM" in result.stderr
    assert not (tmp_path / "state" / "runs").exists()


def test_plan_ends_with_the_command_to_run(opskit: Invoke, tmp_path: Path) -> None:
    """A clean plan's last line is the run command, with the --approve flags its gates need headless."""
    path = write(
        tmp_path,
        """
        name: next
        steps:
          - id: go
            gate: {prompt: "Stop {{ run_id }}?", level: typed}
          - id: work
            run: "true"
    """,
    )

    result = opskit("plan", str(path), expect=ExitCode.OK)

    assert "typed gate: Stop " in result.stdout  # the question itself, rendered
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"next: opskit run {path}")
    assert f"without one: opskit run {path} --approve go)" in last


def test_unreachable_host_is_named_on_its_steps(opskit: Invoke, tmp_path: Path) -> None:
    """Steps on an unreachable host say which host, and the host line says why."""
    port = free_port()
    path = write(
        tmp_path,
        f"""
        name: down
        hosts:
          old: {{address: 127.0.0.1, port: {port}, user: ops, known_hosts: {tmp_path}/kh}}
        steps:
          - id: stop
            on: old
            run: systemctl stop dispatch
    """,
    )

    result = opskit("plan", str(path), expect=ExitCode.NEGATIVE)

    assert "old unreachable (see the host lines below)" in result.stdout
    assert f"host old (127.0.0.1:{port}): UNREACHABLE: 127.0.0.1:{port} refuses connections" in (
        result.stdout
    )


def test_forecast_counts_what_the_last_real_run_took(opskit: Invoke, tmp_path: Path) -> None:
    """After a real run, the plan's forecast includes each command's measured time from that run."""
    path = write(
        tmp_path,
        """
        name: timed
        steps:
          - id: sync
            run: sleep 0.3
          - id: never-ran
            run: "true"
            when: "false"
    """,
    )
    before = json.loads(opskit("plan", str(path), "--json", expect=ExitCode.OK).stdout)
    opskit("run", str(path), expect=ExitCode.OK)

    after = opskit("plan", str(path), "--window", "00:00-23:59", expect=ExitCode.OK)
    planned = json.loads(opskit("plan", str(path), "--json", expect=ExitCode.OK).stdout)

    assert before["steps"][0]["past_duration_s"] is None
    assert planned["steps"][0]["past_duration_s"] >= 0.3
    assert planned["forecast_s"] == planned["steps"][0]["past_duration_s"]
    assert re.search(r"sleep 0\.3  took 3\d\dms last run", after.stdout)
    assert "not counted" not in after.stdout  # every step that runs has an estimate now
