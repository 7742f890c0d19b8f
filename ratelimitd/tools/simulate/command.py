"""The `ratelimitd simulate` command: its flags, and the run from them to the printed report
(and the plot)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TypeVar

from ratelimitd.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.headers import US_PER_S
from ratelimitd.model.rules import Defaults
from ratelimitd.tools.request_flags import add_request_flags
from ratelimitd.tools.simulate.bins import MAX_BINS, MAX_PLOT_BINS, auto_bin_us
from ratelimitd.tools.simulate.replay import Report, simulate
from ratelimitd.tools.simulate.report import format_report, report_json
from ratelimitd.tools.simulate.traffic import (
    PATTERN_SYNTAX,
    Event,
    SimulateError,
    checked_request,
    non_negative,
    number,
    parse_pattern,
    read_traffic,
)

T = TypeVar("T")


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as an argparse type: its SimulateError becomes a usage error (exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except SimulateError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _bin_us(text: str) -> int:
    bin_us = round(non_negative(number(text), "--bin") * US_PER_S)
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
        help=f"synthetic requests: {PATTERN_SYNTAX} (seconds); repeatable, overlaid",
    )
    parser.add_argument(
        "--domain", help="domain of --pattern requests, and of traffic lines without one"
    )
    add_request_flags(parser, "every --pattern request")
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
            request = checked_request(args.domain, tuple(args.descriptor), args.hits)
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
        from ratelimitd.tools.simulate.plot import plot  # matplotlib is optional
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
