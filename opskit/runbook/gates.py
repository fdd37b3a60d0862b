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
    someone_else: str | None = None,
) -> GateDecision:
    """What to do at a gate before asking anyone.

    `someone_else`: the owner of a `manual:` step when that is not the operator; --yes cannot confirm
    work another person must do (issue #10), only --approve STEP_ID or an answer at the terminal.
    """
    if step_id in approved:
        return GateDecision("approved", via="--approve")
    if yes and level is not GateLevel.CRITICAL and someone_else is None:
        return GateDecision("approved", via="--yes")
    if interactive:
        return GateDecision("ask")
    if someone_else is not None and yes:
        why = (
            f"{someone_else} must do this, so --yes does not confirm it; once they have, "
            f"pass --approve {step_id}"
        )
    elif level is GateLevel.CRITICAL:
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


TRIES = 3  # a mistyped answer asks again, this many times in all, before the gate counts as refused
_NO = ("", "n", "no")


def judge(step_id: str, level: GateLevel, answer: str | None) -> str:
    """yes | no | again: what an answer at the terminal means (again: a typo, ask once more)."""
    if answer is None:
        return "no"  # end of input: nobody is there to answer
    if accepts(step_id, level, answer):
        return "yes"
    return "no" if answer.strip().lower() in _NO else "again"


def retry_hint(step_id: str, level: GateLevel) -> str:
    """What to say after a mistyped answer."""
    if level is GateLevel.CONFIRM:
        return "answer y or n"
    return f"that is not the step id: type {step_id} to go on, or n to stop"


def accepts(step_id: str, level: GateLevel, answer: str | None) -> bool:
    """Whether the typed answer passes the gate."""
    if answer is None:
        return False
    text = answer.strip()
    if level is GateLevel.CONFIRM:
        return text.lower() in ("y", "yes")
    return text == step_id
