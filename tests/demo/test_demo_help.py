"""`opskit demo` and `opskit report` explain themselves with an example."""

from __future__ import annotations

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke


@pytest.mark.parametrize("command", [["demo"], ["report"], ["demo", "ctl"]])
def test_help_has_an_example(opskit: Invoke, command: list[str]) -> None:
    """Every command's --help ends with an Example block."""
    result = opskit(*command, "--help", expect=ExitCode.OK)

    assert "Example:" in result.stdout
    assert "  opskit " in result.stdout.split("Example:", 1)[1]
