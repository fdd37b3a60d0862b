"""What the rehearsal shows while the runbook runs: steps, verdicts, and a one-line traffic dashboard.

It is the engine's `Reporter` for the demo. It also reacts to a few steps of the shipped runbook: the switch
(marks the phones' clock and the chart), the TTL gates (records READY / NOT READY), the drain verdict, and
the bridge's shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opskit.demo.stage import Stage
from opskit.durations import format_seconds

Show = Callable[[str], None]

SWITCH_STEP = "switch.update"
TTL_STEPS = ("ttl-check", "ttl-gate")
DRAIN_STEP = "drained"
BRIDGE_STOP_STEP = "bridge-stop"
DASHBOARD_EVERY_S = 1.0
_SHOWN_MAX = 110
_GOOD = frozenset({"succeeded", "probe_ok", "would_run", "done"})
_BAD = frozenset({"failed", "probe_failed", "in_doubt", "interrupted"})


class DemoReporter:
    """The engine's reporter for `opskit demo`; the CLI's `show` prints each line."""

    def __init__(self, stage: Stage, show: Show, *, state_dir: Path, switch_ttl_s: int) -> None:
        self.stage = stage
        self.show = show
        self.state_dir = state_dir
        self.switch_ttl_s = switch_ttl_s
        self.run_id: str | None = None
        self.ttl_verdicts: list[str] = []
        self.drain_summary: str | None = None
        self.drain_safe = False
        self.statuses: dict[str, str] = {}
        self._last_dashboard = 0.0
        self._last_output: dict[str, str] = {}
        self._started = time.monotonic()

    # -- the engine's Reporter protocol ----------------------------------------------------------

    def started(self, run_id: str, mode: str) -> None:
        self.run_id = run_id
        self.stage.run_dir = self.state_dir / "runs" / run_id
        self.show(f"run id: {run_id} ({mode})")

    def step_begin(
        self, step_id: str, title: str, hosts: tuple[str, ...], command: str | None
    ) -> None:
        self._last_output.clear()
        shown = command if "{{" in title and command else title
        if len(shown) > _SHOWN_MAX:
            shown = shown[: _SHOWN_MAX - 3] + "..."
        self.show(f"{self._clock()} ▶ {step_id}: {shown}")

    def output(self, host: str, line: str) -> None:
        if line == self._last_output.get(host):
            return  # a retried check says the same thing each time: once is enough on screen
        self._last_output[host] = line
        self.show(f"{'':>9}{host}| {line}")

    def progress(self, step_id: str, message: str, fraction: float | None) -> None:
        self.dashboard(f"{step_id}: {message}")

    def step_end(self, step_id: str, status: str, summary: str, duration_s: float) -> None:
        self.statuses[step_id] = status
        mark = "✗" if status in _BAD else ("✓" if status in _GOOD else "·")
        self.show(
            f"{self._clock()} {mark} {step_id} {status} in {format_seconds(duration_s)}: {summary}"
        )
        if step_id in TTL_STEPS:
            verdict = "READY" if summary.startswith("READY") else "NOT READY"
            self.ttl_verdicts.append(verdict)
            if verdict == "NOT READY":
                self.show(
                    f"{'':>9}TTL gate says NOT READY: the runbook lowers the TTL next, then waits."
                )
        elif step_id == SWITCH_STEP and status == "succeeded":
            now = datetime.now(UTC)
            if self.stage.fleet is not None:
                self.stage.fleet.mark_switch()
            self.stage.mark("switch", "DNS switch", now)
            expiry = now + timedelta(seconds=self.switch_ttl_s)
            self.stage.mark("ttl_expiry", "old TTL expired", expiry)
        elif step_id == DRAIN_STEP:
            self.drain_summary = summary
            self.drain_safe = status == "succeeded"
        elif step_id == BRIDGE_STOP_STEP and status == "succeeded":
            self.stage.mark("shutdown", "bridge shut down")

    def ask(self, question: str) -> str | None:
        return None  # the rehearsal never waits for a person: its gates are approved up front

    def warn(self, text: str) -> None:
        self.dashboard(text)

    # -- the dashboard -----------------------------------------------------------------------------

    def dashboard(self, headline: str, *, force: bool = False) -> None:
        """At most once a second: what the step waits for, where the phones are, what the bridge carries."""
        now = time.monotonic()
        if not force and now - self._last_dashboard < DASHBOARD_EVERY_S:
            return
        self._last_dashboard = now
        self.show(f"{self._clock()} · {headline}")
        self.show(f"{'':>9}{self.traffic_line()}")

    def traffic_line(self) -> str:
        """Phones by host, bridge counters, attempts at the old address since the switch."""
        fleet = self.stage.fleet_summary()
        parts = []
        if fleet is not None:
            served = ", ".join(f"{host} {n}" for host, n in sorted(fleet.served_by.items()))
            parts.append(f"phones: {served}")
            if self.stage.fleet is not None and self.stage.fleet.switched_at is not None:
                parts.append(
                    f"at old address since switch: {fleet.attempts_to_old_after_switch} "
                    f"(carried by bridge {fleet.carried_by_bridge})"
                )
        bridge = self.stage.bridge()
        if bridge is not None:
            residual = sum(1 for c in bridge.clients if c.active > 0)
            parts.append(
                f"bridge: {bridge.active} active, {bridge.total} total, {residual} residual clients"
            )
        return " | ".join(parts)

    def _clock(self) -> str:
        return f"[{time.monotonic() - self._started:6.1f}s]"
