"""A dns.update that changed the primary but failed on a lagging secondary is still rolled back.

knot (127.0.0.33) takes the signed update; nsd (127.0.0.34), the zone's second server, never gets it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import run_id
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY, SECONDARY = "127.0.0.33", "127.0.0.34"
OLD, NEW = "192.0.2.40", "192.0.2.41"


def _zone() -> str:
    records = f"ns1 3600 IN A {PRIMARY}\nns2 3600 IN A {SECONDARY}\nweb 3600 IN A {OLD}"
    return zone("undo.test", records, ns=("ns1.undo.test", "ns2.undo.test"))


@pytest.fixture
def lab() -> Iterator[ZoneLab]:
    """The primary and a secondary that never receives the change."""
    with zone_lab(
        [
            Auth(PRIMARY, {"undo.test": _zone()}, kind="knot"),
            Auth(SECONDARY, {"undo.test": _zone()}),
        ]
    ) as running:
        yield running


def _switch(lab: ZoneLab) -> dict[str, object]:
    """The dns.update step that switches web.undo.test to NEW, each server given 1 s to serve it."""
    return {
        "id": "switch",
        "uses": "dns.update",
        "with": {
            "server": lab.at(PRIMARY),
            "zone": "undo.test",
            "name": "web.undo.test",
            "set": [NEW],
            "tsig_key_file": str(lab.key_file),
            "auth_port": lab.port,
            "propagation_timeout": "1s",
        },
    }


def _primary_serves(lab: ZoneLab) -> list[str]:
    query = dns.message.make_query("web.undo.test.", dns.rdatatype.A)
    answer = dns.query.tcp(query, PRIMARY, port=lab.port, timeout=3)
    return sorted(rr.to_text() for rrset in answer.answer for rr in rrset)


def test_rollback_restores_a_switch_that_failed_only_on_a_secondary(
    opskit: Invoke, lab: ZoneLab, tmp_path: Path
) -> None:
    """The switch step fails (a secondary never serves it) yet the primary serves the new address:
    `opskit rollback` puts the old one back instead of leaving the switch in effect."""
    runbook = tmp_path / "switch.yaml"
    runbook.write_text(json.dumps({"name": "switch-only", "steps": [_switch(lab)]}))

    ran = opskit("run", str(runbook), expect=ExitCode.NEGATIVE)
    assert _primary_serves(lab) == [NEW]

    opskit("rollback", run_id(ran.stdout), "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [OLD]


def test_rollback_after_a_resumed_switch_restores_the_original_records(
    opskit: Invoke, lab: ZoneLab, tmp_path: Path
) -> None:
    """The switch failed on a lagging secondary, the secondary caught up and `resume` ran the switch
    again (it then found the new address already there): rollback still puts back the address from
    before the first attempt, not the one the re-run found."""
    runbook = tmp_path / "switch.yaml"
    runbook.write_text(json.dumps({"name": "switch-only", "steps": [_switch(lab)]}))
    ran = opskit("run", str(runbook), expect=ExitCode.NEGATIVE)
    rid = run_id(ran.stdout)
    lab.rewrite(
        SECONDARY, "undo.test", _zone().replace(f"web 3600 IN A {OLD}", f"web 3600 IN A {NEW}")
    )

    opskit("resume", rid, expect=ExitCode.OK)
    lab.rewrite(SECONDARY, "undo.test", _zone())  # the secondary will follow the rollback too
    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [OLD]
