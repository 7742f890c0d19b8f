"""Transport-free request and decision messages: what transports decode into and encode from.

They mirror the RLS v3 protobuf messages but carry no protobuf types, so the engine never
depends on a wire format. They are NamedTuples: immutable, and several times cheaper to
create than frozen dataclasses, which matters on the per-request path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple

from ratelimitd.model.rules import Rule, Unit

UNLIMITED_REMAINING = 2**32 - 1


class Code(enum.IntEnum):
    """A decision; the values are the wire enum's."""

    OK = 1
    OVER_LIMIT = 2


class Result(enum.StrEnum):
    """What happened to one limited descriptor, for metrics and logs. A str: metrics count by
    it as it is (a plain Enum member hashes in Python code, once per status)."""

    WITHIN_LIMIT = "within_limit"
    NEAR_LIMIT = "near_limit"  # admitted with less than (1 - near_limit_ratio) of it left
    OVER_LIMIT = "over_limit"
    SHADOW_OVER_LIMIT = "shadow_over_limit"  # over, but answered OK by shadow mode
    LOCAL_CACHE_HIT = "local_cache_hit"  # over, known without asking the store
    FAILURE_ALLOWED = "failure_allowed"  # the store failed and the rule allows
    FAILURE_DENIED = "failure_denied"  # the store failed and the rule denies


class StoreUnavailableError(Exception):
    """The store failed and a rule's failure mode leaves the decision to Envoy; transports
    answer UNAVAILABLE (gRPC) or 503 (HTTP)."""


class InvalidRequestError(ValueError):
    """The request is malformed; transports answer INVALID_ARGUMENT with this message."""


class LimitOverride(NamedTuple):
    """A limit Envoy's route config chose for one descriptor, bypassing config matching."""

    requests_per_unit: int
    unit: Unit


class Descriptor(NamedTuple):
    """Ordered (key, value) entries, an optional limit override and an optional own cost."""

    entries: tuple[tuple[str, str], ...]
    limit: LimitOverride | None = None
    hits_addend: int | None = None


class Request(NamedTuple):
    """A ShouldRateLimit call: a domain, its descriptors and the request-wide cost (0 = 1)."""

    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int = 0


class HttpAttributes(NamedTuple):
    """An HTTP request as an external-authorization call describes it (transport-free), for
    building descriptors from it (ratelimitd.core.extract)."""

    method: str = ""
    path: str = ""  # with the query string, as received
    host: str = ""
    scheme: str = ""
    headers: Mapping[str, str] = {}  # lower-case names
    source_address: str = ""  # the downstream peer's IP address
    source_port: int = 0
    destination_address: str = ""
    destination_port: int = 0
    context_extensions: Mapping[str, str] = {}  # set per route in Envoy, per policy in Istio
    principal: str = ""  # the peer's TLS certificate identity, if any


class Status(NamedTuple):
    """One descriptor's answer.

    `rule` gives current_limit (absent for unlimited or unmatched descriptors); `reset_us` is
    None when no counter was evaluated (no limit, unlimited, or the store failed); `result`
    is None when no limit applied.
    """

    code: Code
    rule: Rule | None = None
    remaining: int = 0
    reset_us: int | None = None
    result: Result | None = None


class Decision(NamedTuple):
    """The answer to a Request: overall code, statuses in request order, headers for Envoy."""

    code: Code
    statuses: tuple[Status, ...]
    response_headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""  # for Envoy to send as the 429's body
    store_s: float = 0.0  # time spent waiting for the store
