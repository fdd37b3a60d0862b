"""`opskit demo`: the shipped night-cutover runbook played for real against loopback stand-ins.

Everything it starts (DNS server, services, phones, bridge) it stops again, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.demo import stage as st
from opskit.demo.fleet import FleetSummary
from opskit.demo.reporter import DemoReporter, Show
from opskit.demo.sshd import DemoSshd, private_sshd, require_sshd
from opskit.demo.timescale import TimeScale
from opskit.durations import format_seconds
from opskit.errors import ExitCode, UsageError
from opskit.runbook.window import parse_window

# The critical gate and the customer's manual step of the shipped runbook, approved up front as "demo".
APPROVED = frozenset({"point-of-no-return", "customer-ready"})
OPERATOR = "demo"
TTL_GATE_STEP = "ttl-gate"
PROPAGATION_STEP = "switch.propagated"


@dataclass(frozen=True)
class DemoOptions:
    """What `opskit demo` was asked."""

    state_dir: Path
    dry_run: bool = False
    window: str | None = "02:00-05:00"
    clients: int = 12
    scale: TimeScale = field(default_factory=TimeScale)
    runbook: Path | None = None
    ssh: bool = False  # old/new host steps over SSH to a private sshd on 127.0.0.1


@dataclass(frozen=True)
class DemoResult:
    """How the rehearsal went; `--json` prints this object."""

    run_id: str | None
    state: str
    exit_code: int
    dry_run: bool
    scale: str
    ttl_verdicts: list[str]
    drain_safe: bool
    drain_summary: str | None
    fleet: FleetSummary | None
    old_stopped: bool
    bridge_pid: int | None
    dns_changes: int  # how many times the zone's serial moved (0 in a dry-run)
    service_commands: list[str]  # what the runbook asked the services to do, in order
    report_md: str | None
    report_html: str | None
    wall_s: float
    forecast_s: float | None = None
    forecast_real_s: float | None = None
    window_s: float | None = None
    fits_window: bool | None = None
    message: str = ""
    ssh: str | None = None  # "127.0.0.1:PORT" when the host steps ran over SSH
    service_port: int | None = None  # the old and new services' (and the bridge's) port


def shipped_runbook() -> Path:
    """runbooks/night-cutover.yaml of this checkout (or of the current directory)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / "runbooks" / "night-cutover.yaml"
        if candidate.is_file():
            return candidate
    raise UsageError("runbooks/night-cutover.yaml not found: run the demo from the opskit checkout")


def window_seconds(window: str) -> float:
    """The length of a window "02:00-05:00" (past midnight allowed: "23:00-02:00" is 3 h)."""
    start, end = parse_window(window)
    return float((end - start) % (24 * 60) * 60)


def demo_vars(stage: st.Stage, scale: TimeScale, sshd: DemoSshd | None = None) -> dict[str, Any]:
    """The runbook's vars pointed at the loopback pieces; durations scaled (1 s here = 1 h by default).

    With `sshd`, the old and new host steps run over SSH to it instead of locally.
    """
    ctl = f"{shlex.quote(sys.executable)} -m opskit demo ctl {stage.control.port}"

    def scaled(real_s: float) -> str:
        return f"{scale.ttl(real_s)}s"

    return {
        "domain": st.NAME,
        "zone": st.ZONE.rstrip("."),
        "old_address": st.OLD_ADDRESS,
        "new_address": st.NEW_ADDRESS,
        "service_port": str(stage.port),
        "old_host": "local",
        "new_host": "local",
        "nameserver": stage.auth.address,
        "tsig_key_file": str(stage.key_file),
        "max_ttl": scaled(600),
        "low_ttl": scaled(300),
        # The rehearsal lowers the TTL and switches in one night, so the gate waits out the whole day.
        "ttl_gate_wait": scale.duration(30 * 3600),
        "stop_old_writes": f"{ctl} read-only old",
        "start_old_writes": f"{ctl} read-write old",
        "old_writes_stopped": f"{ctl} status old | grep -q read-only",
        "sync_data": "echo 'rehearsal: 1200 rows copied to the new host'",
        "start_new": f"{ctl} start new",
        "stop_new": f"{ctl} stop new",
        "new_is_running": f"{ctl} status new | grep -q running",
        "stop_old": f"{ctl} stop old",
        "start_old": f"{ctl} start old",
        "bridge_stats_file": str(stage.stats_file),
        "bridge_nudge_after": scale.duration(30 * 60),
        "drain_margin": scale.duration(30 * 60),
        "drain_quiet": scale.duration(90 * 60),
        "drain_timeout": "90s",
        "drain_check_every": "500ms",
        "propagation_timeout": "30s",
        **(sshd.host_vars() if sshd is not None else {}),
    }


def run_demo(options: DemoOptions, show: Show) -> DemoResult:
    """Play the night; the result says what the verdicts were and that everything stopped."""
    from opskit.runbook.engine import RunOptions, run  # noqa: PLC0415 - the engine loads its actions lazily

    runbook = options.runbook or shipped_runbook()
    window_s = window_seconds(options.window) if options.window else None
    started = time.monotonic()
    binary = require_sshd() if options.ssh else None  # before anything starts: exit 2, nothing ran
    show(options.scale.banner())
    config = st.StageConfig(clients=options.clients, scale=options.scale)
    # sshd is entered first so it stops last: the stage stops the bridge it carried before sshd goes.
    with contextlib.ExitStack() as stack:
        sshd = stack.enter_context(private_sshd(binary)) if binary else None
        ssh_label = f"{sshd.address}:{sshd.port}" if sshd is not None else None
        if sshd is not None:
            show(
                f"Steps on the old and new host run over SSH to a private sshd on "
                f"{sshd.address}:{sshd.port} (as {sshd.user}, with a throw-away key)."
            )
        stage = stack.enter_context(st.Stage(config))
        show(
            f"DNS: {st.NAME} A {st.OLD_ADDRESS} ttl {options.scale.ttl(config.real_old_ttl_s)}s "
            f"on {stage.auth.address}; old {stage.old.address}, new {stage.new.address}; "
            f"{options.clients} phones"
        )
        serial_before = stage.auth.serial()
        answered = stage.wait_connected()
        show(f"{answered} phones connected, all to the old host.")
        reporter = DemoReporter(
            stage, show, state_dir=options.state_dir, switch_ttl_s=options.scale.ttl(300)
        )
        run_options = RunOptions(
            state_dir=options.state_dir,
            operator=OPERATOR,
            overrides=demo_vars(stage, options.scale, sshd),
            approve=APPROVED,
        )
        if options.dry_run:
            return _rehearse(
                ssh_label,
                runbook=runbook,
                run_options=run_options,
                reporter=reporter,
                options=options,
                stage=stage,
                started=started,
                window_s=window_s,
                serial_before=serial_before,
            )
        outcome = run(runbook, run_options, reporter)
        reporter.dashboard("end of the run", force=True)
        fleet = stage.fleet_summary()
        old_stopped = not stage.old.running
        dns_changes = stage.auth.serial() - serial_before
        service_commands = list(stage.control.log)
    result = DemoResult(
        run_id=outcome.run_id,
        state=outcome.state,
        exit_code=int(outcome.exit_code),
        dry_run=False,
        scale=options.scale.banner(),
        ttl_verdicts=reporter.ttl_verdicts,
        drain_safe=reporter.drain_safe,
        drain_summary=reporter.drain_summary,
        fleet=fleet,
        old_stopped=old_stopped,
        bridge_pid=stage.bridge_pid,
        dns_changes=dns_changes,
        service_commands=service_commands,
        report_md=None,
        report_html=None,
        wall_s=round(time.monotonic() - started, 1),
        message=outcome.message,
        ssh=ssh_label,
        service_port=stage.port,
    )
    return _with_reports(result, options.state_dir)


def _rehearse(
    ssh_label: str | None,
    *,
    runbook: Path,
    run_options: Any,
    reporter: DemoReporter,
    options: DemoOptions,
    stage: st.Stage,
    started: float,
    window_s: float | None,
    serial_before: int,
) -> DemoResult:
    """`--dry-run`: the plan (probes real, nothing mutated) and the night's forecast against the window."""
    from opskit.runbook.rehearsal import rehearse  # noqa: PLC0415

    live = stage.auth.records(st.NAME)
    plan = rehearse(runbook, run_options, reporter)
    # Lowering the TTL means waiting out the TTL caches hold now before the switch is safe; the rest of
    # the night is what the plan forecasts (dns.wait and traffic.drained predict their own waits).
    ttl_wait_s = float(live[0]) if live else 0.0
    # dns.wait predicts from the TTL published now; after the lowering it waits only the low TTL.
    propagation = [s for s in plan.steps if s.id == PROPAGATION_STEP]
    # The TTL gate predicts that same wait (it waits until the old TTL has passed): count it once.
    gate = [s for s in plan.steps if s.id == TTL_GATE_STEP]
    rest_s = (
        plan.forecast_s
        + sum(options.scale.ttl(300) - (s.predicted_wait_s or 0.0) for s in propagation)
        - sum(s.predicted_wait_s or 0.0 for s in gate)
    )
    forecast = rest_s + ttl_wait_s
    forecast_real = options.scale.real_s(forecast)
    fits = None if window_s is None else forecast_real <= window_s
    scale = options.scale
    advice = (
        f"the night takes about {scale.both(forecast)}: {scale.both(ttl_wait_s)} waiting out the "
        f"live TTL after lowering it, then {scale.both(rest_s)} for the rest"
    )
    if fits is False and scale.real_s(rest_s) <= (window_s or 0):
        advice += (
            f"; lower the TTL at least {format_seconds(scale.real_s(ttl_wait_s))} before the window "
            "opens and the rest fits"
        )
    return DemoResult(
        run_id=plan.run_id,
        state="planned" if plan.ok else "blocked",
        exit_code=int(ExitCode.OK if plan.ok else ExitCode.NEGATIVE),
        dry_run=True,
        scale=options.scale.banner(),
        ttl_verdicts=reporter.ttl_verdicts,
        drain_safe=False,
        drain_summary=None,
        fleet=stage.fleet_summary(),
        old_stopped=False,
        bridge_pid=None,
        dns_changes=stage.auth.serial() - serial_before,
        service_commands=list(stage.control.log),
        report_md=None,
        report_html=None,
        wall_s=round(time.monotonic() - started, 1),
        forecast_s=round(forecast, 1),
        forecast_real_s=round(forecast_real),
        window_s=window_s,
        fits_window=fits,
        message=("nothing blocks; " if plan.ok else "a probe says no (see the plan); ") + advice,
        ssh=ssh_label,
    )


def _with_reports(result: DemoResult, state_dir: Path) -> DemoResult:
    """Write report.md and report.html into the run's directory."""
    if result.run_id is None:
        return result
    from dataclasses import replace  # noqa: PLC0415

    from opskit.report import build_report, render_html, render_markdown  # noqa: PLC0415

    run_dir = state_dir / "runs" / result.run_id
    model = build_report(run_dir)
    paths = {}
    for name, text in (("report.md", render_markdown(model)), ("report.html", render_html(model))):
        path = run_dir / name
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths[name] = str(path)
    return replace(result, report_md=paths["report.md"], report_html=paths["report.html"])
