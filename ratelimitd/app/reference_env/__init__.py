"""envoyproxy/ratelimit's environment variables, read as aliases of ours, so that a deployment
of the reference starts with its environment unchanged (docs/migrating.md has the full table).

`translate` turns the reference's variables into the RATELIMITD_* variables they mean. Ours
win: a reference variable is read only while the RATELIMITD_* variable it maps to is unset, and
a flag wins over both. A value that cannot be honoured without changing what clients or
operators get (a unix socket, memcache, xDS config, custom header names) is an error naming
the variable; a variable whose job ratelimitd does another way, or not at all (pool sizes,
statsd, the debug port), is reported as accepted or ignored. Empty values count as unset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from ratelimitd.app.reference_env.reader import InvalidError, Reader, Translation
from ratelimitd.app.reference_env.redis_url import translate_redis
from ratelimitd.app.reference_env.translators import (
    translate_grpc_address,
    translate_grpc_tls,
    translate_http_address,
    translate_response_headers,
    translate_runtime,
    translate_tracing,
)
from ratelimitd.app.reference_env.values import PARSERS
from ratelimitd.app.reference_env.variables import (
    ACCEPTED,
    IGNORED,
    IGNORED_FAMILIES,
    SIMPLE,
    VARIABLES,
)

__all__ = ["VARIABLES", "Translation", "translate"]


def translate(environ: Mapping[str, str]) -> Translation:
    """What the reference's variables in `environ` mean here (see the module docstring);
    every unusable value is reported in `errors`, none raises."""
    reader = Reader(environ)
    groups = (
        translate_redis,
        translate_runtime,
        translate_grpc_address,
        translate_http_address,
        translate_grpc_tls,
        translate_response_headers,
        translate_tracing,
    )
    steps: list[Callable[[], None]] = [functools.partial(group, reader) for group in groups]
    steps += [
        functools.partial(reader.simple, name, SIMPLE[name], parse)
        for name, parse in PARSERS.items()
    ]
    for step in steps:
        try:
            step()
        except InvalidError as exc:
            reader.result.errors.append(str(exc))
    for table, into in ((ACCEPTED, reader.result.accepted), (IGNORED, reader.result.ignored)):
        into.update((name, why) for name, why in table.items() if reader.value(name))
    for prefix, why in IGNORED_FAMILIES.items():
        reader.result.ignored.update((name, why) for name in reader.named(prefix))
    return reader.result
