"""The report as one self-contained HTML file: no network needed, the chart drawn by plotly (inlined)."""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import jinja2
import plotly.graph_objects as go

from opskit.durations import format_seconds
from opskit.report.markdown import values_text
from opskit.report.model import Report, TrafficSeries
from opskit.report.traffic import parse_ts


def render_html(report: Report) -> str:
    """The whole report as one HTML document with the plotly library inlined."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["seconds"] = lambda s: format_seconds(s) if s is not None else ""
    env.filters["values"] = values_text
    template = env.from_string(
        resources.files("opskit.report").joinpath("report.html.j2").read_text(encoding="utf-8")
    )
    chart = traffic_chart(report.traffic) if report.traffic and report.traffic.samples else None
    return template.render(report=report, chart=chart)


def traffic_chart(series: TrafficSeries) -> str:
    """The chart as an HTML fragment: a plotly figure with its library inlined (offline)."""
    times = [parse_ts(s.at) for s in series.samples]
    fig = go.Figure()
    active = [s.active for s in series.samples]
    residual = [s.residual_clients for s in series.samples]
    # Counts change in steps; residual clients drawn last, thicker and in its own colour, so it stays
    # visible where it equals the active connections (one connection per client is the usual case).
    fig.add_trace(
        go.Scatter(
            x=times,
            y=active,
            name="active connections",
            mode="lines",
            line={"shape": "hv", "color": "#1f77b4", "width": 2},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=residual,
            name="residual clients",
            mode="lines+markers",
            line={"shape": "hv", "color": "#d62728", "width": 3, "dash": "dash"},
            marker={"size": 5},
        )
    )
    for i, marker in enumerate(series.markers):
        at = parse_ts(marker.at)
        if at is None:
            continue
        # Shapes and annotations rather than add_vline: add_vline's label fails on date axes.
        fig.add_shape(
            type="line",
            x0=at,
            x1=at,
            xref="x",
            y0=0,
            y1=1,
            yref="paper",
            line={"dash": "dash", "width": 1},
        )
        fig.add_annotation(
            x=at,
            y=1 - 0.08 * (i % 3),
            xref="x",
            yref="paper",
            text=marker.label,
            showarrow=False,
            xanchor="left",
        )
    fig.update_layout(
        title="Connections through the bridge",
        xaxis_title="time (UTC)",
        yaxis_title="count",
        height=420,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h"},
    )
    top = max([*active, *residual, 1])
    fig.update_yaxes(  # whole numbers only: there is no half a connection
        rangemode="tozero", tick0=0, dtick=max(1, math.ceil(top / 8)), tickformat="d"
    )
    config: dict[str, Any] = {"displaylogo": False, "responsive": True}
    return str(
        fig.to_html(full_html=False, include_plotlyjs=True, config=config, div_id="traffic-chart")
    )
