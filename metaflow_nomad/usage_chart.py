"""The run's usage as a page people look at: per step, a bar for what it asked of
Nomad and one for what it used, for memory and for CPU.

Plain HTML with inline SVG, no script and nothing fetched, so it shows the same
in Metaflow's card viewer, a saved file and a headless browser.  Bars are drawn
with whole pixels and flat colours, and each pair carries its numbers as data
attributes: what a browser draws can be checked against the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from metaflow_nomad.usage_report import HEADROOM, RunUsage, StepUsage

REQUESTED_COLOUR = "#b4bfcc"
USED_COLOUR = "#1f6fd1"
# The bars' drawing area: a value equal to the chart's largest is this wide.
BAR_AREA_PX = 480
LABEL_PX = 130
BAR_PX = 14
ROW_PX = 46


@dataclass(frozen=True)
class ChartSpec:
    """One chart: which numbers of a row it draws, and how it writes them."""

    name: str
    title: str
    requested: Callable[[StepUsage], float | None]
    used: Callable[[StepUsage], float | None]
    suggested: Callable[[StepUsage], float | None]
    unit: str
    decimals: int


CHARTS = (
    ChartSpec(
        "memory",
        "Memory (MB): requested, and the peak RSS Nomad measured",
        lambda row: row.requested_memory_mb,
        lambda row: row.peak_memory_mb,
        lambda row: row.suggested_memory_mb,
        "MB",
        0,
    ),
    ChartSpec(
        "cpu",
        "CPU (cores): requested, and the peak Nomad measured",
        lambda row: row.requested_cpu_cores,
        lambda row: row.peak_cpu_cores,
        lambda row: row.suggested_cpu_cores,
        "cores",
        2,
    ),
)


def bar_px(value: float | None, scale: float) -> int:
    """The drawn length of ``value`` on a chart whose largest value is ``scale``."""
    if not value or not scale:
        return 0
    return max(1, round(value / scale * BAR_AREA_PX))


def _format(value: float | None, chart: ChartSpec) -> str:
    if value is None:
        return "-"
    return f"{value:,.{chart.decimals}f}"


def _bar(y: int, length: int, colour: str, label: str) -> str:
    rect = ""
    if length:
        rect = f'<rect x="{LABEL_PX}" y="{y}" width="{length}" height="{BAR_PX}" fill="{colour}"/>'
    text_x = LABEL_PX + length + 6
    return f'{rect}<text x="{text_x}" y="{y + BAR_PX - 2}" class="value">{escape(label)}</text>'


def _pair(row: StepUsage, chart: ChartSpec, y: int, scale: float) -> str:
    requested, used = chart.requested(row), chart.used(row)
    used_label = (
        f"used {_format(used, chart)} {chart.unit}"
        if used is not None
        else "ended before Nomad's first sample"
    )
    requested_label = (
        f"asked {_format(requested, chart)} {chart.unit}"
        if requested is not None
        else "no request recorded"
    )
    suggested = chart.suggested(row)
    if suggested is not None:
        used_label += f" (suggest {_format(suggested, chart)})"
    return (
        f'<g class="bar-pair" data-chart="{chart.name}" data-step="{escape(row.step)}" '
        f'data-requested="{"" if requested is None else requested}" '
        f'data-used="{"" if used is None else used}" '
        f'data-requested-px="{bar_px(requested, scale)}" data-used-px="{bar_px(used, scale)}">'
        f'<text x="0" y="{y + BAR_PX + 6}" class="step">{escape(row.step)}</text>'
        + _bar(y, bar_px(requested, scale), REQUESTED_COLOUR, requested_label)
        + _bar(y + BAR_PX + 4, bar_px(used, scale), USED_COLOUR, used_label)
        + "</g>"
    )


def chart_svg(usage: RunUsage, chart: ChartSpec) -> str:
    """One chart, every step on one scale (its largest request or use)."""
    values = [v for row in usage.steps for v in (chart.requested(row), chart.used(row)) if v]
    scale = max(values, default=0.0)
    width = LABEL_PX + BAR_AREA_PX + 230
    height = ROW_PX * len(usage.steps) + 8
    pairs = "".join(_pair(row, chart, 4 + i * ROW_PX, scale) for i, row in enumerate(usage.steps))
    return (
        f"<h2>{escape(chart.title)}</h2>"
        f'<svg class="chart" data-chart="{chart.name}" width="{width}" height="{height}" '
        f'shape-rendering="crispEdges" xmlns="http://www.w3.org/2000/svg">{pairs}</svg>'
    )


STYLE = """
body { font-family: sans-serif; margin: 16px; color: #1d2733; background: #fff; }
h1 { font-size: 18px; } h2 { font-size: 14px; margin: 18px 0 4px; }
text { font-size: 12px; fill: #1d2733; } text.step { font-weight: bold; }
.key span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
p { font-size: 12px; }
"""


def usage_page(usage: RunUsage) -> str:
    """The whole page: a title, the key, one chart for memory and one for CPU."""
    if not usage.steps:
        body = "<p>No step of this run has Nomad usage records yet.</p>"
    else:
        body = "".join(chart_svg(usage, chart) for chart in CHARTS)
    others = ""
    if usage.not_on_nomad:
        others = f"<p>Not run on Nomad: {escape(', '.join(usage.not_on_nomad))}.</p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Nomad usage of {escape(usage.pathspec)}</title><style>{STYLE}</style></head>"
        f"<body><h1>What the steps of {escape(usage.pathspec)} asked of Nomad and used</h1>"
        f'<div class="key"><span style="background:{REQUESTED_COLOUR}"></span>requested'
        f'<span style="background:{USED_COLOUR}"></span>peak used (over every task and '
        f"attempt)</div>{body}"
        f"<p>A suggestion is the peak plus {HEADROOM - 1:.0%}, rounded up.</p>{others}"
        "</body></html>"
    )
