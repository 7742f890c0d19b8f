"""Command line: `ratelimitd serve` runs the service, `ratelimitd check` validates configs,
`ratelimitd explain` shows why a request gets its answer, `ratelimitd simulate` replays
traffic against a config on a virtual clock."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from ratelimitd import __version__
from ratelimitd.app import build, reference_env
from ratelimitd.app.settings import Settings, add_serve_arguments, settings_from
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import check_files, load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.validation import validate
from ratelimitd.model.messages import Request
from ratelimitd.model.quota import BucketId, Demand
from ratelimitd.model.rules import Config
from ratelimitd.observe import logs
from ratelimitd.tools import explain, quota_explain, simulate
from ratelimitd.tools.request_flags import DESCRIPTOR_SYNTAX, add_request_flags, bucket_argument

if TYPE_CHECKING:
    from ratelimitd.storage.demand import DemandStore


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
    _add_explain_arguments(
        commands.add_parser(
            "explain",
            help="show which rule each descriptor matches and why; consumes nothing",
            usage="%(prog)s --domain DOMAIN --descriptor KEY=VALUE[,KEY=VALUE...] "
            "[--descriptor ...] [--hits N] [--json] [serve flags]\n"
            "       %(prog)s --domain DOMAIN --bucket KEY=VALUE[,KEY=VALUE...] [--json] "
            "[serve flags]",
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
        errors, warnings = check_files(args.paths)
        for error in errors:
            print(error)
        for warning in warnings:
            print(f"warning: {warning}")
        if not errors:
            print(f"ok: {', '.join(args.paths)}")
        return 1 if errors else 0
    if args.command == "explain":
        return _explain(parser, args, env)
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


# `ratelimitd explain`: here rather than in tools.explain, which stays free of settings.


def _add_explain_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """The request to explain, then every flag of `serve` under a heading of its own (the same
    flags and environment give the same keys and defaults)."""
    parser.add_argument("--domain", required=True, help="the request's domain")
    add_request_flags(parser, "the request")
    parser.add_argument(
        "--bucket",
        type=bucket_argument,
        metavar=DESCRIPTOR_SYNTAX,
        help="instead of a request: a rate_limit_quota bucket_id, to show the rule it "
        "resolves to and the fleet's split of it as the store holds it now",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_serve_arguments(
        parser, environ, heading="serve flags (the same keys and defaults as the server's)"
    )


def _explain(
    parser: argparse.ArgumentParser, args: argparse.Namespace, env: Mapping[str, str]
) -> int:
    """Run `explain`: 0 when explained, 1 when the config is invalid or the store failed."""
    settings = settings_from(args, env)
    if not settings.config:
        parser.error("explain needs --config PATH (or RATELIMITD_CONFIG)")
    try:
        config = load_config(settings.config, build.defaults(settings))
    except InvalidConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    if args.bucket is not None:
        if args.descriptor:
            parser.error("--bucket explains a bucket, --descriptor a request: give one of them")
        return _explain_bucket(args, settings, config)
    request = Request(args.domain, tuple(args.descriptor), args.hits)
    # Imported here so that the other subcommands start without loading the Redis client.
    from ratelimitd.storage.factory import build_store

    try:
        validate(request, settings.request_limits())
        # No circuit breaker: one request, which must see the store's own error.
        store = build_store(
            settings.redis_url,
            timeout=settings.redis_timeout,
            memory_max_keys=settings.memory_max_keys,
        )
    except ValueError as exc:  # an invalid request (InvalidRequestError) or --redis-url
        parser.error(str(exc))
    if settings.redis_url is None:
        print(
            "note: no --redis-url: the counters are this process's own in-memory ones, all "
            "fresh; POST /explain asks a running server",
            file=sys.stderr,
        )
    engine = build.build_engine(settings, config, store)
    found = asyncio.run(_explain_and_close(engine, request))
    sys.stdout.write(
        json.dumps(explain.to_json(found), indent=2) + "\n"
        if args.json
        else explain.render_text(found)
    )
    return 1 if found.store_error is not None else 0


def _explain_bucket(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    """`explain --bucket`: 0 when explained, 1 when the demand store failed."""
    from ratelimitd.core.quota_service import demand_key
    from ratelimitd.storage.base import StoreError
    from ratelimitd.storage.clock import wall_clock_us
    from ratelimitd.storage.demand import build_demand_store

    bucket: BucketId = args.bucket
    store = build_demand_store(settings.redis_url, settings.redis_timeout)
    if store is None or settings.redis_url is None:
        print("note: no single --redis-url: no Envoy's demand to show", file=sys.stderr)
    demands: dict[str, Demand] = {}
    if store is not None:
        try:
            demands = asyncio.run(_demands_and_close(store, demand_key(args.domain, bucket)))
        except StoreError as exc:
            print(f"demand store unavailable: {exc}", file=sys.stderr)
            return 1
    found = quota_explain.explain_bucket(config, args.domain, bucket, demands, wall_clock_us())
    sys.stdout.write(
        json.dumps(quota_explain.bucket_json(found), indent=2) + "\n"
        if args.json
        else quota_explain.render_bucket_text(found)
    )
    return 0


async def _demands_and_close(store: DemandStore, key: str) -> dict[str, Demand]:
    try:
        return await store.demands(key)
    finally:
        await store.close()


async def _explain_and_close(engine: Engine, request: Request) -> explain.Explanation:
    try:
        return await explain.explain(engine, request)
    finally:
        await engine.store.close()
