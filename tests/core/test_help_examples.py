"""Every command and subcommand explains itself with an example, as a person at 3 a.m. needs."""

from __future__ import annotations

import click
import pytest

from opskit.cli import COMMANDS, cli


def _with_subcommands(name: str, command: click.Command) -> list[tuple[str, click.Command]]:
    found = [(name, command)]
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            found.extend(_with_subcommands(f"{name} {sub_name}", sub))
    return found


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_help_has_an_example(name: str) -> None:
    """`opskit NAME --help` (and each subcommand's) ends with an Example block showing a real call."""
    command = cli.get_command(click.Context(cli), name)
    assert command is not None, f"opskit {name} is listed but its module is missing"

    for full_name, each in _with_subcommands(name, command):
        help_text = each.help or ""
        assert "Example" in help_text, f"opskit {full_name} --help has no example"
        example = help_text.split("Example", 1)[1]
        assert "opskit " in example, f"opskit {full_name}: the example shows no command"
