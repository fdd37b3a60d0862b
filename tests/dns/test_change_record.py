"""One record of DNS changes, read by every command; a rehearsal simulates its own changes (issue #11.3).

A knot primary (127.0.0.41) serves `sim.test`; the runbook action and the standalone command both change
records there, and `dns check`, `dns plan` and `opskit plan` must all see what either did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.actions.dns_update import DnsUpdate
from opskit.actions.params import Params
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.runbook.helpers import run_id
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY = "127.0.0.41"


@pytest.fixture(scope="module")
def sim() -> Iterator[ZoneLab]:
    """One knot serving sim.test: each test owns one record, all at TTL 3600."""
    records = f"ns1 3600 IN A {PRIMARY}\n" + "\n".join(
        f"{name} 3600 IN A 192.0.2.{i + 10}" for i, name in enumerate(("one", "two", "three"))
    )
    with zone_lab([Auth(PRIMARY, {"sim.test": zone("sim.test", records)}, kind="knot")]) as lab:
        yield lab


def _with(lab: ZoneLab, name: str, values: list[str], ttl: str = "60s") -> dict[str, object]:
    return {
        "server": lab.at(PRIMARY),
        "zone": "sim.test",
        "name": f"{name}.sim.test",
        "set": values,
        "ttl": ttl,
        "tsig_key_file": str(lab.key_file),
        "auth_port": lab.port,
        "propagation_timeout": "10s",
    }


def test_a_runbook_lowering_is_seen_by_dns_check_and_dns_plan(
    opskit: Invoke, sim: ZoneLab, tmp_path: Path
) -> None:
    """After dns.update lowered 3600 -> 60 s in a run, `dns check`, `dns plan` and `plan` wait for 3600 s."""
    action = DnsUpdate.from_params(Params(_with(sim, "one", ["192.0.2.10"])))
    done = action.run(PlainContext(state_dir=tmp_path / "state"))
    assert done.ok, done.summary

    pins = ["--auth-port", str(sim.port), "--nameserver", f"ns1.sim.test={sim.at(PRIMARY)}"]
    check = opskit("dns", "check", "one.sim.test", "--type", "A", *pins, expect=ExitCode.NEGATIVE)
    assert "was lowered from 3600 s" in check.stdout

    switch_at = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = opskit(
        "dns", "plan", "one.sim.test", "--type", "A", "--switch-at", switch_at, *pins, "--json",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip
    assert json.loads(plan.stdout)["feasible"] is False

    gate = {"id": "gate", "uses": "dns.check", "with": _gate(sim, "one")}
    runbook = tmp_path / "gate.yaml"
    runbook.write_text(json.dumps({"name": "gate-only", "steps": [gate]}))
    rehearsed = opskit("plan", str(runbook), "--json", expect=ExitCode.NEGATIVE)
    step = json.loads(rehearsed.stdout)["steps"][0]
    assert 3500 <= step["predicted_wait_s"] <= 3601  # counted from the run's lowering, not from now

    fact = json.loads((tmp_path / "state" / "dns" / "changes.jsonl").read_text().splitlines()[0])
    assert (fact["fact"], fact["previous_ttl"], fact["step"]) == ("dns.ttl_lowered", 3600, "step")


def _gate(lab: ZoneLab, name: str) -> dict[str, object]:
    """A dns.check step that waits up to 2 h for the TTL gate, as the shipped night runbook does."""
    return {
        "name": f"{name}.sim.test",
        "types": ["A"],
        "max_ttl": "5m",
        "nameservers": [f"ns1.sim.test={lab.at(PRIMARY)}"],
        "auth_port": lab.port,
        "wait_until_safe": "2h",
    }


def _runbook(lab: ZoneLab, path: Path) -> Path:
    steps = [
        {"id": "lower", "uses": "dns.update", "with": _with(lab, "two", ["192.0.2.11"])},
        {"id": "gate", "uses": "dns.check", "with": _gate(lab, "two")},
        {"id": "switch", "uses": "dns.update", "with": _with(lab, "two", ["192.0.2.99"], "60s")},
        {
            "id": "drain",
            "uses": "traffic.drained",
            "with": {
                "stats_file": str(path.parent / "no-bridge.json"),
                "quiet": "5s",
                "margin": "0s",
            },
        },
    ]
    path.write_text(json.dumps({"name": "lower-then-switch", "steps": steps}))
    return path


def test_a_rehearsal_switch_counts_from_the_ttl_it_lowered(
    opskit: Invoke, sim: ZoneLab, tmp_path: Path
) -> None:
    """After the simulated lowering and its hour-long gate, the drain is predicted from TTL 60, not 3600."""
    runbook = _runbook(sim, tmp_path / "night.yaml")

    # the gate is not ready before the lowering really happened: the plan says so, and how long it waits
    result = opskit("plan", str(runbook), "--json", expect=ExitCode.NEGATIVE)

    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert "from 192.0.2.11 ttl 3600 to 192.0.2.11 ttl 60" in steps["lower"]["reason"]
    assert 3590 <= steps["gate"]["predicted_wait_s"] <= 3610
    assert "from 192.0.2.11 ttl 60 to 192.0.2.99 ttl 60" in steps["switch"]["reason"]
    assert 55 <= steps["drain"]["predicted_wait_s"] <= 65


def test_resume_dry_run_knows_the_lowering_the_run_made(
    opskit: Invoke, sim: ZoneLab, tmp_path: Path
) -> None:
    """The run lowered the TTL just now and stopped: a switch now drains for the old 3600 s, not 60 s."""
    steps = [
        {"id": "lower", "uses": "dns.update", "with": _with(sim, "three", ["192.0.2.12"])},
        {"id": "hold", "run": f"test -f {tmp_path / 'go'}"},
        {"id": "switch", "uses": "dns.update", "with": _with(sim, "three", ["192.0.2.98"])},
        {
            "id": "drain",
            "uses": "traffic.drained",
            "with": {"stats_file": str(tmp_path / "no-bridge.json"), "quiet": "5s", "margin": "0s"},
        },
    ]
    runbook = tmp_path / "stopped.yaml"
    runbook.write_text(json.dumps({"name": "stopped-after-lowering", "steps": steps}))
    rid = run_id(opskit("run", str(runbook), expect=ExitCode.NEGATIVE).stdout)

    result = opskit("resume", rid, "--dry-run", "--json", expect=ExitCode.OK)

    planned = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert planned["lower"]["status"] == "done"
    assert "from 192.0.2.12 ttl 60 to 192.0.2.98 ttl 60" in planned["switch"]["reason"]
    assert 3500 <= planned["drain"]["predicted_wait_s"] <= 3600
