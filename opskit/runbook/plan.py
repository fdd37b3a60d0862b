"""What a rehearsal says about each step: one honest status, decided by a pure function.

Statuses: would_run | probe_ok | probe_failed | skip | gate | unknown | done. A command the real run would
execute is never `skip`: only a `when:` that is false skips, and a `when:` that needs a captured value is
`unknown`, not skipped (ansible/ansible#14075 is the bug this guards against).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opskit.runbook.window import WindowVerdict

WOULD_RUN = "would_run"
PROBE_OK = "probe_ok"
PROBE_FAILED = "probe_failed"
SKIP = "skip"
GATE = "gate"
UNKNOWN = "unknown"
DONE = "done"
BLOCKING = frozenset({PROBE_FAILED})


@dataclass(frozen=True)
class StepFacts:
    """What the rehearsal learned about one step, before deciding its status."""

    done: bool = False
    when: bool | None = True  # None: depends on a value only a run produces
    needs_runtime: bool = False  # its command or `with:` needs a captured value
    is_gate: bool = False
    is_probe: bool = False
    probe_ok: bool | None = None  # None: not executed (offline, or not a probe)
    rehearsal_ok: bool | None = None  # a `uses:` step's rehearse(): False when it found a blocker
    host_ok: bool = True


def step_status(f: StepFacts) -> str:  # noqa: PLR0911 - one return per status, in priority order
    """The one status of a step in a plan."""
    if f.done:
        return DONE
    if f.when is False:
        return SKIP
    if f.when is None:
        return UNKNOWN
    if not f.host_ok and f.is_probe:
        return PROBE_FAILED
    if f.is_gate:
        return GATE
    if f.needs_runtime:
        return UNKNOWN
    if f.is_probe and f.probe_ok is not None:
        return PROBE_OK if f.probe_ok else PROBE_FAILED
    if f.rehearsal_ok is False:
        return PROBE_FAILED
    return WOULD_RUN


@dataclass(frozen=True)
class PlanStep:
    """One row of `opskit plan`."""

    id: str
    status: str
    kind: str
    name: str | None = None
    owner: str | None = None
    hosts: list[str] = field(default_factory=list)
    command: str | None = None
    reason: str = ""
    duration_s: float | None = None
    predicted_wait_s: float | None = None
    # The real run (or resume) would stop here, e.g. an in-doubt step with no check.
    blocks: bool = False
    past_duration_s: float | None = None  # how long it took in the last real run of this runbook


@dataclass(frozen=True)
class HostCheck:
    """Whether a host the run would use answers and lets us in."""

    name: str
    address: str
    ok: bool
    problem: str = ""


@dataclass(frozen=True)
class Plan:
    """The rehearsal; `--json` prints this object. `forecast_s`: the expected duration of the real run."""

    run_id: str
    runbook: str
    runbook_name: str
    mode: str
    ok: bool
    steps: list[PlanStep]
    hosts: list[HostCheck]
    forecast_s: float
    offline: bool = False
    warnings: list[str] = field(default_factory=list)
    window: WindowVerdict | None = None  # with --window: does the forecast fit (ok is False if not)


def forecast_s(steps: list[PlanStep]) -> float:
    """Sum of what is known of each step's duration: waits, predicted waits, measured probes, and how long
    each step took in earlier real runs of the same runbook."""
    total = 0.0
    for s in steps:
        if s.status in (DONE, SKIP):
            continue
        total += max(s.predicted_wait_s or 0.0, s.duration_s or 0.0, s.past_duration_s or 0.0)
    return round(total, 3)


def untimed(steps: list[PlanStep]) -> list[str]:
    """Steps the real run performs whose duration the forecast cannot know (gates, unmeasured commands)."""
    return [
        s.id
        for s in steps
        if s.status in (WOULD_RUN, GATE, UNKNOWN)
        and s.predicted_wait_s is None
        and s.duration_s is None
        and s.past_duration_s is None
    ]


def is_ok(steps: list[PlanStep], hosts: list[HostCheck]) -> bool:
    """Nothing blocks: no probe failed and every host answered."""
    return all(s.status not in BLOCKING and not s.blocks for s in steps) and all(
        h.ok for h in hosts
    )
