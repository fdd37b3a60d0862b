"""The report as Markdown, for a ticket: what happened, who approved what, what remains."""

from __future__ import annotations

import json
from typing import Any

from opskit.display import display_value
from opskit.durations import format_seconds
from opskit.report.model import Report, StepRecord

_VALUE_MAX = 80
_ICON = {"succeeded": "done", "ok": "done", "failed": "FAILED", "in_doubt": "IN DOUBT"}


def render_markdown(report: Report) -> str:
    """The whole report as one Markdown document."""
    out: list[str] = [f"# Run {report.run_id}: {report.state}", ""]
    out += _summary(report)
    out += _remaining(report)
    out += _steps(report)
    out += _notes(report)
    out += _traffic(report)
    out += ["## Timeline", ""] + [f"- `{_hms(t.at)}` {_md(t.what)}" for t in report.timeline] + [""]
    if report.warnings:
        out += ["## Warnings", ""] + [f"- {_md(w)}" for w in report.warnings] + [""]
    return "\n".join(out).rstrip() + "\n"


def _summary(report: Report) -> list[str]:
    rows = [
        ("Runbook", f"`{report.runbook}`" if report.runbook else "unknown"),
        ("Mode", report.mode or "run"),
        ("Operator", report.operator or "unknown"),
        ("Started", report.started_at or "unknown"),
        ("Finished", report.finished_at or "not finished"),
        ("Duration", format_seconds(report.duration_s) if report.duration_s is not None else "n/a"),
        ("Steps", f"{len(report.done)} done, {len(report.remains)} remaining"),
    ]
    return ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]


def _remaining(report: Report) -> list[str]:
    if not report.remains and not report.resume_command:
        return ["All steps are done.", ""]
    out = ["## What remains", ""]
    out += [f"- [ ] `{step}`" for step in report.remains]
    if report.resume_command:
        out += ["", "To continue from the journal:", "", "```sh", *report.next_steps, "```"]
    return [*out, ""]


def _steps(report: Report) -> list[str]:
    out = ["## Steps", ""]
    owners = report.owners()
    for owner in owners:
        group = [s for s in report.steps if (s.owner or "") == owner]
        if len(owners) > 1:
            out += [f"### Owner: {owner or 'unassigned'}", ""]
        out += [
            "| Step | Status | Approved by | Duration | Attempts | Captured values |",
            "|---|---|---|---|---|---|",
        ]
        out += [_step_row(s) for s in group]
        out.append("")
    details = [s for s in report.steps if s.summary or s.output_tail]
    if details:
        out += ["### Step details", ""]
        for s in details:
            out.append(
                f"- **{_md(s.id)}**: {_md(s.summary)}" if s.summary else f"- **{_md(s.id)}**"
            )
            if s.output_tail:
                out += ["  ```", *(f"  {line}" for line in s.output_tail), "  ```"]
        out.append("")
    return out


def _step_row(s: StepRecord) -> str:
    approvals = ", ".join(
        f"{a.operator} ({a.level}{'' if a.approved else ', refused'})" for a in s.approvals
    )
    duration = format_seconds(s.duration_s) if s.duration_s is not None else ""
    title = f"`{s.id}`" + (f" {s.title}" if s.title != s.id else "")
    return (
        f"| {_cell(title)} | {_ICON.get(s.status, s.status)} | {_cell(approvals)} | {duration} "
        f"| {s.attempts} | {_cell(values_text(s.values))} |"
    )


def _notes(report: Report) -> list[str]:
    if not report.notes:
        return []
    out = ["## Notes", ""]
    for note in report.notes:
        who = f" ({note.author})" if note.author else ""
        out.append(f"- `{_hms(note.at)}`{who}: {_md(note.text)}")
    return [*out, ""]


def _traffic(report: Report) -> list[str]:
    series = report.traffic
    if series is None:
        return []
    out = ["## Bridge traffic", ""]
    if series.samples:
        peak = max(series.samples, key=lambda s: s.active)
        last = series.samples[-1]
        out.append(
            f"{len(series.samples)} samples; peak {peak.active} active connections at {_hms(peak.at)}; "
            f"at the end {last.active} active, {last.residual_clients} residual clients."
        )
    else:
        out.append("The bridge ran but no samples were recorded.")
    out += ["", *(f"- {m.label}: `{_hms(m.at)}`" for m in series.markers), ""]
    out.append("The HTML report (`--format html`) draws these as a chart.")
    return [*out, ""]


def values_text(values: dict[str, Any]) -> str:
    """Captured values in one short line (long values cut; the chart samples left out)."""
    shown = {k: v for k, v in values.items() if k != "samples"}
    if not shown:
        return ""
    parts = []
    for key, raw in shown.items():
        value = display_value(key, raw)
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) <= _VALUE_MAX:  # long structures stay in the journal and `--format json`
            parts.append(f"{key}={text}")
    return "; ".join(parts)


def _hms(ts: str | None) -> str:
    """HH:MM:SS of an ISO timestamp (the date is in the header)."""
    if not ts or "T" not in ts:
        return ts or "?"
    return ts.split("T", 1)[1][:8]


def _md(text: str) -> str:
    return text.replace("\n", " ").strip()


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|")
