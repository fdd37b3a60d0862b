"""The runbooks opskit ships are valid, and every step that changes something can be undone or says not."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.errors import ExitCode
from opskit.runbook.model import Kind
from opskit.runbook.validate import load_runbook
from tests.conftest import REPO, Invoke

RUNBOOKS = sorted((REPO / "runbooks").glob("*.yaml"))
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yaml"))
UNDONE_BY_THE_ACTION = {"dns.update", "proxy.start"}  # their undo comes from the journal


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_shipped_runbook_validates(opskit: Invoke, path: Path) -> None:
    """`opskit validate` accepts every shipped runbook."""
    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert result.stdout.startswith("ok:")


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_shipped_playbook_validates_on_its_own(opskit: Invoke, path: Path) -> None:
    """Every shipped playbook is usable on its own: `opskit validate` accepts it and lists its inputs."""
    result = opskit("validate", str(path), expect=ExitCode.OK)

    assert result.stdout.startswith("ok:")
    assert "playbook" in result.stdout


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_every_change_has_an_undo_or_is_irreversible(path: Path) -> None:
    """A mutating step has `undo:`, an action that undoes itself, or `kind: irreversible`."""
    runbook = load_runbook(path)

    missing = [
        s.id
        for s in runbook.steps
        if s.kind is Kind.MUTATE
        and (s.run or s.uses)
        and s.undo is None
        and s.uses not in UNDONE_BY_THE_ACTION
    ]

    assert missing == []


def test_the_night_names_who_acts() -> None:
    """Every step of the night cutover has an owner, and the customer's sysadmin has a manual step."""
    runbook = load_runbook(REPO / "runbooks" / "night-cutover.yaml")

    assert all(s.owner for s in runbook.steps)
    assert any(s.owner == "customer-sysadmin" and s.manual for s in runbook.steps)
