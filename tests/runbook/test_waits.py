"""A waiting step waits as long as its own timeout says, not the runbook's default step timeout (#11)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, write
from tests.servers.common import free_port
from tests.servers.health_http import HealthHttp, health_http  # noqa: F401 - fixture

SHORT_DRAIN = """\
    name: short-default
    defaults:
      timeout: 2s
    vars:
      quiet: 4s
    steps:
      - id: bridge
        uses: proxy.start
        with: {{listen: "127.0.0.1:{listen}", to: "127.0.0.1:{to}", stats_file: "{stats}"}}
      - id: drained
        uses: traffic.drained
        with:
          stats_file: "{stats}"
          switched_at: "{switched_at}"
          old_ttl: 0s
          margin: 0s
          quiet: "{{{{ quiet }}}}"
          timeout: 30s
          interval: 200ms
      - id: bridge-stop
        uses: proxy.stop
        with: {{stats_file: "{stats}"}}
        kind: irreversible
    """


def test_a_drain_longer_than_the_default_timeout_reaches_safe(
    opskit: Invoke,
    tmp_path: Path,
    health_http: HealthHttp,  # noqa: F811
) -> None:
    """A 4 s quiet window under `defaults: timeout: 2s` waits it out in real time and says SAFE."""
    listen = free_port()
    switched_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = write(
        tmp_path,
        SHORT_DRAIN.format(
            listen=listen,
            to=health_http.port,
            stats=tmp_path / "stats.json",
            switched_at=switched_at,
        ),
    )
    started = time.monotonic()

    result = opskit("run", str(path), expect=ExitCode.OK)

    took_s = time.monotonic() - started
    finished = [
        e
        for e in events(tmp_path / "state", run_id(result.stdout))
        if e["event"] == "step_finished"
    ]
    drained = next(e for e in finished if e["step"] == "drained")
    assert drained["status"] == "succeeded", drained["summary"]
    assert drained["summary"].startswith("SAFE")
    assert drained["duration_s"] >= 4.0
    assert took_s < 30


def test_a_step_timeout_shorter_than_its_wait_is_bad_input(opskit: Invoke, tmp_path: Path) -> None:
    """`validate` exits 2 at the step's `timeout:` line and says how to fix it."""
    path = write(
        tmp_path,
        """\
        name: cut-short
        steps:
          - id: drained
            uses: traffic.drained
            with: {stats_file: /tmp/none.json, quiet: 30m, timeout: 2h}
            timeout: 5m
          - id: pause
            wait: 20m
            timeout: 10m
        """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert f"{path}:6:14: timeout 5m is shorter than what traffic.drained may wait" in result.stderr
    assert "make it at least 2h" in result.stderr
    assert f"{path}:9:14: timeout 10m is shorter than its wait: (20m)" in result.stderr


def test_a_quiet_window_longer_than_the_drain_timeout_is_bad_input(
    opskit: Invoke, tmp_path: Path
) -> None:
    """A drain that could never say SAFE before its own timeout is refused at load time."""
    path = write(
        tmp_path,
        """\
        name: never-safe
        steps:
          - id: drained
            uses: traffic.drained
            with: {stats_file: /tmp/none.json, quiet: 30m, timeout: 10m}
        """,
    )

    result = opskit("validate", str(path), expect=ExitCode.BAD_INPUT)

    assert "with.quiet: the quiet window 30m is longer than timeout 10m" in result.stderr


def test_the_shipped_drain_is_not_cut_by_the_shipped_default() -> None:
    """night-cutover.yaml as shipped: the drain (quiet 30m, up to 24h) outlives defaults.timeout 10m."""
    from opskit import actions  # noqa: PLC0415
    from opskit.runbook.scope import base_vars, step_context  # noqa: PLC0415
    from opskit.runbook.templates import render_value  # noqa: PLC0415
    from opskit.runbook.validate import load_runbook  # noqa: PLC0415
    from opskit.runbook.waits import step_timeout_s  # noqa: PLC0415
    from tests.conftest import REPO  # noqa: PLC0415

    runbook = load_runbook(REPO / "runbooks" / "night-cutover.yaml")
    ctx = base_vars(runbook, {"run_id": "R", "operator": "night"})
    deadlines = {}
    for step_id in ("ttl-gate", "switch.propagated", "drained"):
        step = runbook.step(step_id)
        assert step is not None
        scoped = step_context(step, ctx, {}, {})
        action = actions.load(step.uses or "").from_params(
            actions.Params(render_value(dict(step.with_), scoped))
        )
        deadlines[step_id] = step_timeout_s(step, action)

    assert runbook.timeout_s == 600
    assert deadlines == {"ttl-gate": 3660.0, "switch.propagated": 1860.0, "drained": 86460.0}
