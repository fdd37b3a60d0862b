"""Bad input to `dns check` is exit 2 with one line naming the flag, never a verdict (issue #12.11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_lab import DnsLab

pytestmark = pytest.mark.dns


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_empty_name_is_bad_input(opskit: Invoke, lab: DnsLab) -> None:
    """An empty NAME (a blank template, say) is exit 2, not a check of the root zone."""
    result = opskit("dns", "check", "", *lab.pins, expect=ExitCode.BAD_INPUT)

    assert "NAME: empty name" in _one_line(result.stderr)
    assert result.stdout == ""


def _command(name: str) -> list[str]:
    if name == "plan":
        later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ["dns", "plan", "--switch-at", later]
    return ["dns", "check"]


@pytest.mark.parametrize("command", ["check", "plan"])
def test_changes_outside_the_chain_is_bad_input(opskit: Invoke, lab: DnsLab, command: str) -> None:
    """--changes naming a name that is no link of the chain is exit 2, listing the chain's links."""
    result = opskit(
        *_command(command), "www.example.test", "--type", "A", "--changes", "dispach.example.test",
        *lab.pins,
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    line = _one_line(result.stderr)
    assert "--changes dispach.example.test: not a link of the chain checked" in line
    assert "www.example.test -> edge.example.test -> dispatch.example.test" in line


@pytest.mark.parametrize("command", ["check", "plan"])
def test_lowered_at_in_the_future_is_bad_input(opskit: Invoke, lab: DnsLab, command: str) -> None:
    """A lowering time in the future cannot be evidence: exit 2 before any server is asked."""
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    result = opskit(
        *_command(command), "dispatch.example.test", "--lowered-at", later, "--previous-ttl", "1h",
        *lab.pins,
        expect=ExitCode.BAD_INPUT,
    )  # fmt: skip

    assert f"--lowered-at {later}: in the future" in _one_line(result.stderr)
    assert result.stdout == ""
