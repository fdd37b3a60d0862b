"""`opskit report`: the morning-after record as Markdown and as one self-contained HTML file."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.report import build_report, render_html, render_markdown
from opskit.runbook.lock import RunLock
from tests.conftest import Invoke
from tests.report.journal_fixture import write_journal
from tests.servers.common import require_binary


def test_markdown_tells_each_step_who_approved_and_what_was_captured(tmp_path: Path) -> None:
    """Each step shows its status, approver, attempts and captured values; notes and timeline follow."""
    run_dir = write_journal(tmp_path / "runs" / "R1")

    text = render_markdown(build_report(run_dir))

    assert text.startswith("# Run R1: succeeded")
    assert "| `cutover` | done | alice (critical) | 2s | 1 | synced_rows=1200 |" in text
    assert "| `ttl-gate` | done |  | 1s | 2 | ttl_s=5m; ready=true |" in text
    assert "db synced, waiting for the client to switch DNS" in text
    assert "All steps are done." in text
    assert "### Owner: customer-sysadmin" in text
    assert "- DNS switch: `02:00:07`" in text
    assert "- old TTL expired: `02:00:37`" in text
    assert "- bridge shut down: `02:00:42`" in text
    assert "- `02:00:03` cutover gate approved by alice (critical)" in text


def test_a_stopped_run_says_what_remains_and_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that died mid-step lists the remaining steps and the exact resume command."""
    monkeypatch.delenv("OPSKIT_STATE_DIR", raising=False)
    run_dir = write_journal(tmp_path / "runs" / "R2", finished=False)

    report = build_report(run_dir)
    text = render_markdown(report)

    assert report.state == "interrupted"
    assert report.remains == ["traffic-drained", "bridge-stop"]
    assert "- [ ] `traffic-drained`" in text
    assert "opskit resume R2" in text
    assert "IN DOUBT" in text


def test_a_run_in_progress_shows_its_current_step_as_running(tmp_path: Path) -> None:
    """While a run still holds its lock, the step it is in is `running`, never `in_doubt`."""
    run_dir = write_journal(tmp_path / "runs" / "R5", finished=False)
    lock = RunLock(run_dir, "alice")
    try:
        report = build_report(run_dir)
    finally:
        lock.release()

    assert report.state == "running"
    assert {s.id: s.status for s in report.steps}["traffic-drained"] == "running"


def test_secrets_are_masked_again_in_the_report(tmp_path: Path) -> None:
    """A secret value the journal let through never reaches the report when the secret is known."""
    run_dir = write_journal(tmp_path / "runs" / "R3", leaked="hunter2-night")

    report = build_report(run_dir, secrets=["hunter2-night"])

    assert "hunter2-night" not in render_markdown(report)
    assert "hunter2-night" not in render_html(report)
    assert "syncing with password ***" in render_markdown(report)


def test_html_is_one_file_that_needs_no_network(tmp_path: Path) -> None:
    """The HTML report loads no script, style or image from the network; plotly is inside it."""
    run_dir = write_journal(tmp_path / "runs" / "R4")

    html = render_html(build_report(run_dir))

    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"?https?://", html, re.I)
    assert not re.search(r"<script[^>]+src=", html, re.I)
    assert "Plotly.newPlot" in html
    assert "traffic-chart" in html


def test_report_command_writes_the_file_and_exits_zero(tmp_path: Path, opskit: Invoke) -> None:
    """`opskit report RUN_ID --format html --output F` writes F and says where."""
    write_journal(tmp_path / "state" / "runs" / "R5")
    out = tmp_path / "night.html"

    result = opskit("report", "R5", "--format", "html", "--output", str(out), expect=ExitCode.OK)

    assert f"report written: {out}" in result.stdout
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_unknown_run_is_bad_input_with_one_line(opskit: Invoke) -> None:
    """A run id that has no journal exits 2 (as in status and resume) with one line, not a traceback."""
    result = opskit("report", "NOPE", expect=ExitCode.BAD_INPUT)

    assert result.stderr.startswith("opskit: no run 'NOPE'")
    assert "Traceback" not in result.stderr


@pytest.mark.browser
def test_chart_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Opened offline in headless Chromium, the report's chart is drawn (plotly's SVG is in the DOM)."""
    chromium = require_binary("chromium")
    run_dir = write_journal(tmp_path / "runs" / "R6")
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(run_dir)))

    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",  # any network request would fail: the page must not need one
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout

    assert 'class="main-svg"' in dom
    assert "scatterlayer" in dom
    assert "DNS switch" in dom


def test_report_json_has_the_model_keys(tmp_path: Path, opskit: Invoke) -> None:
    """`--format json` prints the report model: steps, notes, remains, and the traffic series."""
    write_journal(tmp_path / "state" / "runs" / "R7")

    result = opskit("report", "R7", "--format", "json", expect=ExitCode.OK)

    data = json.loads(result.stdout)
    assert data["state"] == "succeeded"
    assert [s["id"] for s in data["steps"]][:2] == ["ttl-gate", "cutover"]
    assert data["traffic"]["markers"][0]["label"] == "DNS switch"
    assert len(data["traffic"]["samples"]) == 32
