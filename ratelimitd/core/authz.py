"""Rate limiting as external authorization: Envoy's ext_authz filter sends the whole HTTP
request (`envoy.service.auth.v3.Authorization/Check`), and the domain's `extract:` section
turns it into the descriptors the engine decides (ratelimitd.core.extract).

- The domain is the request's context extension `domain` (set per route in Envoy, per
  policy in Istio), else the default domain given.
- No domain, a domain the config does not have, or no descriptor extracted (the domain has
  no `extract:`, or every descriptor lacks a value): OK without headers, as ShouldRateLimit
  answers descriptors no rule matches.
- OK: the decision's rate limit headers are added to the upstream response.
- OVER_LIMIT: denied with 429, Retry-After and the rate limit headers, and the problem+json
  body with `--over-limit-body problem-json`.
- The store failed and a matched rule's failure mode is `unavailable`: denied with 503.

Proto-free like the engine: transports decode and encode (transports/authz_codec,
transports/authz_wire).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from ratelimitd.core import extract
from ratelimitd.core.engine import Engine
from ratelimitd.core.plan import Plan
from ratelimitd.model.messages import Code, Decision, HttpAttributes, Request, StoreUnavailableError

# The context extension naming the domain.
DOMAIN_EXTENSION = "domain"


class Verdict(enum.Enum):
    """What Check answers; the value is the code metrics count it as."""

    OK = "OK"
    OVER_LIMIT = "OVER_LIMIT"
    UNAVAILABLE = "UNAVAILABLE"


# Per verdict: the CheckResponse's status code (a gRPC code: 0 lets the request through)
# and the HTTP status of the response Envoy sends instead (0: none, the request goes on).
_GRPC_CODES = {Verdict.OK: 0, Verdict.OVER_LIMIT: 8, Verdict.UNAVAILABLE: 14}
_HTTP_STATUSES = {Verdict.OK: 0, Verdict.OVER_LIMIT: 429, Verdict.UNAVAILABLE: 503}


class AuthzDecision(NamedTuple):
    """The answer to a Check call.

    `headers` go to the client: on the upstream's response when the verdict is OK, on the
    denial otherwise. `domain` is the configured domain that decided (None if none did).
    """

    verdict: Verdict
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    domain: str | None = None
    store_s: float = 0.0  # time spent waiting for the store

    @property
    def grpc_code(self) -> int:
        """The CheckResponse status code: OK (0), RESOURCE_EXHAUSTED (8), UNAVAILABLE (14)."""
        return _GRPC_CODES[self.verdict]

    @property
    def http_status(self) -> int:
        """The status of the denial Envoy sends (429 or 503); 0 when the request goes on."""
        return _HTTP_STATUSES[self.verdict]


ALLOWED = AuthzDecision(Verdict.OK)


def from_decision(decision: Decision, domain: str | None) -> AuthzDecision:
    """The Check answer of an engine decision."""
    verdict = Verdict.OK if decision.code is Code.OK else Verdict.OVER_LIMIT
    return AuthzDecision(
        verdict, decision.response_headers, decision.body, domain, decision.store_s
    )


async def authorize(
    engine: Engine,
    attributes: HttpAttributes,
    default_domain: str | None = None,
    plan_of: Callable[[Request], Plan] | None = None,
) -> AuthzDecision:
    """Decide an HTTP request; `plan_of` makes the extracted request's plan (the engine's
    `plan` unless given: the transport passes its plan cache's). Raises InvalidRequestError
    when the extracted descriptors are not a valid request."""
    name = attributes.context_extensions.get(DOMAIN_EXTENSION) or default_domain
    domain = engine.config.domains.get(name) if name else None
    if domain is None:
        return ALLOWED
    found = extract.descriptors(domain, attributes)
    if not found:
        return AuthzDecision(Verdict.OK, domain=domain.name)
    return await answer(engine, (plan_of or engine.plan)(Request(domain.name, found)))


async def answer(engine: Engine, plan: Plan) -> AuthzDecision:
    """The HTTP answer to a planned request: the engine's decision, or UNAVAILABLE (503) when
    the store failed and a rule leaves the answer to the caller. Shared by ext_authz and the
    in-app middleware, which build their requests differently."""
    try:
        decision = await engine.decide(plan)
    except StoreUnavailableError:
        return AuthzDecision(Verdict.UNAVAILABLE, domain=plan.domain)
    return from_decision(decision, plan.domain)
