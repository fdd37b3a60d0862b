"""A hand-written journal of a night with a bridge, as the engine writes it (until a real run is used)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2026, 11, 24, 2, 0, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def write_journal(run_dir: Path, *, finished: bool = True, leaked: str = "s3cr3t-pw") -> Path:
    """A run of five steps; unfinished runs stop in the middle of `traffic-drained`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    events = [
        {
            "ts": ts(0),
            "event": "run_started",
            "run_id": run_dir.name,
            "runbook": "runbooks/night-cutover.yaml",
            "mode": "run",
            "operator": "alice",
            "vars": {"db_pw": "***"},
            "steps": [
                {"id": "ttl-gate", "owner": "us"},
                {"id": "cutover", "owner": "us"},
                {"id": "switch-dns", "owner": "customer-sysadmin"},
                {"id": "bridge", "owner": "us"},
                {"id": "traffic-drained", "owner": "us"},
                {"id": "bridge-stop", "owner": "us"},
            ],
        },
        {
            "ts": ts(1),
            "event": "step_started",
            "step": "ttl-gate",
            "attempt": 1,
            "command": "dns.check {}",
            "kind": "probe",
            "owner": "us",
        },
        {
            "ts": ts(2),
            "event": "step_finished",
            "step": "ttl-gate",
            "status": "succeeded",
            "rc": 0,
            "attempts": 2,
            "duration_s": 1.0,
            "summary": "READY: dispatch.night.test A ttl 300 s",
            "values": {"ttl_s": 300, "ready": True},
        },
        {
            "ts": ts(3),
            "event": "gate",
            "step": "cutover",
            "level": "critical",
            "operator": "alice",
            "approved": True,
        },
        {"ts": ts(3), "event": "step_started", "step": "cutover", "attempt": 1, "owner": "us"},
        {
            "ts": ts(4),
            "event": "output",
            "step": "cutover",
            "stream": "stdout",
            "line": f"syncing with password {leaked}",
        },
        {
            "ts": ts(5),
            "event": "step_finished",
            "step": "cutover",
            "status": "succeeded",
            "rc": 0,
            "attempts": 1,
            "duration_s": 2.0,
            "values": {"synced_rows": 1200},
        },
        {
            "ts": ts(6),
            "event": "step_started",
            "step": "switch-dns",
            "attempt": 1,
            "command": "dns.update {}",
            "owner": "customer-sysadmin",
        },
        {
            "ts": ts(7),
            "event": "step_finished",
            "step": "switch-dns",
            "status": "succeeded",
            "rc": 0,
            "attempts": 1,
            "duration_s": 1.0,
            "values": {"ttl_s": 300},
        },
        {
            "ts": ts(8),
            "event": "step_started",
            "step": "bridge",
            "attempt": 1,
            "command": "proxy.start {}",
        },
        {
            "ts": ts(9),
            "event": "step_finished",
            "step": "bridge",
            "status": "succeeded",
            "rc": 0,
            "attempts": 1,
            "duration_s": 0.5,
        },
        {
            "ts": ts(10),
            "event": "note",
            "operator": "alice",
            "text": "db synced, waiting for the client to switch DNS",
        },
        {
            "ts": ts(11),
            "event": "step_started",
            "step": "traffic-drained",
            "attempt": 1,
            "command": "traffic.drained {}",
        },
    ]
    if finished:
        events += [
            {
                "ts": ts(40),
                "event": "step_finished",
                "step": "traffic-drained",
                "status": "succeeded",
                "rc": 0,
                "attempts": 1,
                "duration_s": 29.0,
                "summary": "safe to shut down",
            },
            {
                "ts": ts(41),
                "event": "step_started",
                "step": "bridge-stop",
                "attempt": 1,
                "command": "proxy.stop {}",
            },
            {
                "ts": ts(42),
                "event": "step_finished",
                "step": "bridge-stop",
                "status": "succeeded",
                "rc": 0,
                "attempts": 1,
                "duration_s": 1.0,
            },
            {"ts": ts(43), "event": "run_finished", "state": "succeeded"},
        ]
    journal = run_dir / "journal.jsonl"
    journal.write_text("".join(json.dumps(e) + "\n" for e in events))
    samples = [
        {
            "ts": ts(9 + i),
            "active": max(0, 6 - i // 4),
            "residual_clients": max(0, 4 - i // 6),
            "total": 10 + i,
        }
        for i in range(32)
    ]
    samples.append({"ts": ts(37), "marker": "ttl_expiry", "label": "old TTL expired"})
    (run_dir / "traffic-samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return run_dir
