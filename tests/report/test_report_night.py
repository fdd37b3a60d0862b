"""The report of real runs: the bridge chart recorded by every run, and a timeline of kills and resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opskit.errors import ExitCode
from opskit.report import build_report, render_html
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, wait_for, write
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture

BRIDGE = """\
    name: bridge-night
    steps:
      - id: bridge
        uses: proxy.start
        with: {{listen: "127.0.0.1:{listen}", to: "127.0.0.1:{to}", stats_file: "{stats}"}}
      - id: drained
        uses: traffic.drained
        with: {{stats_file: "{stats}", switched_at: "{switched_at}", old_ttl: 0s, margin: 0s,
                quiet: 1500ms, timeout: 30s, interval: 200ms}}
      - id: bridge-stop
        uses: proxy.stop
        with: {{stats_file: "{stats}"}}
        kind: irreversible
    """


def _hold_a_connection(port: int, stats: Path) -> None:
    """A late client: connects through the bridge once it listens and stays 1 s."""
    wait_for(stats.exists, 20, "the bridge's stats file")
    for _ in range(100):  # the stats file may appear a moment before the listener accepts
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                time.sleep(1.2)
            return
        except ConnectionRefusedError:
            time.sleep(0.05)


def test_a_real_run_with_a_bridge_has_a_chart(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """A run (not the demo) records the bridge's counts: the chart shows residual clients in whole numbers."""
    listen, stats = free_port(), tmp_path / "stats.json"
    switched_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = write(
        tmp_path,
        BRIDGE.format(listen=listen, to=health_http.port, stats=stats, switched_at=switched_at),
    )
    client = threading.Thread(target=_hold_a_connection, args=(listen, stats), daemon=True)
    client.start()

    rid = run_id(opskit("run", str(path), expect=ExitCode.OK).stdout)
    client.join(timeout=10)

    report = json.loads(opskit("report", rid, "--format", "json", expect=ExitCode.OK).stdout)
    samples = report["traffic"]["samples"]
    assert max(s["residual_clients"] for s in samples) == 1
    assert samples[-1]["active"] == 0
    html = render_html(build_report(tmp_path / "state" / "runs" / rid))
    assert '"name":"residual clients"' in html
    assert '"tickformat":"d"' in html


def test_the_timeline_tells_kills_resumes_and_changes(opskit: Invoke, tmp_path: Path) -> None:
    """A run killed mid-wait, resumed by another operator with --accept-changes: all in the timeline."""
    state = tmp_path / "state"
    text = "name: killed\nsteps:\n  - {id: first, run: 'true', undo: 'true'}\n  - {id: pause, wait: 60s}\n"
    path = write(tmp_path, text)
    env = {**os.environ, "OPSKIT_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opskit", "run", str(path), "--operator", "alice"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(lambda: any((state / "runs").glob("*/journal.jsonl")), 20, "the journal")
        journal = next((state / "runs").glob("*/journal.jsonl"))
        wait_for(lambda: '"step": "pause"' in journal.read_text(), 20, "the wait to start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    rid = journal.parent.name
    killed = json.loads(opskit("report", rid, "--format", "json", expect=ExitCode.OK).stdout)
    assert "stopped here without finishing" in killed["timeline"][-1]["what"]
    path.write_text(text.replace("60s", "100ms"))

    opskit("resume", rid, "--operator", "bob", "--accept-changes", "--rerun-in-doubt",
           expect=ExitCode.OK)  # fmt: skip

    report = json.loads(opskit("report", rid, "--format", "json", expect=ExitCode.OK).stdout)
    timeline = [t["what"] for t in report["timeline"]]
    assert any("stopped here without finishing" in line for line in timeline), timeline
    assert "operator changed: alice -> bob" in timeline
    assert any(line.startswith("resumed by bob with --accept-changes") for line in timeline)
    attempts = {s["id"]: s["attempts"] for s in report["steps"]}
    assert attempts == {"first": 1, "pause": 2}
    assert [e["event"] for e in events(state, rid)].count("step_started") == 3


def test_captured_numbers_are_rounded_for_display() -> None:
    """A captured 0.1 + 0.2 shows as 0.3 and a waited_s of 89.4 as 1m29s, in Markdown and HTML alike."""
    from opskit.report.markdown import values_text  # noqa: PLC0415

    assert values_text({"ratio": 0.1 + 0.2, "waited_s": 89.4, "rows": 12.0}) == (
        "ratio=0.3; waited_s=1m29s; rows=12"
    )


def test_a_rollback_is_in_the_timeline() -> None:
    """Who rolled back, each undo and how the rollback ended appear in the timeline, in order."""
    from opskit.report.build import from_events  # noqa: PLC0415

    events = [
        {"ts": "2026-11-24T02:00:00Z", "event": "run_started", "operator": "alice", "mode": "run"},
        {"ts": "2026-11-24T02:00:01Z", "event": "step_started", "step": "stop-old", "attempt": 1},
        {"ts": "2026-11-24T02:00:02Z", "event": "step_finished", "step": "stop-old",
         "status": "succeeded", "attempts": 1},
        {"ts": "2026-11-24T02:00:03Z", "event": "run_finished", "state": "failed"},
        {"ts": "2026-11-24T02:10:00Z", "event": "rollback_started", "operator": "carol"},
        {"ts": "2026-11-24T02:10:01Z", "event": "undo_finished", "step": "stop-old",
         "status": "undone", "summary": "started dispatch again"},
        {"ts": "2026-11-24T02:10:02Z", "event": "rollback_finished",
         "message": "rolled back: 1 step(s) undone"},
    ]  # fmt: skip

    report = from_events("R9", events, warnings=[])

    timeline = [t.what for t in report.timeline]
    assert timeline[-4:] == [
        "operator changed: alice -> carol",
        "rollback started by carol",
        "stop-old undo undone: started dispatch again",
        "rollback finished: rolled back: 1 step(s) undone",
    ]
    assert report.steps[0].attempts == 1
