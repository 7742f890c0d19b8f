"""Request context for logs, and optional OpenTelemetry tracing.

Every call's `x-request-id` and the trace id of its `traceparent` (W3C Trace Context) are
part of every event logged while answering it (`bind` and the `add_call_context` processor).

With `--tracing otlp` (or `console`, for debugging) and the `otel` extra installed, each
ShouldRateLimit and Authorization/Check call is a span joined to the caller's trace, with its
domain, answer and the time its store call took. The exporter is configured by the usual
OTEL_* variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, ...).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
RLS_SPAN_NAME = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
AUTHZ_SPAN_NAME = "envoy.service.auth.v3.Authorization/Check"


class Exporter(enum.Enum):
    """Where spans go."""

    OFF = "off"
    OTLP = "otlp"  # OTLP over gRPC, to OTEL_EXPORTER_OTLP_ENDPOINT
    CONSOLE = "console"  # one JSON object per line on stdout


class CallContext(NamedTuple):
    """What a call's metadata says about where it comes from."""

    request_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


# Metadata keys read, as both transports see them (lower case).
METADATA_KEYS = ("x-request-id", "traceparent", "tracestate")

# A call's metadata as a transport has it: (key, value) pairs, str (grpc) or bytes (asgi).
Metadata = Sequence[tuple[str | bytes, str | bytes]]
_CALL_METADATA: ContextVar[Metadata | None] = ContextVar("ratelimitd_call", default=None)


def from_pairs(pairs: Metadata) -> CallContext | None:
    """The context in (key, value) metadata pairs (str or bytes), None if there is none."""
    found: dict[str, str] = {}
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name in METADATA_KEYS:
            found[name] = value.decode("latin-1") if isinstance(value, bytes) else value
    if not found:
        return None
    return CallContext(found.get("x-request-id"), found.get("traceparent"), found.get("tracestate"))


def bind(metadata: Metadata | None) -> None:
    """Make the call's metadata the log context of everything the current task logs: its
    request id and trace id are read from it only if an event is logged (add_call_context),
    so a call that logs nothing pays for one context variable."""
    _CALL_METADATA.set(metadata)


def add_call_context(_: object, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: the request id and trace id of the call being answered, if any."""
    context = from_pairs(_CALL_METADATA.get() or ())
    if context is not None:
        if context.request_id:
            event.setdefault("request_id", context.request_id[:128])
        match = _TRACEPARENT.match(context.traceparent or "")
        if match:
            event.setdefault("trace_id", match.group(1))
    return event


class Tracer:
    """Starts and ends spans; does nothing until `configure` turned an exporter on."""

    def __init__(self) -> None:
        self._tracer: Any = None
        self._propagator: Any = None
        self._server_kind: Any = None

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded."""
        return self._tracer is not None

    def configure(self, exporter: Exporter) -> None:
        """Turn tracing on; RuntimeError, saying what to install, without the otel extra."""
        if exporter is Exporter.OFF:
            return
        check(exporter)
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        # Attributes given here beat OTEL_RESOURCE_ATTRIBUTES: only name the service by default.
        service = os.environ.get("OTEL_SERVICE_NAME") or "ratelimitd"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if exporter is Exporter.CONSOLE:
            console = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
            provider.add_span_processor(SimpleSpanProcessor(console))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = provider.get_tracer("ratelimitd")
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = SpanKind.SERVER

    def start(self, metadata: Metadata | None, name: str = RLS_SPAN_NAME) -> Any:
        """A started span for one call (`name`: its RPC), the child of the caller's span if
        its metadata names one."""
        context = from_pairs(metadata or ())
        parent = None
        if context is not None and context.traceparent:
            carrier = {"traceparent": context.traceparent}
            if context.tracestate:
                carrier["tracestate"] = context.tracestate
            parent = self._propagator.extract(carrier)
        return self._tracer.start_span(name, context=parent, kind=self._server_kind)

    @staticmethod
    def end(span: Any, domain: str | None, code: str, store_seconds: float) -> None:
        """Describe the call on its span and end it."""
        span.set_attribute("ratelimit.domain", domain or "")
        span.set_attribute("ratelimit.code", code)
        span.set_attribute("ratelimit.store_ms", round(store_seconds * 1000, 3))
        span.end()


def check(exporter: Exporter) -> None:
    """RuntimeError, saying what to install, if `exporter` needs packages that are missing."""
    if exporter is Exporter.OFF:
        return
    try:
        import opentelemetry.sdk.trace

        if exporter is Exporter.OTLP:
            import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"--tracing {exporter.value} needs OpenTelemetry: pip install 'ratelimitd[otel]'"
        ) from exc


TRACER = Tracer()
