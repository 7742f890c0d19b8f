"""Command line: `ratelimitd serve` runs the service, `ratelimitd check` validates configs,
`ratelimitd explain` shows why a request gets its answer, `ratelimitd simulate` replays
traffic against a config on a virtual clock."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

import structlog

from ratelimitd import __version__
from ratelimitd.app import reference_env
from ratelimitd.app.settings import add_serve_arguments, settings_from
from ratelimitd.config.loader import check_paths
from ratelimitd.observe import logs
from ratelimitd.tools import explain, simulate


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ratelimitd", description="Rate limit service for Envoy and Istio."
    )
    parser.add_argument("--version", action="version", version=f"ratelimitd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    # A short usage line: argparse's own lists every flag, burying the error printed below it.
    serve = commands.add_parser(
        "serve", help="run the gRPC and HTTP service", usage="%(prog)s --config PATH [options]"
    )
    add_serve_arguments(serve, environ)
    check = commands.add_parser(
        "check", help="validate config files; print file:line: message per error"
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="config file or directory")
    explain.add_arguments(
        commands.add_parser(
            "explain", help="show which rule each descriptor matches and why; consumes nothing"
        ),
        environ,
    )
    simulate.add_arguments(
        commands.add_parser(
            "simulate", help="replay traffic against a config on a virtual clock; report per rule"
        )
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the `ratelimitd` console script."""
    try:
        return _run(argv, environ)
    except BrokenPipeError:
        # Output piped into `head` and cut short: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
    env = os.environ if environ is None else environ
    reference = reference_env.translate(env)
    # The reference's variables only fill in what RATELIMITD_* leaves unset (translate skips
    # the rest), and flags win over both as over any environment variable.
    env = {**reference.environ, **env}
    parser = build_parser(env)
    args = parser.parse_args(argv)
    if args.command == "check":
        errors = check_paths(args.paths)
        for error in errors:
            print(error)
        if not errors:
            print(f"ok: {', '.join(args.paths)}")
        return 1 if errors else 0
    if args.command == "explain":
        return explain.main(parser, args, env)
    if args.command == "simulate":
        return simulate.run(args)
    if reference.errors:
        parser.error("; ".join(reference.errors))
    settings = settings_from(args, env)
    if not settings.config:
        parser.error("serve needs --config PATH (or RATELIMITD_CONFIG, or RUNTIME_ROOT)")
    logs.configure(settings.log_level, settings.log_format)
    reference.log(settings.to_environment())  # after configure: in the chosen level and format
    # Imported here so that `check` starts without loading grpc and redis.
    from ratelimitd.app.server import serve

    try:
        return asyncio.run(serve(settings))
    except Exception as exc:
        # Unforeseen (the foreseen failures are logged where they happen): one line, and the
        # traceback only for whoever asked for debug output.
        structlog.get_logger(__name__).error(
            "serve_failed",
            error=f"{type(exc).__name__}: {exc}",
            exc_info=settings.log_level == "debug",
        )
        return 1
