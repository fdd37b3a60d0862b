"""The root command answers fast, lists every command, and maps errors to the documented exit codes."""

from __future__ import annotations

import subprocess
import sys
import time

from opskit.errors import ExitCode
from tests.conftest import Invoke


def test_help_lists_every_command_family(opskit: Invoke) -> None:
    """`opskit --help` shows the commands and the exit codes a script relies on."""
    result = opskit("--help", expect=ExitCode.OK)

    for name in ("validate", "plan", "run", "resume", "dns", "proxy", "traffic", "report", "demo"):
        assert name in result.stdout
    assert "130 interrupted" in result.stdout


def test_unknown_command_is_bad_input(opskit: Invoke) -> None:
    """A mistyped command exits 2 with click's one-line usage error."""
    result = opskit("plann", expect=ExitCode.BAD_INPUT)

    assert "No such command" in result.stderr


def test_help_imports_nothing_heavy() -> None:
    """`opskit --help` starts without importing dnspython, paramiko, mitmproxy or rich."""
    code = (
        "import sys; from opskit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('dns', 'paramiko', 'mitmproxy', 'rich', 'jinja2') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert "HEAVY []" in out.stdout
    assert time.monotonic() - started < 5  # generous: the benchmark holds the 0.3 s target
