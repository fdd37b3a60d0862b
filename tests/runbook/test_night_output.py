"""What an operator reads on a real night: a plan that fits 120 columns, waits that speak, resumes that remember."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.runbook.waits import wait_left_s
from tests.conftest import REPO, Invoke
from tests.runbook.helpers import run_id, write
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture


def test_the_plan_table_fits_120_columns(opskit: Invoke) -> None:
    """`opskit plan` of the shipped night prints no table row wider than 120 characters, and no note is lost."""
    result = opskit(
        "plan", str(REPO / "runbooks" / "night-cutover.yaml"), "--offline", expect=ExitCode.OK
    )

    table = result.stdout.split("forecast:", 1)[0].splitlines()
    assert table[0].startswith("STEP")
    assert max(len(line) for line in table) <= 120
    assert result.stdout.count("probe not executed (--offline)") == 7  # every probe


def test_a_wait_off_a_terminal_keeps_printing(opskit: Invoke, tmp_path: Path) -> None:
    """Off a terminal, a 5.5 s wait prints its countdown more than once, in the one duration format."""
    path = write(tmp_path, "name: w\nsteps:\n  - {id: pause, wait: 5500ms}\n")

    result = opskit("run", str(path), expect=ExitCode.OK)

    countdown = re.findall(r"\.\.\. pause .* waiting, (\S+) left", result.stdout)
    assert len(countdown) >= 2, result.stdout
    assert countdown[0] in ("5s", "6s")
    assert "waited 6s" in result.stdout or "waited 5s" in result.stdout


def test_a_resumed_wait_waits_only_what_is_left() -> None:
    """A 1 h wait cut off after 50 minutes has 10 minutes left on resume; a fresh one the whole hour."""
    began = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    events = [{"event": "step_started", "step": "settle", "ts": "2026-11-24T02:00:00.000Z"}]

    assert wait_left_s(events, "settle", 3600, began + timedelta(minutes=50)) == 600
    assert wait_left_s(events, "settle", 3600, began + timedelta(hours=3)) == 0
    assert wait_left_s([], "settle", 3600, began) == 3600


def test_a_silent_step_off_a_terminal_says_it_is_still_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A step that prints nothing still gets a line at least every heartbeat (every minute by default)."""
    from opskit.cli.runbook_view import HEARTBEAT_S, ConsoleReporter  # noqa: PLC0415

    reporter = ConsoleReporter(heartbeat_s=0.5)
    reporter.step_begin("sync-data", "Copy the data", (), "rsync -a old:/data new:/data")
    time.sleep(1.8)
    reporter.step_end("sync-data", "succeeded", "exit 0 on local", 1.8)
    time.sleep(0.6)  # nothing more once the step ended

    out = capsys.readouterr().out
    assert HEARTBEAT_S == 60.0
    assert out.count("... sync-data still running (") >= 2, out
    assert out.rstrip().endswith("<== ok sync-data (2s): exit 0 on local")


def test_status_rounds_captured_numbers(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """`opskit status` shows a captured connect time as 1ms, not 0.000612345678 (seconds)."""
    path = write(
        tmp_path,
        f"""\
        name: measured
        steps:
          - id: reach
            uses: tcp.check
            with: {{host: 127.0.0.1, port: {health_http.port}}}
            capture: reach
        """,
    )
    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)

    status = opskit("status", rid, expect=ExitCode.OK).stdout

    assert re.search(r"'connect_s': '\d+(ms|s)'", status), status
