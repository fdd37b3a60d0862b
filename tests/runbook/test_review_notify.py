"""A `notify:` command is a shell command like `run:`: every value reaches it as one argument."""

from __future__ import annotations

from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import write


def test_a_notify_command_quotes_the_values_it_is_given(opskit: Invoke, tmp_path: Path) -> None:
    """A variable holding `x; touch FILE` reaches the notify command as text (the log shows it) and
    runs nothing, as in a step's `run:`."""
    log, pwned = tmp_path / "notified", tmp_path / "pwned"
    path = write(
        tmp_path,
        f"""
        name: notify-quoting
        vars:
          label: day
        notify:
          - command: "echo {{{{ label }}}} >> {log}"
            on: [run_finished]
        steps:
          - id: one
            run: "true"
        """,
    )
    opskit("run", str(path), "--var", f"label=night; touch {pwned}", expect=ExitCode.OK)
    assert log.read_text().strip() == f"night; touch {pwned}"
    assert not pwned.exists()
