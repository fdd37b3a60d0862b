"""The dns.* runbook actions: `with:` validated at load time, and dns.check as the gate of a dry-run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.actions import load
from opskit.actions.base import ActionKind
from opskit.actions.params import ParamError, Params
from tests.dns.context import PlainContext
from tests.servers.dns_lab import DnsLab


def test_registry_loads_the_dns_actions_with_their_kinds() -> None:
    """dns.check and dns.wait are probes (they run in a dry-run); dns.update mutates."""
    assert load("dns.check").kind is ActionKind.PROBE
    assert load("dns.wait").kind is ActionKind.PROBE
    assert load("dns.update").kind is ActionKind.MUTATE


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        ("dns.check", {"name": "a.example", "nameservers": ["127.0.0.1:x"]}, "nameservers"),
        ("dns.check", {"name": "a.example", "max_tll": "5m"}, "max_tll"),
        ("dns.check", {"name": "a.example", "lowered_at": "2026-01-01T00:00:00Z"}, "lowered_at"),
        ("dns.wait", {"name": "a.example"}, "expect"),
        (
            "dns.update",
            {"server": "h:1", "zone": "z", "name": "a.z", "set": "1.2.3.4", "tsig_secret": "s"},
            "tsig_name",
        ),
    ],
)
def test_bad_with_values_name_their_key(name: str, raw: dict, key: str) -> None:
    """A typo or a missing companion key is reported with the key, before anything runs."""
    with pytest.raises(ParamError) as caught:
        load(name).from_params(Params(raw))

    assert caught.value.key == key


def test_update_action_never_shows_its_tsig_secret() -> None:
    """A dns.update step printed in a traceback or a log line shows no TSIG secret."""
    action = load("dns.update").from_params(
        Params(
            {
                "server": "127.0.0.1:53",
                "zone": "example.test",
                "name": "a.example.test",
                "set": ["192.0.2.1"],
                "tsig_name": "lab",
                "tsig_secret": "c2VrcmV0LXNlY3JldA==",
            }
        )
    )

    assert "c2VrcmV0LXNlY3JldA==" not in repr(action)


@pytest.mark.dns
def test_check_action_fails_the_step_on_a_long_ttl(lab: DnsLab, tmp_path: Path) -> None:
    """dns.check on a 24 h TTL fails with the fix in its summary and detail."""
    action = load("dns.check").from_params(
        Params(
            {
                "names": ["legacy.example.test"],
                "types": ["A"],
                "nameservers": [f"ns1.example.test={lab.ns1}", f"ns2.example.test={lab.ns2}"],
            }
        )
    )

    result = action.rehearse(PlainContext(state_dir=tmp_path, dry_run=True))

    assert not result.ok
    assert not result.blocked
    assert result.summary.startswith("NOT READY: legacy.example.test A")
    assert "from 86400 to 300 now" in result.detail
    assert result.values["ready"] is False


@pytest.mark.dns
def test_check_action_reads_the_lowering_fact_of_the_run(lab: DnsLab, tmp_path: Path) -> None:
    """A dns.ttl_lowered fact journaled earlier in the run gives the safe time."""
    lowered = datetime.now(UTC) - timedelta(minutes=10)
    ctx = PlainContext(
        state_dir=tmp_path,
        known_facts={
            "dns.ttl_lowered": [
                {
                    "name": "dispatch.example.test.",
                    "type": "A",
                    "lowered_at": lowered.isoformat(),
                    "previous_ttl": 300,
                }
            ]
        },
    )
    action = load("dns.check").from_params(
        Params(
            {
                "name": "dispatch.example.test",
                "types": "A",
                "nameservers": [lab.ns1, lab.ns2],
            }
        )
    )

    result = action.run(ctx)

    assert result.ok
    assert result.values["safe_after"] == (lowered + timedelta(seconds=300)).isoformat()


@pytest.mark.dns
def test_check_action_waits_out_a_recent_lowering_then_passes(lab: DnsLab, tmp_path: Path) -> None:
    """With wait_until_safe, a TTL lowered seconds ago makes the gate count down, then say READY."""
    lowered = datetime.now(UTC) - timedelta(seconds=298)  # the old 300 s TTL runs out in about 2 s
    ctx = PlainContext(
        state_dir=tmp_path,
        known_facts={
            "dns.ttl_lowered": [
                {
                    "name": "dispatch.example.test.",
                    "type": "A",
                    "lowered_at": lowered.isoformat(),
                    "previous_ttl": 300,
                }
            ]
        },
    )
    params = {"name": "dispatch.example.test", "types": "A", "nameservers": [lab.ns1, lab.ns2]}
    waiting = load("dns.check").from_params(Params({**params, "wait_until_safe": "30s"}))

    rehearsal = waiting.rehearse(ctx)
    assert not rehearsal.ok
    assert rehearsal.predicted_wait_s is not None
    assert 1 <= rehearsal.predicted_wait_s <= 4

    result = waiting.run(ctx)

    assert result.ok, result.summary
    assert ctx.progress_lines
    assert "until caches can have forgotten the old TTL" in ctx.progress_lines[0]
    too_short = load("dns.check").from_params(Params({**params, "wait_until_safe": "0s"}))
    assert too_short.rehearse(ctx).predicted_wait_s is None


def test_check_action_blocks_when_no_server_answers(silent_server: str, tmp_path: Path) -> None:
    """No server answering makes the step blocked (exit 3 for the run), not merely failed."""
    action = load("dns.check").from_params(
        Params(
            {
                "name": "dispatch.example.test",
                "nameservers": [silent_server],
                "query_timeout": "200ms",
                "retries": 0,
            }
        )
    )

    result = action.run(PlainContext(state_dir=tmp_path))

    assert result.blocked
    assert not result.ok
    assert silent_server in result.summary
    assert "timed out" in result.summary
