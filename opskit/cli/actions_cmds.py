"""`opskit actions [NAME]`: what each `uses:` action takes, generated from the checks validate runs."""

from __future__ import annotations

import click
import yaml

from opskit.cli.output import emit_json, line, table
from opskit.errors import ExitCode, UsageError


@click.command()
@click.argument("name", required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the docs as JSON (for scripts, editors)."
)
def actions(name: str | None, as_json: bool) -> ExitCode:
    """List the actions a runbook step can use (`uses: NAME`), or show one: its parameters, their types
    and defaults, and an example step that `opskit validate` accepts.

    \b
    Example:
      opskit actions
      opskit actions traffic.drained
      opskit actions dns.wait --json
    """
    from opskit.actions import UnknownAction  # noqa: PLC0415 - the registry loads actions lazily
    from opskit.actions.docs import action_doc, all_docs  # noqa: PLC0415

    if name is None:
        docs = all_docs()
        if as_json:
            emit_json(docs)
            return ExitCode.OK
        table(("ACTION", "KIND", "WHAT IT DOES"), [(d.name, d.kind, d.summary) for d in docs])
        line("details: opskit actions NAME")
        return ExitCode.OK
    try:
        doc = action_doc(name)
    except UnknownAction as exc:
        raise UsageError(f"NAME: {exc.args[0]}") from None
    if as_json:
        emit_json(doc)
        return ExitCode.OK
    line(f"{doc.name} ({doc.kind}): {doc.summary}")
    if doc.description:
        line("")
        line(doc.description)
    line("")
    rows = [
        (p.key, p.type, "yes" if p.required else "", "" if p.default is None else _shown(p.default))
        for p in doc.params
    ]
    table(("PARAMETER", "TYPE", "REQUIRED", "DEFAULT"), rows)
    line("")
    line("example:")
    step = [{"id": "my-step", "uses": doc.name, "with": doc.example}]
    text = yaml.safe_dump(step, sort_keys=False, default_flow_style=False)
    for example_line in text.splitlines():
        line(f"  {example_line}")
    return ExitCode.OK


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)
