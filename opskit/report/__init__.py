"""The morning-after record of a run: a report model from the journal, rendered as Markdown or HTML.

`build_report(run_dir)` reads the journal (and the bridge's traffic samples when the run had a bridge);
`render_markdown` and `render_html` turn the model into a ticket or one self-contained HTML file.
"""

from __future__ import annotations

from opskit.report.build import build_report, find_run_dir
from opskit.report.html import render_html
from opskit.report.markdown import render_markdown
from opskit.report.model import Report, StepRecord, TrafficSeries

__all__ = [
    "Report",
    "StepRecord",
    "TrafficSeries",
    "build_report",
    "find_run_dir",
    "render_html",
    "render_markdown",
]
