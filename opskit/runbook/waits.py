"""A waiting step is limited by its own wait, not by the runbook's default step timeout (issue #11).

`dns.check` with `wait_until_safe`, `dns.wait`, `traffic.drained` and `wait:` say how long they may wait.
`defaults: {timeout: 10m}` is meant for commands; applied to a 30-minute drain it cut the drain off at 10
minutes on a real night, while `validate` said nothing. So:
- at run time, a waiting action's step gets its own wait (plus a grace for the last check) when the step
  timeout only comes from `defaults:`;
- at load time, a step whose own `timeout:` is shorter than what it waits is bad input, with the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from opskit import actions
from opskit.durations import format_seconds
from opskit.errors import OpskitError, RunbookInvalid
from opskit.runbook.model import Step
from opskit.runbook.templates import TemplateProblem, render_value

# The last check after a wait (DNS queries, one stats read over SSH) needs a moment beyond the wait.
GRACE_S = 60.0


def step_timeout_s(step: Step, action: Any) -> float | None:
    """The deadline of one `uses:` step: its own `timeout:` if written, else at least its action's wait."""
    if "timeout" in step.locs or step.timeout_s is None:
        return step.timeout_s
    wait_s = longest_wait_s(action)
    if wait_s is None:
        return step.timeout_s
    return max(step.timeout_s, wait_s + GRACE_S)


def longest_wait_s(action: Any) -> float | None:
    """What the action says it may wait (None: it does not wait, or it predates the hook)."""
    hook = getattr(action, "longest_wait_s", None)
    return hook() if callable(hook) else None


def step_problems(step: Step, ctx: Mapping[str, Any]) -> list[RunbookInvalid]:
    """A step whose own `timeout:` would cut off its wait: where, and what to write instead."""
    if "timeout" not in step.locs or step.timeout_s is None:
        return []
    wait_s, what = _wait_of(step, ctx)
    if wait_s is None or wait_s <= step.timeout_s:
        return []
    return [
        RunbookInvalid(
            step.where("timeout"),
            f"timeout {format_seconds(step.timeout_s)} is shorter than {what} "
            f"({format_seconds(wait_s)}): the step would be cut off mid-wait; remove this timeout "
            f"(the wait's own limit governs) or make it at least {format_seconds(wait_s)}",
        )
    ]


def _wait_of(step: Step, ctx: Mapping[str, Any]) -> tuple[float | None, str]:
    if step.wait_s is not None:
        return step.wait_s, "its wait:"
    if not step.uses:
        return None, ""
    try:
        params = render_value(dict(step.with_), ctx)
        action = actions.load(step.uses).from_params(actions.Params(params))
    except (TemplateProblem, OpskitError, ImportError, LookupError):
        return None, ""  # reported elsewhere, or known only at run time
    return longest_wait_s(action), f"what {step.uses} may wait by its own with:"


def wait_left_s(
    events: Iterable[Mapping[str, Any]], step_id: str, total_s: float, now: datetime
) -> float:
    """What is left of a `wait:` that an earlier process of this run started: a resume waits the rest.

    The first `step_started` of the step is when the wait began; a wait cut off by a kill after 50 of
    60 minutes waits 10 more on resume, not the whole hour again.
    """
    for event in events:
        if event.get("event") == "step_started" and event.get("step") == step_id:
            try:
                began = datetime.fromisoformat(str(event.get("ts")).replace("Z", "+00:00"))
            except ValueError:
                return total_s
            return min(total_s, max(0.0, total_s - (now - began).total_seconds()))
    return total_s
