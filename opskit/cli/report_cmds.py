"""`opskit report`: the morning-after record of a run, as Markdown for a ticket or one HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from opskit.cli.output import emit_json, line
from opskit.errors import ExitCode


@click.command()
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "json"]),
    default="md",
    show_default=True,
    help="md for a ticket, html for one self-contained file with the traffic chart, json for scripts.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file (default: print it).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="OPSKIT_STATE_DIR",
    help="Where runs are journaled (env OPSKIT_STATE_DIR; default ~/.local/state/opskit).",
)
def report(run_id: str, fmt: str, output: Path | None, state_dir: Path | None) -> ExitCode:
    """The record of run RUN_ID: each step's status, who approved it, duration, attempts and captured
    values; the notes; what is done and what remains (with the exact `opskit resume` command for a run
    that stopped); a timeline; and, for runs with a bridge, a chart of connections over time.

    The HTML file needs no network to be viewed (the charting library is inside it). Secrets are masked.

    \b
    Example:
      opskit report 20261124-0210-dispatch
      opskit report 20261124-0210-dispatch --format html --output night.html
    """
    from opskit.report import (  # noqa: PLC0415 - plotly is heavy; --help stays fast
        build_report,
        find_run_dir,
        render_html,
        render_markdown,
    )

    model = build_report(find_run_dir(run_id, state_dir))
    if fmt == "json":
        emit_json(model)
        return ExitCode.OK
    text = render_html(model) if fmt == "html" else render_markdown(model)
    if output is None:
        click.echo(text, nl=False)
        return ExitCode.OK
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    line(
        f"report written: {output} ({model.state}, {len(model.done)} done, {len(model.remains)} remaining)"
    )
    return ExitCode.OK
