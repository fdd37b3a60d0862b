"""The `opskit` command: a root group whose subcommands are imported only when called.

This is the one error boundary: an OpskitError becomes `opskit: <line>` on stderr and its exit code;
Ctrl-C becomes exit 130 (click alone would print "Aborted!" and exit 1). `--debug` or OPSKIT_DEBUG=1
re-raises instead, for a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from opskit import __version__
from opskit.errors import ExitCode, OpskitError

# name -> "module:attribute"; each module is imported only when its command runs or its help is shown.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("opskit.cli.runbook_cmds:validate", "Check a runbook; one line per problem."),
    "plan": ("opskit.cli.runbook_cmds:plan", "Rehearse a runbook: probes run, nothing mutates."),
    "run": ("opskit.cli.runbook_cmds:run", "Run a runbook for real, journaled step by step."),
    "resume": ("opskit.cli.runbook_cmds:resume", "Continue a run that stopped, from its journal."),
    "status": ("opskit.cli.runbook_cmds:status", "List runs, or show one run's steps and notes."),
    "note": ("opskit.cli.runbook_cmds:note", "Add a hand-over note to a run's journal."),
    "rollback": ("opskit.cli.runbook_cmds:rollback", "Undo a run's succeeded steps, newest first."),
    "dns": ("opskit.cli.dns_cmds:dns", "DNS readiness: TTL gate, switch, propagation watch."),
    "proxy": ("opskit.cli.proxy_cmds:proxy", "The bridge: forward the old host to the new one."),
    "traffic": (
        "opskit.cli.traffic_cmds:traffic",
        "Residual traffic: who still arrives, and when to stop.",
    ),
    "demo": ("opskit.cli.demo_cmds:demo", "Rehearse a whole night cutover on this machine."),
    "report": (
        "opskit.cli.report_cmds:report",
        "The morning-after report of a run (Markdown or HTML).",
    ),
    "actions": (
        "opskit.cli.actions_cmds:actions",
        "What each `uses:` action takes: parameters, defaults, an example.",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None  # a command family that has not landed yet
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table, so `opskit --help` imports no subcommand module.
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="opskit")
@click.option(
    "--debug", is_flag=True, envvar="OPSKIT_DEBUG", help="Show tracebacks instead of one line."
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """opskit: the night a service moves from one server to another.

    Rehearse and run cutover runbooks with a crash-safe journal, check DNS TTLs before the switch, bridge
    the old host to the new one, and learn when the old host is safe to shut down.

    Exit codes, in every command: 0 done or yes, 1 the honest no (a step failed, not ready, timed out),
    2 bad input (nothing ran), 3 blocked (a gate said no, no server answered), 130 interrupted.

    \b
    Example:
      opskit plan runbooks/night-cutover.yaml
      opskit dns check dispatch.example.net --max-ttl 10m
      opskit demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `opskit` console script."""
    debug = os.environ.get("OPSKIT_DEBUG", "") not in ("", "0") or "--debug" in (
        argv or sys.argv[1:]
    )
    try:
        code = cli.main(args=argv, prog_name="opskit", standalone_mode=False)
    except OpskitError as exc:
        if debug:
            raise
        click.echo(f"opskit: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.BAD_INPUT if exc.exit_code == 2 else exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        if debug:
            raise
        click.echo("opskit: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(_as_exit_code(code))


def _as_exit_code(value: Any) -> int:
    """Commands return an ExitCode (or None for OK)."""
    if value is None:
        return int(ExitCode.OK)
    return int(value)
