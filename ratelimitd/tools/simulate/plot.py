"""`ratelimitd simulate --plot`: per rule, requests offered and admitted over time, as a PNG.

Needs matplotlib (`pip install 'ratelimitd[plot]'`). Draws on a Figure of its own with the Agg
canvas, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ratelimitd.core.headers import US_PER_S
from ratelimitd.tools.simulate.bins import binned
from ratelimitd.tools.simulate.replay import Report
from ratelimitd.tools.simulate.report import label, limit_text

_PANEL_HEIGHT_IN = 2.4
_WIDTH_IN = 10.0
_OFFERED_COLOR = "#e8a0a0"  # what shows of it above the admitted bars was not admitted
_ADMITTED_COLOR = "#3f8f5f"


def plot(report: Report, path: str, bin_us: int) -> None:
    """Write a PNG to `path`: one panel per rule, the requests per second offered to it and
    admitted, in bins of `bin_us`, with the rule's sustained rate as a dashed line."""
    panels = max(1, len(report.rules))
    figure = Figure(figsize=(_WIDTH_IN, 0.8 + _PANEL_HEIGHT_IN * panels), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    bins = report.duration_us // bin_us + 1
    edges = [i * bin_us / US_PER_S for i in range(bins + 1)]
    per_second = US_PER_S / bin_us
    bin_text = f"{bin_us / US_PER_S:g} s"
    figure.suptitle(
        f"{report.requests} requests: {report.admitted} admitted, {report.rejected} rejected"
        f" (per-second rates in bins of {bin_text})"
    )
    if not report.rules:
        axes[0].text(0.5, 0.5, "no request matched a limit", ha="center", va="center")
    for ax, stats in zip(axes, report.rules, strict=False):
        limit = stats.rule.limit
        assert limit is not None  # unlimited rules never reach the store, so have no stats
        offered = [n * per_second for n in binned(stats.offered_at, bin_us, bins)]
        admitted = [n * per_second for n in binned(stats.admitted_at, bin_us, bins)]
        ax.stairs(offered, edges, fill=True, color=_OFFERED_COLOR, label="offered")
        ax.stairs(admitted, edges, fill=True, color=_ADMITTED_COLOR, label="admitted")
        ax.axhline(
            limit.requests_per_unit / limit.window_seconds,
            color="black",
            linestyle="--",
            linewidth=1,
            label="sustained rate",
        )
        ax.set_title(
            f"{label(stats.rule)}: {limit.algorithm} {limit_text(limit)} | "
            f"{stats.offered} offered, {stats.admitted} admitted, {stats.rejected} rejected, "
            f"{stats.rejected_by_other} by another limit",
            loc="left",
            fontsize=10,
        )
        ax.set_ylabel("requests/s")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds since the start")
    figure.savefig(path, format="png", dpi=100)
