"""The report of `ratelimitd simulate` as text (a summary and a table per rule) or as JSON."""

from __future__ import annotations

from typing import Any

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.core.headers import US_PER_S
from ratelimitd.model.rules import Limit, Rule
from ratelimitd.tools.simulate.replay import Report, RuleStats


def label(rule: Rule) -> str:
    """A rule as the report names it: its name, else its full key (as the metrics do)."""
    text = rule.label
    return f"{text} (shadow)" if rule.shadow_mode else text


def limit_text(limit: Limit) -> str:
    """`10/second` (`100/5 minutes`), with `, burst 20` where the algorithm has a burst
    other than the rate."""
    text = f"{limit.requests_per_unit}/{limit.window_text()}"
    if ALGORITHMS[limit.algorithm].uses_burst and limit.burst != limit.requests_per_unit:
        text += f", burst {limit.burst}"
    return text


def _seconds_or_none(us: int | None) -> float | None:
    return None if us is None else us / US_PER_S


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (`--json`); times in seconds since the start."""
    return {
        "requests": report.requests,
        "admitted": report.admitted,
        "rejected": report.rejected,
        "no_limit": report.no_limit,
        "duration_s": report.duration_us / US_PER_S,
        "first_rejection_s": _seconds_or_none(report.first_rejection_us),
        "max_retry_after_s": report.max_retry_after_s,
        "rules": [_rule_json(s) for s in report.rules],
    }


def _rule_json(stats: RuleStats) -> dict[str, Any]:
    rule = stats.rule
    assert rule.limit is not None  # unlimited rules never reach the store, so have no stats
    return {
        "rule": rule.label,
        "name": rule.name,
        "full_key": rule.full_key,
        "domain": rule.domain,
        "source": None if rule.source is None else str(rule.source),
        "algorithm": rule.limit.algorithm,
        "requests_per_unit": rule.limit.requests_per_unit,
        "unit": rule.limit.unit.name.lower(),
        "unit_multiplier": rule.limit.unit_multiplier,
        "burst": rule.limit.burst,
        "shadow_mode": rule.shadow_mode,
        "offered": stats.offered,
        "admitted": stats.admitted,
        "rejected": stats.rejected,
        "rejected_by_other": stats.rejected_by_other,
        "first_rejection_s": _seconds_or_none(stats.first_rejection_us),
        "max_retry_after_s": stats.max_retry_after_s,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_report(report: Report) -> str:
    """The report as a summary line and a table with one row per rule."""
    summary = (
        f"{_count(report.requests, 'request')} over {report.duration_us / US_PER_S:.3f} s: "
        f"{report.admitted} admitted, {report.rejected} rejected"
    )
    if report.first_rejection_us is not None:
        summary += (
            f" (first at {report.first_rejection_us / US_PER_S:.3f} s, "
            f"max Retry-After {report.max_retry_after_s} s)"
        )
    lines = [summary]
    if report.no_limit:
        what = _count(report.no_limit, "descriptor")
        lines.append(f"{what} without a limit (no rule matched, unlimited or replaced)")
    if not report.rules:
        return "\n".join([*lines, "no request matched a limit"])
    header = (
        "rule",
        "algorithm",
        "limit",
        "offered",
        "admitted",
        "rejected",
        "by other",
        "first rejection",
        "max Retry-After",
    )
    rows: list[tuple[str, ...]] = [header]
    for s in report.rules:
        assert s.rule.limit is not None  # as in _rule_json
        first = s.first_rejection_us
        rows.append(
            (
                label(s.rule),
                s.rule.limit.algorithm,
                limit_text(s.rule.limit),
                str(s.offered),
                str(s.admitted),
                str(s.rejected),
                str(s.rejected_by_other),
                "-" if first is None else f"{first / US_PER_S:.3f} s",
                "-" if s.max_retry_after_s is None else f"{s.max_retry_after_s} s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    # The first three columns are text, the others numbers.
    lines += [
        "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
