"""`ratelimitd simulate`: replay traffic against a config to see what its limits do before
deploying it.

Requests come from a traffic file or from synthetic patterns. Each is decided by the real
Engine on a MemoryStore whose FakeClock is set to the request's time, so nothing sleeps and an
hour of traffic takes only as long as its decisions. The report says, per rule, how many
requests reached it, how many were admitted and rejected, when it first rejected one and the
longest Retry-After it asked for.

Traffic file: JSON lines, one request per line (blank lines are skipped), for example

    {"t": 0.25, "domain": "example", "descriptors": [[["tenant", "acme"], ["route", "/a"]]]}

- `t` (required): seconds since the start of the simulation, >= 0. Lines are replayed in
  time order, file order among equal times.
- `domain`: the request's domain; may be left out when `--domain` is given.
- `descriptors` (required): a list of descriptors, each a list of `[key, value]` pairs or, as
  in protobuf JSON, `{"entries": [{"key": k, "value": v}], "hits_addend": n}`.
- `hits` (or `hits_addend`, `hitsAddend`): the request's hits_addend; 0 (default) means 1.
- `count`: this many identical requests at `t` (default 1).

So the body of a `POST /json` request plus a `t` is a valid line.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from ratelimitd.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine, Plan
from ratelimitd.core.headers import US_PER_S, HeaderMode, retry_after_s, whole_seconds
from ratelimitd.core.validation import DEFAULT_REQUEST_LIMITS, validate
from ratelimitd.model.messages import (
    Code,
    Decision,
    Descriptor,
    InvalidRequestError,
    Request,
    Result,
)
from ratelimitd.model.rules import Config, Defaults, Limit, Rule
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore

T = TypeVar("T")

# t=0 is this Unix time, a multiple of every unit (the 30-day month and 365-day year too), so
# fixed and sliding windows start at t=0 and at every whole unit after it.
START_US = 1_324_512_000 * US_PER_S
# Requests one pattern or one traffic line may make: a typo must not exhaust memory or time.
MAX_REQUESTS = 10_000_000
# The automatic plot bin keeps a plot to at most this many bins; --bin to this many.
MAX_BINS = 100
MAX_PLOT_BINS = 10_000
# Bin widths the automatic choice picks from (seconds); past the last, whole days.
_BIN_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
_DAY_US = 86_400 * US_PER_S
_HITS_FIELDS = ("hits", "hits_addend", "hitsAddend")  # ours, then protobuf JSON's spellings
_LINE_FIELDS = ("t", "domain", "descriptors", *_HITS_FIELDS, "count")
_DESCRIPTOR_FIELDS = ("entries", "hits_addend", "hitsAddend")
_ENTRY_FIELDS = ("key", "value")
_PATTERNS = {
    "steady": ("RATE", "DURATION"),
    "ramp": ("FROM", "TO", "DURATION"),
    "burst": ("COUNT",),
}
_PATTERN_SYNTAX = "steady:RATE:DURATION, ramp:FROM:TO:DURATION or burst:COUNT, optionally @START"
# A rule's own verdict was "over", whether or not that rejected the request (shadow mode).
_OVER = frozenset({Result.OVER_LIMIT, Result.SHADOW_OVER_LIMIT})


class SimulateError(Exception):
    """Simulate cannot go on; the message says why (with file and line for a traffic file)."""


class Arrival(NamedTuple):
    """`repeat` requests at `t_us` microseconds after the start."""

    t_us: int
    repeat: int


class Event(NamedTuple):
    """`request`, `repeat` times at `t_us` microseconds after the start."""

    t_us: int
    request: Request
    repeat: int = 1


# -- input ------------------------------------------------------------------------------------


def _whole(value: object, what: str, minimum: int, maximum: int = 2**32 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulateError(f"{what} must be a whole number, not {value!r}")
    if not minimum <= value <= maximum:
        raise SimulateError(f"{what} must be between {minimum} and {maximum}, not {value}")
    return value


def _non_negative(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SimulateError(f"{what} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise SimulateError(f"{what} must be a finite number >= 0, not {value}")
    return float(value)


def _number(text: str) -> int | float | str:
    """A pattern argument as a number where it is one (the checks then say what is wrong)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _arrival_s(i: int, rate: float, accel: float) -> float:
    """When the expected count rate*t + accel*t**2 reaches i: the root of that quadratic, in
    the form that stays exact for accel == 0 (i / rate) and never cancels."""
    return 2 * i / (rate + math.sqrt(rate * rate + 4 * accel * i)) if i else 0.0


def parse_pattern(spec: str) -> list[Arrival]:
    """The arrivals of a synthetic pattern, from t=0 or from `@START` seconds:

    - `steady:RATE:DURATION`: RATE requests per second, evenly spaced, for DURATION seconds;
    - `ramp:FROM:TO:DURATION`: the same with a rate changing linearly from FROM to TO;
    - `burst:COUNT`: COUNT requests at one instant.
    """
    body, at, start_text = spec.partition("@")
    kind, *args = body.split(":")
    names = _PATTERNS.get(kind)
    if names is None or len(args) != len(names) or (at and not start_text):
        raise SimulateError(f"bad pattern {spec!r}: expected {_PATTERN_SYNTAX}")
    values = dict(zip(names, map(_number, args), strict=True))

    def arg(name: str) -> float:
        return _non_negative(values[name], f"pattern {spec!r}: {name}")

    start = _non_negative(_number(start_text or "0"), f"pattern {spec!r}: START")
    start_us = round(start * US_PER_S)
    if kind == "burst":
        count = _whole(values["COUNT"], f"pattern {spec!r}: COUNT", 1, MAX_REQUESTS)
        return [Arrival(start_us, count)]
    rate_from, rate_to = (arg("RATE"),) * 2 if kind == "steady" else (arg("FROM"), arg("TO"))
    duration = arg("DURATION")
    # A hair over the product: 2.3/s for 100 s (229.99999999999997) makes 230 requests.
    total = math.floor((rate_from + rate_to) / 2 * duration + 1e-9)
    if total < 1:
        raise SimulateError(f"pattern {spec!r} makes no requests")
    if total > MAX_REQUESTS:
        raise SimulateError(f"pattern {spec!r} makes {total} requests; at most {MAX_REQUESTS}")
    accel = (rate_to - rate_from) / (2 * duration)
    return [
        Arrival(start_us + round(_arrival_s(i, rate_from, accel) * US_PER_S), 1)
        for i in range(total)
    ]


def parse_descriptor(spec: str) -> Descriptor:
    """`KEY=VALUE[,KEY=VALUE...]` as a descriptor (a value cannot contain a comma)."""
    entries = []
    for item in spec.split(","):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise SimulateError(f"bad descriptor {spec!r}: expected KEY=VALUE[,KEY=VALUE...]")
        entries.append((key, value))
    return Descriptor(tuple(entries))


def _request(domain: str, descriptors: tuple[Descriptor, ...], hits: int) -> Request:
    """A request the engine will take: checked now, so that a bad one is reported where it
    was written rather than in the middle of the replay."""
    request = Request(domain, descriptors, hits)
    try:
        validate(request, DEFAULT_REQUEST_LIMITS)
    except InvalidRequestError as exc:
        raise SimulateError(str(exc)) from None
    return request


def _check_fields(value: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for name in value:
        if name not in allowed:
            near = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(allowed)})"
            raise SimulateError(f"{where}unknown field '{name}'{hint}")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise SimulateError(f"{what} must be a string, not {value!r}")
    return value


def _descriptor(value: object, where: str) -> Descriptor:
    """A traffic line's descriptor: [[key, value], ...] or protobuf JSON's {"entries": ...}."""
    pairs, hits = value, None
    if isinstance(value, dict):
        _check_fields(value, _DESCRIPTOR_FIELDS, f"{where}: ")
        pairs = value.get("entries")
        if not isinstance(pairs, list):
            raise SimulateError(f"{where}: 'entries' must be a list of {{key, value}} objects")
        cost = next((value[name] for name in _DESCRIPTOR_FIELDS[1:] if name in value), None)
        hits = None if cost is None else _whole(cost, f"{where}: 'hits_addend'", 0)
    elif not isinstance(pairs, list):
        raise SimulateError(
            f"{where} must be a list of [key, value] pairs or an object with 'entries'"
        )
    entries = []
    for j, pair in enumerate(pairs):
        what = f"{where} entry {j}"
        if isinstance(pair, dict):
            _check_fields(pair, _ENTRY_FIELDS, f"{what}: ")
            key, text = pair.get("key"), pair.get("value", "")  # protobuf JSON omits ""
        elif isinstance(pair, list) and len(pair) == 2:
            key, text = pair
        else:
            raise SimulateError(f"{what} must be a [key, value] pair")
        entries.append((_text(key, f"{what} key"), _text(text, f"{what} value")))
    return Descriptor(tuple(entries), None, hits)


def _event(text: str, default_domain: str | None) -> Event:
    """One traffic line as an event."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimulateError(f"not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(line, dict):
        raise SimulateError("expected a JSON object")
    _check_fields(line, _LINE_FIELDS, "")
    if "t" not in line:
        raise SimulateError("missing 't' (seconds since the start)")
    t_us = round(_non_negative(line["t"], "'t'") * US_PER_S)
    domain = line.get("domain", default_domain)
    if domain is None:
        raise SimulateError("missing 'domain' (or give --domain)")
    descriptors = line.get("descriptors")
    if not isinstance(descriptors, list):
        raise SimulateError("'descriptors' must be a list of descriptors")
    hits = next((line[name] for name in _HITS_FIELDS if name in line), 0)
    request = _request(
        _text(domain, "'domain'"),
        tuple(_descriptor(d, f"descriptor {i}") for i, d in enumerate(descriptors)),
        _whole(hits, "'hits'", 0),
    )
    return Event(t_us, request, _whole(line.get("count", 1), "'count'", 1, MAX_REQUESTS))


def parse_traffic(lines: Iterable[bytes], name: str, default_domain: str | None) -> list[Event]:
    """The events of a traffic file's lines, in file order; errors name `name` and the line."""
    events = []
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").strip()
            if text:
                events.append(_event(text, default_domain))
        except (SimulateError, UnicodeDecodeError) as exc:
            raise SimulateError(f"{name}:{number}: {exc}") from None
    return events


def read_traffic(path: str, default_domain: str | None) -> list[Event]:
    """The events of the traffic file at `path` (`-`: standard input)."""
    if path == "-":
        return parse_traffic(sys.stdin.buffer, "<stdin>", default_domain)
    try:
        with open(path, "rb") as file:
            return parse_traffic(file, path, default_domain)
    except OSError as exc:
        raise SimulateError(f"{path}: cannot read the traffic file: {exc.strerror}") from None


# -- replay -----------------------------------------------------------------------------------


@dataclass
class RuleStats:
    """What one rule saw. A request with two descriptors matching the rule counts twice."""

    rule: Rule
    offered_at: list[int] = field(default_factory=list)  # us since the start, one per hit
    admitted_at: list[int] = field(default_factory=list)  # ... of those the request passed
    rejected: int = 0  # hits this rule judged over its limit
    first_rejection_us: int | None = None
    max_retry_after_s: int | None = None  # the longest Retry-After this rule alone asked for

    @property
    def offered(self) -> int:
        """Hits on this rule."""
        return len(self.offered_at)

    @property
    def admitted(self) -> int:
        """Hits whose request was admitted (so this rule's counter was charged)."""
        return len(self.admitted_at)

    @property
    def rejected_by_other(self) -> int:
        """Hits this rule would admit, in requests another limit rejected."""
        return self.offered - self.admitted - self.rejected


@dataclass
class Report:
    """The outcome of a replay: totals, and per rule in config order."""

    requests: int = 0
    admitted: int = 0
    no_limit: int = 0  # descriptors without a limit: no rule, unlimited, replaced, unknown domain
    duration_us: int = 0  # the time of the last request
    first_rejection_us: int | None = None
    max_retry_after_s: int | None = None  # the longest Retry-After header sent
    rules: list[RuleStats] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Requests answered OVER_LIMIT."""
        return self.requests - self.admitted


class _Recorder:
    """Adds decisions to a Report."""

    def __init__(self) -> None:
        self.report = Report()
        self.stats: dict[Rule, RuleStats] = {}

    def add(self, t_us: int, decision: Decision) -> None:
        report = self.report
        report.requests += 1
        admitted = decision.code is Code.OK
        if admitted:
            report.admitted += 1
        else:
            report.max_retry_after_s = max(
                report.max_retry_after_s or 0, retry_after_s(decision.statuses)
            )
            if report.first_rejection_us is None:
                report.first_rejection_us = t_us
        for status in decision.statuses:
            rule = status.rule
            if rule is None:
                report.no_limit += 1
                continue
            stats = self.stats.get(rule)
            if stats is None:
                stats = self.stats[rule] = RuleStats(rule)
            stats.offered_at.append(t_us)
            if status.result in _OVER:
                stats.rejected += 1
                if stats.first_rejection_us is None:
                    stats.first_rejection_us = t_us
                # As Retry-After is computed, but for this status alone (a shadow one is OK).
                wait = max(1, whole_seconds(status.reset_us or 0))
                stats.max_retry_after_s = max(stats.max_retry_after_s or 0, wait)
            elif admitted:
                stats.admitted_at.append(t_us)


async def _replay(engine: Engine, clock: FakeClock, events: Sequence[Event]) -> _Recorder:
    recorder = _Recorder()
    # Planning (matching and key building) costs as much as deciding; requests repeat a lot.
    plans: dict[Request, Plan] = {}
    for event in events:
        clock.now_us = START_US + event.t_us
        plan = plans.get(event.request)
        if plan is None:
            plan = plans[event.request] = engine.plan(event.request)
        for _ in range(event.repeat):
            recorder.add(event.t_us, await engine.decide(plan))
    return recorder


def simulate(config: Config, events: Iterable[Event]) -> Report:
    """Replay `events` in time order against `config` on a fresh memory store."""
    ordered = sorted(events, key=attrgetter("t_us"))
    clock = FakeClock(START_US)
    # Only Retry-After is read, and the engine adds it in every header mode.
    engine = Engine(config, MemoryStore(clock), header_mode=HeaderMode.NONE)
    recorder = asyncio.run(_replay(engine, clock, ordered))
    report = recorder.report
    report.duration_us = ordered[-1].t_us if ordered else 0
    order = {rule: i for i, rule in enumerate(config.rules)}
    # Envoy's limit overrides are not in the config: after its rules, as first met.
    report.rules = sorted(recorder.stats.values(), key=lambda s: order.get(s.rule, len(order)))
    return report


# -- output -----------------------------------------------------------------------------------


def label(rule: Rule) -> str:
    """A rule as the report names it: its name, else its full key (as the metrics do)."""
    text = rule.name or rule.full_key
    return f"{text} (shadow)" if rule.shadow_mode else text


def limit_text(limit: Limit) -> str:
    """`10/second`, with `, burst 20` where the algorithm has a burst other than the rate."""
    text = f"{limit.requests_per_unit}/{limit.unit.name.lower()}"
    if ALGORITHMS[limit.algorithm].uses_burst and limit.burst != limit.requests_per_unit:
        text += f", burst {limit.burst}"
    return text


def auto_bin_us(duration_us: int) -> int:
    """A plot bin: one second, or the shortest round width keeping to MAX_BINS bins."""
    for seconds in _BIN_WIDTHS_S:
        if duration_us // (seconds * US_PER_S) < MAX_BINS:
            return seconds * US_PER_S
    return math.ceil((duration_us + 1) / (MAX_BINS * _DAY_US)) * _DAY_US


def binned(times_us: Iterable[int], bin_us: int, bins: int) -> list[int]:
    """How many of `times_us` fall in each of `bins` bins of `bin_us` from 0."""
    counts = [0] * bins
    for t_us in times_us:
        counts[t_us // bin_us] += 1
    return counts


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
        "rule": rule.name or rule.full_key,
        "name": rule.name,
        "full_key": rule.full_key,
        "domain": rule.domain,
        "source": None if rule.source is None else str(rule.source),
        "algorithm": rule.limit.algorithm,
        "requests_per_unit": rule.limit.requests_per_unit,
        "unit": rule.limit.unit.name.lower(),
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


# -- command ----------------------------------------------------------------------------------


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as an argparse type: its SimulateError becomes a usage error (exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except SimulateError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _hits(text: str) -> int:
    return _whole(_number(text), "--hits", 0)


def _bin_us(text: str) -> int:
    bin_us = round(_non_negative(_number(text), "--bin") * US_PER_S)
    if bin_us < 1:
        raise SimulateError("--bin must be at least one microsecond")
    return bin_us


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `ratelimitd simulate`."""
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="PATH",
        help="config file or directory, as for serve; repeatable",
    )
    parser.add_argument(
        "--traffic", metavar="FILE", help="requests as JSON lines ('-': standard input)"
    )
    parser.add_argument(
        "--pattern",
        action="append",
        default=[],
        type=_argument(parse_pattern),
        metavar="SPEC",
        help=f"synthetic requests: {_PATTERN_SYNTAX} (seconds); repeatable, overlaid",
    )
    parser.add_argument(
        "--domain", help="domain of --pattern requests, and of traffic lines without one"
    )
    parser.add_argument(
        "--descriptor",
        action="append",
        default=[],
        type=_argument(parse_descriptor),
        metavar="KEY=VALUE[,KEY=VALUE...]",
        help="a descriptor of every --pattern request; repeatable",
    )
    parser.add_argument(
        "--hits",
        type=_argument(_hits),
        default=0,
        metavar="N",
        help="hits_addend of every --pattern request (default 0, which counts as 1)",
    )
    parser.add_argument(
        "--default-algorithm",
        choices=sorted(ALGORITHMS),
        default=DEFAULT_ALGORITHM,
        help="algorithm of rules without one, as for serve (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="draw requests offered and admitted over time per rule (needs the plot extra)",
    )
    parser.add_argument(
        "--bin",
        type=_argument(_bin_us),
        metavar="SECONDS",
        help=f"width of a plot bin (default 1 s, wider to keep to {MAX_BINS} bins)",
    )


def _events(args: argparse.Namespace) -> list[Event]:
    events = [] if args.traffic is None else read_traffic(args.traffic, args.domain)
    if args.pattern:
        if args.domain is None or not args.descriptor:
            raise SimulateError("--pattern needs --domain and at least one --descriptor")
        try:
            request = _request(args.domain, tuple(args.descriptor), args.hits)
        except SimulateError as exc:
            raise SimulateError(f"--domain/--descriptor: {exc}") from None
        events += [Event(a.t_us, request, a.repeat) for arrivals in args.pattern for a in arrivals]
    elif args.descriptor or args.hits:
        raise SimulateError("--descriptor and --hits describe --pattern requests; add --pattern")
    if not events:
        raise SimulateError("no requests to replay: give --traffic FILE or --pattern SPEC")
    return events


def _plotter(path: str, chosen_bin_us: int | None, duration_us: int) -> Callable[[Report], None]:
    """The --plot step, checked before the replay (which may take a while): matplotlib is
    installed and the bins are not too many."""
    try:
        from ratelimitd.tools.simulate_plot import plot  # matplotlib is optional
    except ImportError as exc:
        raise SimulateError(
            f"--plot needs matplotlib ({exc}); install it with: pip install 'ratelimitd[plot]'"
        ) from None
    bin_us = chosen_bin_us or auto_bin_us(duration_us)
    bins = duration_us // bin_us + 1
    if bins > MAX_PLOT_BINS:
        raise SimulateError(
            f"--bin {bin_us / US_PER_S:g} makes {bins} bins of the traffic; at most {MAX_PLOT_BINS}"
        )
    return lambda report: plot(report, path, bin_us)


def run(args: argparse.Namespace) -> int:
    """Run `ratelimitd simulate`: 0 when done, 2 on bad input (every problem on stderr)."""
    plot = None
    try:
        events = _events(args)
        config = load_config(args.config, Defaults(algorithm=args.default_algorithm))
        if args.plot is not None:
            plot = _plotter(args.plot, args.bin, max(e.t_us for e in events))
        elif args.bin is not None:
            raise SimulateError("--bin sets the width of the bins of --plot; add --plot")
    except InvalidConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 2
    except SimulateError as exc:
        print(f"ratelimitd simulate: {exc}", file=sys.stderr)
        return 2
    report = simulate(config, events)
    print(json.dumps(report_json(report), indent=2) if args.json else format_report(report))
    if plot is not None:
        try:
            plot(report)
        except OSError as exc:
            print(f"ratelimitd simulate: cannot write {args.plot}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
