"""`ratelimitd simulate --plot`: per rule, requests offered and admitted over time, as a PNG.

Needs matplotlib (`pip install 'ratelimitd[plot]'`). Draws on a Figure of its own with the Agg
canvas, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ratelimitd.core.headers import US_PER_S
from ratelimitd.tools.simulate.bins import binned
from ratelimitd.tools.simulate.replay import Report, RuleStats
from ratelimitd.tools.simulate.report import label, limit_text

_PANEL_HEIGHT_IN = 2.4
_ZOOM_HEIGHT_IN = 1.8
_WIDTH_IN = 10.0
_OFFERED_COLOR = "#e8a0a0"  # what shows of it above the admitted bars was not admitted
_ADMITTED_COLOR = "#3f8f5f"
# The zoomed panel's ceiling, as a multiple of the rule's usual level: the larger of its
# sustained rate and the median of its non-empty offered bins.
_ZOOM_FACTOR = 2.0


def plot(report: Report, path: str, bin_us: int) -> None:
    """Write `figure(report, bin_us)` to `path` as a PNG."""
    figure(report, bin_us).savefig(path, format="png", dpi=100)


@dataclass(frozen=True)
class _RuleRates:
    """One rule's requests per second in each bin, and the top of its zoomed panel (None
    without one)."""

    stats: RuleStats
    offered: list[float]
    admitted: list[float]
    zoom: float | None


def figure(report: Report, bin_us: int) -> Figure:
    """Per rule, a panel of the requests per second offered to it and admitted, in bins of
    `bin_us`, with the rule's sustained rate as a dashed line; and below it, when a burst
    dwarfs the rest, a second panel zoomed to the rule's usual level, where the steady phases
    show offered against admitted."""
    bins = report.duration_us // bin_us + 1
    per_second = US_PER_S / bin_us
    rules = []
    for stats in report.rules:
        offered = [n * per_second for n in binned(stats.offered_at, bin_us, bins)]
        admitted = [n * per_second for n in binned(stats.admitted_at, bin_us, bins)]
        rules.append(_RuleRates(stats, offered, admitted, _zoom_ceiling(stats, offered)))
    heights = [_PANEL_HEIGHT_IN] if not rules else []
    for rule in rules:
        heights += [_PANEL_HEIGHT_IN] if rule.zoom is None else [_PANEL_HEIGHT_IN, _ZOOM_HEIGHT_IN]
    drawn = Figure(figsize=(_WIDTH_IN, 0.8 + sum(heights)), layout="constrained")
    FigureCanvasAgg(drawn)
    axes = drawn.subplots(len(heights), 1, sharex=True, squeeze=False, height_ratios=heights)
    drawn.suptitle(
        f"{report.requests} requests: {report.admitted} admitted, {report.rejected} rejected"
        f" (per-second rates in bins of {bin_us / US_PER_S:g} s)"
    )
    if not rules:
        axes[0, 0].text(0.5, 0.5, "no request matched a limit", ha="center", va="center")
    edges = [i * bin_us / US_PER_S for i in range(bins + 1)]
    panels = iter(axes[:, 0])
    for rule in rules:
        _draw_rule(panels, edges, rule)
    axes[-1, 0].set_xlabel("seconds since the start")
    return drawn


def _draw_rule(panels: Iterator[Axes], edges: Sequence[float], rule: _RuleRates) -> None:
    """Draw `rule` on the next panel of `panels`, and its zoomed panel on the one after."""
    ax = next(panels)
    _draw_rates(ax, rule, edges)
    ax.set_title(_title(rule.stats), loc="left", fontsize=10)
    if rule.zoom is not None:
        ax = next(panels)
        _draw_rates(ax, rule, edges, legend=False)
        ax.set_ylim(0, rule.zoom)
        ax.set_title(
            f"{label(rule.stats.rule)}, zoomed to 0-{rule.zoom:g} requests/s (taller bins cut off)",
            loc="left",
            fontsize=9,
        )


def _zoom_ceiling(stats: RuleStats, offered: Sequence[float]) -> float | None:
    """The top of a rule's zoomed panel, or None when every bin fits under it (the panel
    would repeat the one above)."""
    sustained = _sustained_rate(stats)
    busy = [rate for rate in offered if rate > 0]
    usual = max(sustained, statistics.median(busy)) if busy else sustained
    ceiling = _ZOOM_FACTOR * usual
    return ceiling if max(offered, default=0.0) > ceiling else None


def _sustained_rate(stats: RuleStats) -> float:
    limit = stats.rule.limit
    assert limit is not None  # unlimited rules never reach the store, so have no stats
    return limit.requests_per_unit / limit.window_seconds


def _draw_rates(ax: Axes, rule: _RuleRates, edges: Sequence[float], *, legend: bool = True) -> None:
    """Offered and admitted rates as filled stairs over the sustained rate's dashed line."""
    ax.stairs(rule.offered, edges, fill=True, color=_OFFERED_COLOR, label="offered")
    ax.stairs(rule.admitted, edges, fill=True, color=_ADMITTED_COLOR, label="admitted")
    sustained = _sustained_rate(rule.stats)
    ax.axhline(sustained, color="black", linestyle="--", linewidth=1, label="sustained rate")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    if legend:
        ax.legend(loc="upper right", fontsize=8)


def _title(stats: RuleStats) -> str:
    limit = stats.rule.limit
    assert limit is not None
    return (
        f"{label(stats.rule)}: {limit.algorithm} {limit_text(limit)} | "
        f"{stats.offered} offered, {stats.admitted} admitted, {stats.rejected} rejected, "
        f"{stats.rejected_by_other} by another limit"
    )
