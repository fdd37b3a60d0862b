"""A dns.update cut off by kill -9 during its propagation wait is still rolled back to the old records.

knot (127.0.0.37) takes the signed update; nsd (127.0.0.38), the zone's second server, never gets it, so
the step sits in its propagation wait until opskit is killed.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.runbook.helpers import events, run_id, wait_for
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY, SECONDARY = "127.0.0.37", "127.0.0.38"
OLD, NEW = "192.0.2.50", "192.0.2.51"
Spawn = Callable[..., subprocess.Popen[str]]


def _zone(web: str = OLD) -> str:
    records = f"ns1 3600 IN A {PRIMARY}\nns2 3600 IN A {SECONDARY}\nweb 3600 IN A {web}"
    return zone("cut.test", records, ns=("ns1.cut.test", "ns2.cut.test"))


@pytest.fixture
def lab() -> Iterator[ZoneLab]:
    """The primary and a secondary that never receives the change."""
    with zone_lab(
        [
            Auth(PRIMARY, {"cut.test": _zone()}, kind="knot"),
            Auth(SECONDARY, {"cut.test": _zone()}),
        ]
    ) as running:
        yield running


def _runbook(lab: ZoneLab, tmp_path: Path) -> Path:
    """One idempotent dns.update step (as in playbooks/dns-switch.yaml) that waits up to 60 s."""
    step = {
        "id": "switch",
        "uses": "dns.update",
        "idempotent": True,
        "with": {
            "server": lab.at(PRIMARY),
            "zone": "cut.test",
            "name": "web.cut.test",
            "set": [NEW],
            "tsig_key_file": str(lab.key_file),
            "auth_port": lab.port,
            "propagation_timeout": "60s",
        },
    }
    path = tmp_path / "switch.yaml"
    path.write_text(json.dumps({"name": "cut-switch", "steps": [step]}))
    return path


def _primary_serves(lab: ZoneLab) -> list[str]:
    query = dns.message.make_query("web.cut.test.", dns.rdatatype.A)
    answer = dns.query.tcp(query, PRIMARY, port=lab.port, timeout=3)
    return sorted(rr.to_text() for rrset in answer.answer for rr in rrset)


def _killed_mid_wait(
    opskit_proc: Spawn, lab: ZoneLab, tmp_path: Path, sig: signal.Signals = signal.SIGKILL
) -> str:
    """Start the run, kill it once the primary serves the change (the wait has begun): its run id."""
    proc = opskit_proc("run", str(_runbook(lab, tmp_path)))
    wait_for(lambda: _primary_serves(lab) == [NEW], timeout_s=30, what="update on the primary")
    proc.send_signal(sig)
    proc.communicate(timeout=20)
    assert proc.returncode == (-sig if sig == signal.SIGKILL else ExitCode.INTERRUPTED)
    runs = tmp_path / "state" / "runs"
    return next(p.name for p in runs.iterdir())


def test_kill_during_propagation_wait_rolls_back_to_the_old_records(
    opskit: Invoke, opskit_proc: Spawn, lab: ZoneLab, tmp_path: Path
) -> None:
    """kill -9 of `opskit run` while dns.update waits for a secondary: `opskit rollback --yes` puts the
    ORIGINAL address back on the primary (the step's undo data was journaled before the update)."""
    rid = _killed_mid_wait(opskit_proc, lab, tmp_path)
    journal = events(tmp_path / "state", rid)
    assert not any(e["event"] == "step_finished" for e in journal)  # cut off before its result
    ready = [e["undo"]["before"] for e in journal if e["event"] == "step_undo_ready"]
    assert ready == [{"values": [OLD], "ttl": 3600}]
    assert f"opskit rollback {rid}" in opskit("status", rid, expect=ExitCode.OK).stdout

    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [OLD]


def test_resume_after_kill_then_rollback_restores_the_original_records(
    opskit: Invoke, opskit_proc: Spawn, lab: ZoneLab, tmp_path: Path
) -> None:
    """kill -9 mid-wait, the secondary catches up, `resume` re-runs the switch (reading the NEW address as
    "before"): rollback still restores the address from before the first attempt."""
    rid = _killed_mid_wait(opskit_proc, lab, tmp_path)
    lab.rewrite(SECONDARY, "cut.test", _zone(NEW))

    opskit("resume", rid, "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [NEW]
    lab.rewrite(SECONDARY, "cut.test", _zone())  # the secondary follows the rollback too
    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [OLD]


def test_rollback_of_a_refused_update_has_nothing_to_restore(
    opskit: Invoke, lab: ZoneLab, tmp_path: Path
) -> None:
    """The primary refuses the update (wrong TSIG secret) after its undo data was journaled: rollback
    exits 0 saying there is nothing to restore, instead of failing to "restore" with the same bad key."""
    bad_key = tmp_path / "bad.key"
    bad_key.write_text(
        lab.key_file.read_text().replace('secret "', 'secret "AAAA', 1), encoding="utf-8"
    )
    runbook = _runbook(lab, tmp_path)
    runbook.write_text(runbook.read_text().replace(str(lab.key_file), str(bad_key)))
    ran = opskit("run", str(runbook), expect=ExitCode.NEGATIVE)
    assert _primary_serves(lab) == [OLD]

    done = opskit("rollback", run_id(ran.stdout), "--yes", expect=ExitCode.OK)
    assert "nothing to restore" in done.stdout + done.stderr
    assert _primary_serves(lab) == [OLD]


def test_sigterm_during_propagation_wait_rolls_back_to_the_old_records(
    opskit: Invoke, opskit_proc: Spawn, lab: ZoneLab, tmp_path: Path
) -> None:
    """SIGTERM during the propagation wait exits 130 with the step in doubt; rollback restores OLD."""
    rid = _killed_mid_wait(opskit_proc, lab, tmp_path, signal.SIGTERM)

    opskit("rollback", rid, "--yes", expect=ExitCode.OK)
    assert _primary_serves(lab) == [OLD]
