"""What a report says about a run: frozen values, the JSON keys of `opskit report --format json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Approval:
    """One gate answer: who, how (confirm/typed/critical/manual/--approve), and the answer."""

    step: str
    operator: str
    level: str
    approved: bool
    at: str | None


@dataclass(frozen=True)
class StepRecord:
    """One step as the journal tells it."""

    id: str
    title: str
    owner: str | None
    kind: str | None
    uses: str | None
    status: str  # succeeded | failed | skipped | blocked | interrupted | in_doubt | pending | ...
    attempts: int
    duration_s: float | None
    started_at: str | None
    finished_at: str | None
    approvals: list[Approval] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    rc: int | None = None
    output_tail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Note:
    """A hand-over note."""

    at: str | None
    author: str | None
    text: str


@dataclass(frozen=True)
class TimelineEntry:
    """One dated line of the night."""

    at: str
    what: str


@dataclass(frozen=True)
class Sample:
    """The bridge at one moment: connections open now, and clients still arriving at the old address."""

    at: str
    active: int
    residual_clients: int
    total: int | None = None


@dataclass(frozen=True)
class Marker:
    """A moment drawn on the traffic chart: the switch, TTL expiry, shutdown."""

    at: str
    label: str


@dataclass(frozen=True)
class TrafficSeries:
    """The bridge's connections over time, with the night's key moments."""

    samples: list[Sample]
    markers: list[Marker]


@dataclass(frozen=True)
class Report:
    """The whole record of one run."""

    run_id: str
    runbook: str | None
    mode: str | None
    state: str  # running | succeeded | failed | aborted | interrupted
    operator: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    steps: list[StepRecord]
    notes: list[Note]
    timeline: list[TimelineEntry]
    done: list[str]
    remains: list[str]
    resume_command: str | None
    next_steps: list[
        str
    ]  # what the operator can do now, one copyable line each (the engine's advice)
    traffic: TrafficSeries | None
    warnings: list[str] = field(default_factory=list)

    def owners(self) -> list[str]:
        """Every owner named by a step, in first-seen order ("" for steps without one)."""
        seen: dict[str, None] = {}
        for step in self.steps:
            seen.setdefault(step.owner or "", None)
        return list(seen)
