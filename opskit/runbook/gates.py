"""Gates fail closed: without a terminal only `--approve STEP_ID` passes one; `--yes` never passes critical.

`decide()` is pure; the engine asks the operator only when it says "ask", and journals every answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from opskit.runbook.model import GateLevel


@dataclass(frozen=True)
class GateDecision:
    """approved | refused | ask; `via` says what approved it (--approve, --yes, tty)."""

    verdict: str
    via: str = ""
    reason: str = ""


def decide(
    step_id: str,
    level: GateLevel,
    *,
    approved: frozenset[str],
    yes: bool,
    interactive: bool,
) -> GateDecision:
    """What to do at a gate before asking anyone."""
    if step_id in approved:
        return GateDecision("approved", via="--approve")
    if yes and level is not GateLevel.CRITICAL:
        return GateDecision("approved", via="--yes")
    if interactive:
        return GateDecision("ask")
    if level is GateLevel.CRITICAL:
        why = (
            "a critical gate needs a person at a terminal or --approve "
            + step_id
            + " (--yes does not pass it)"
        )
    else:
        why = f"no terminal to ask at; pass --approve {step_id} to approve it in advance"
    return GateDecision("refused", reason=why)


def question(step_id: str, level: GateLevel, prompt: str) -> str:
    """The question shown at a terminal."""
    if level is GateLevel.CONFIRM:
        return f"{prompt} [y/N]"
    return f"{prompt}\nType the step id ({step_id}) to go on"


def accepts(step_id: str, level: GateLevel, answer: str | None) -> bool:
    """Whether the typed answer passes the gate."""
    if answer is None:
        return False
    text = answer.strip()
    if level is GateLevel.CONFIRM:
        return text.lower() in ("y", "yes")
    return text == step_id
