"""The bridge's connections over time for the report's chart, and the moments drawn on it.

Source: `runs/<RUN_ID>/traffic-samples.jsonl`, one JSON object a line, appended while the bridge runs:
`{"ts": ISO, "active": N, "residual_clients": N, "total": N}` for a sample and
`{"ts": ISO, "marker": "switch" | "ttl_expiry" | "shutdown", "label": "..."}` for a moment. Steps may also
journal samples as `values.samples` (same keys). Moments not written explicitly are derived from the steps:
the switch is the last `dns.update` before the bridge started, shutdown the `proxy.stop` step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opskit.actions.samples import append_sample
from opskit.report import source
from opskit.report.model import Marker, Sample, StepRecord, TrafficSeries

_LABELS = {"switch": "DNS switch", "ttl_expiry": "old TTL expired", "shutdown": "bridge shut down"}


__all__ = ["append_sample", "parse_ts", "traffic_series"]


def parse_ts(text: str | None) -> datetime | None:
    """An ISO 8601 timestamp (a trailing Z accepted); None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def traffic_series(run_dir: Path, steps: list[StepRecord]) -> TrafficSeries | None:
    """The chart's data, or None when the run had no bridge."""
    rows = source.read_jsonl(run_dir / source.SAMPLES)
    for step in steps:
        journaled = step.values.get("samples")
        if isinstance(journaled, list):
            rows += [r for r in journaled if isinstance(r, dict)]
    samples = sorted(
        (_sample(r) for r in rows if "active" in r and parse_ts(r.get("ts"))), key=lambda s: s.at
    )
    markers = {
        str(r["marker"]): Marker(
            at=str(r["ts"]), label=str(r.get("label") or _LABELS.get(r["marker"], r["marker"]))
        )
        for r in rows
        if r.get("marker") and parse_ts(r.get("ts"))
    }
    for name, marker in _derived_markers(steps).items():
        markers.setdefault(name, marker)
    has_bridge = any(s.uses and s.uses.startswith("proxy.") for s in steps)
    if not samples and not has_bridge:
        return None
    return TrafficSeries(samples=samples, markers=sorted(markers.values(), key=lambda m: m.at))


def _sample(row: dict[str, Any]) -> Sample:
    total = row.get("total")
    return Sample(
        at=str(row["ts"]),
        active=int(row.get("active") or 0),
        residual_clients=int(row.get("residual_clients", row.get("clients_active", 0)) or 0),
        total=int(total) if isinstance(total, int) else None,
    )


def _derived_markers(steps: list[StepRecord]) -> dict[str, Marker]:
    out: dict[str, Marker] = {}
    bridge_at = next((s.started_at for s in steps if s.uses == "proxy.start"), None)
    updates = [
        s
        for s in steps
        if s.uses == "dns.update"
        and s.finished_at
        and (bridge_at is None or s.finished_at <= bridge_at)
    ]
    if updates:
        switch = updates[-1]
        assert switch.finished_at is not None  # noqa: S101 - filtered above
        out["switch"] = Marker(at=switch.finished_at, label=_LABELS["switch"])
        # Caches may keep the old answer for the TTL it had before the switch (dns.update's `before`).
        before = switch.values.get("before")
        ttl = _number(before, "ttl") if isinstance(before, dict) else None
        ttl = ttl if ttl is not None else _number(switch.values, "ttl_s", "ttl")
        at = parse_ts(switch.finished_at)
        if ttl is not None and at is not None:
            expiry = (at + timedelta(seconds=ttl)).isoformat()
            out["ttl_expiry"] = Marker(at=expiry, label=_LABELS["ttl_expiry"])
    stop = next((s for s in steps if s.uses == "proxy.stop" and s.finished_at), None)
    if stop is not None and stop.finished_at:
        out["shutdown"] = Marker(at=stop.finished_at, label=_LABELS["shutdown"])
    return out


def _number(values: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
