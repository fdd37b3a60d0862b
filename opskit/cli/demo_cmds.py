"""`opskit demo`: rehearse a whole night cutover on this machine, with nothing to configure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from opskit.cli.output import emit_json, line
from opskit.durations import format_seconds
from opskit.errors import ExitCode
from opskit.statedir import default_state_dir


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Plan only: probes run for real, nothing changes.")
@click.option(
    "--window",
    default="02:00-05:00",
    show_default=True,
    help="The maintenance window the forecast is checked against (HH:MM-HH:MM).",
)
@click.option(
    "--clients",
    type=click.IntRange(1, 200),
    default=12,
    show_default=True,
    help="How many simulated drivers' phones.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="OPSKIT_STATE_DIR",
    default=lambda: str(default_state_dir()),
    help="Where the run is journaled (env OPSKIT_STATE_DIR; default ~/.local/state/opskit).",
)
@click.option(
    "--ssh",
    is_flag=True,
    help="Run the old and new host steps over SSH to a private sshd on 127.0.0.1 (needs openssh-server).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON at the end.")
@click.pass_context
def demo(  # noqa: PLR0917 - click passes each option as an argument
    ctx: click.Context,
    dry_run: bool,
    window: str,
    clients: int,
    state_dir: Path,
    ssh: bool,
    as_json: bool,
) -> ExitCode | None:
    """Play the night of a service move on loopback, for real, in about a minute.

    An embedded DNS server with a 24 h TTL on the moved name, an old and a new service, and a fleet of
    simulated phones that cache DNS and hold long connections. The shipped runbooks/night-cutover.yaml runs
    against them: the TTL gate says NOT READY, the TTL is lowered, the switch, the bridge on the old address,
    the drain verdict, then the report. Time is scaled (1 s here = 1 h of a real night) and said so.
    Everything the demo starts, it stops, on success, failure or Ctrl-C.

    With --dry-run it rehearses like `opskit plan`: probes for real, nothing changed, and a forecast of the
    night's length from the live TTLs, checked against --window.

    With --ssh, the steps on the old and new host run over real SSH (and the bridge is copied and
    started over SFTP/SSH) to a private sshd on 127.0.0.1 with a throw-away key, stopped at the end.

    \b
    Example:
      opskit demo
      opskit demo --dry-run --window 02:00-05:00
      opskit demo --clients 30 --json
      opskit demo --ssh
    """
    if ctx.invoked_subcommand is not None:
        return None
    from opskit.demo.run import DemoOptions, run_demo  # noqa: PLC0415 - dnspython loads only here

    show = (lambda _text: None) if as_json else line
    result = run_demo(
        DemoOptions(state_dir=state_dir, dry_run=dry_run, window=window, clients=clients, ssh=ssh),
        show,
    )
    if as_json:
        emit_json(result)
    else:
        _summary(result)
    return ExitCode(result.exit_code)


def _summary(result: Any) -> None:
    line("")
    line(f"TTL gate: {' -> '.join(result.ttl_verdicts) or 'not run'}")
    if result.dry_run:
        line(
            f"Forecast: {format_seconds(result.forecast_s)} here = {format_seconds(result.forecast_real_s)} on a real night"
            + (
                f"; the window is {format_seconds(result.window_s)}: "
                + ("it fits." if result.fits_window else "it does NOT fit.")
                if result.window_s is not None
                else ""
            )
        )
        line(f"Plan {result.run_id}: {result.message}.")
        return
    fleet = result.fleet
    if fleet is not None:
        on_new = fleet.served_by.get("new", 0)
        line(f"Phones: {on_new} of {fleet.clients} served by the new host at the end.")
        from opskit.demo.fleet import attempts_sentence  # noqa: PLC0415 - dnspython: not at --help

        line(attempts_sentence(fleet))
    line(f"Drain verdict: {result.drain_summary or 'not reached'}")
    line(f"Old service stopped: {'yes' if result.old_stopped else 'no'}")
    if result.report_md:
        line(f"Report: {result.report_md}")
        line(f"        {result.report_html}")
    line(
        f"Run {result.run_id}: {result.state} in {format_seconds(result.wall_s)}. {result.message}"
    )


@demo.command("ctl", hidden=True)
@click.argument("port", type=click.IntRange(1, 65535))
@click.argument("verb", type=click.Choice(["start", "stop", "status", "read-only", "read-write"]))
@click.argument("service")
def ctl(port: int, verb: str, service: str) -> ExitCode:
    """Start, stop or ask a rehearsal service (what `systemctl` does on a real host).

    \b
    Example:
      opskit demo ctl 40123 stop old
    """
    from opskit.demo.control import send  # noqa: PLC0415

    try:
        answer = send(port, f"{verb} {service}")
    except OSError as exc:
        line(f"opskit: demo control on 127.0.0.1:{port}: {exc.strerror or exc}", err=True)
        return ExitCode.BLOCKED
    line(answer)
    return ExitCode.OK if answer.startswith("ok") else ExitCode.NEGATIVE
