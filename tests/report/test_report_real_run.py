"""The report of a journal written by the real engine: steps, approvals, captures, notes, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.report import build_report, render_html, render_markdown
from tests.conftest import Invoke

RUNBOOK = """\
name: tiny-night
vars: {greeting: hello}
secrets:
  db_pw: {env: TINY_DB_PW}
steps:
  - id: say
    name: Say {{ greeting }}
    kind: probe
    owner: us
    run: echo {{ greeting }} && echo "pw=$OPSKIT_SECRET_DB_PW" && echo "{{ db_pw }}" > /dev/null
    capture: said
  - id: go
    owner: us
    gate: {prompt: "Go on?", level: critical}
  - id: ask-customer
    owner: customer-sysadmin
    manual: "Ask the customer to confirm the switch"
  - id: fail-here
    owner: us
    run: "false"
    undo: "true"
"""


@pytest.fixture
def real_run(tmp_path: Path, opskit: Invoke, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run of a four-step runbook that stops at a failing step, with one note, as the CLI writes it."""
    monkeypatch.setenv("TINY_DB_PW", "correct-horse-battery")
    runbook = tmp_path / "tiny.yaml"
    runbook.write_text(RUNBOOK)
    result = opskit(
        "run", str(runbook), "--approve", "go", "--approve", "ask-customer", "--operator", "alice",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip
    run_id = next(
        ln.split(":", 1)[1].strip() for ln in result.stdout.splitlines() if ln.startswith("run id:")
    )
    opskit("note", run_id, "db synced; waiting for the customer", expect=ExitCode.OK)
    return tmp_path / "state" / "runs" / run_id


def test_report_of_a_real_run(real_run: Path) -> None:
    """Approvals, owners, captured values, the failure, the note and the resume command all appear."""
    report = build_report(real_run)
    text = render_markdown(report)

    assert report.state == "failed"
    assert "`say` Say hello | done |" in text
    assert "said=hello pw=***" in text
    assert "alice (critical, --approve)" in text
    assert "### Owner: customer-sysadmin" in text
    assert "| `fail-here` | FAILED |" in text
    assert "db synced; waiting for the customer" in text
    assert f"opskit resume {real_run.name}" in text
    assert "- [ ] `fail-here`" in text


def test_secret_never_reaches_the_report(real_run: Path) -> None:
    """The secret's value appears in neither the Markdown nor the HTML report."""
    report = build_report(real_run)

    for text in (render_markdown(report), render_html(report)):
        assert "correct-horse-battery" not in text
