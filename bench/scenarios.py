"""The request mixes the harness sends, built with Envoy's own generated code (xds-protos).

A scenario is a cycle of serialized messages of one gRPC method, all of the same length (the
h2load body shim in bench/preload/ needs that): `RateLimitRequest`s to ShouldRateLimit, whose
limits are in bench/config/bench.yaml, or, for `check`, an ext_authz `CheckRequest` to
Authorization/Check, whose descriptors ratelimitd builds with the `extract:` section of
bench/config/authz.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2

DOMAIN = "bench"
AUTHZ_DOMAIN = "bench_authz"  # bench/config/authz.yaml: our `extract:` extension
RLS_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
DEFAULT_DISTINCT_KEYS = 100_000

Entries = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Scenario:
    """One load shape: the messages h2load cycles through, in order, one per request."""

    name: str
    description: str
    messages: tuple[bytes, ...]
    # Share of OVER_LIMIT answers ratelimitd should give once warm (checked by the probe).
    over_limit_share: float
    # The gRPC method of every message: ShouldRateLimit, or ext_authz Check (CheckRequests).
    method: str = RLS_METHOD
    # h2load's connections and streams per connection, whatever --clients and --streams say
    # (None: theirs).
    clients: int | None = None
    streams: int | None = None

    @property
    def is_check(self) -> bool:
        """True when the messages are CheckRequests (answered with CheckResponses)."""
        return self.method == CHECK_METHOD

    @property
    def distinct(self) -> int:
        """How many different messages the scenario sends."""
        return len(set(self.messages))


def request(*descriptors: Entries) -> bytes:
    """A serialized RateLimitRequest of the bench domain with the given descriptors."""
    message = rls_pb2.RateLimitRequest(
        domain=DOMAIN,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
                    for key, value in entries
                ]
            )
            for entries in descriptors
        ],
    )
    serialized: bytes = message.SerializeToString()
    return serialized


def check_request(tenant: str) -> bytes:
    """A serialized CheckRequest as Envoy's ext_authz filter sends one for `GET /` with
    `x-tenant-id: <tenant>` (addresses, the usual headers, the domain in context_extensions);
    ratelimitd's `extract:` in bench/config/authz.yaml turns it into [(tenant, <tenant>)]."""

    def peer(ip: str, port: int) -> attribute_context_pb2.AttributeContext.Peer:
        socket = address_pb2.SocketAddress(address=ip, port_value=port)
        return attribute_context_pb2.AttributeContext.Peer(
            address=address_pb2.Address(socket_address=socket)
        )

    headers = {
        ":authority": "bench.local",
        ":method": "GET",
        ":path": "/",
        ":scheme": "http",
        "user-agent": "bench/1.0",
        "x-forwarded-proto": "http",
        "x-request-id": "6a1f7b2e-0c1d-4e5f-8a9b-0c1d2e3f4a5b",
        "x-tenant-id": tenant,
    }
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1234567890",
        method="GET",
        headers=headers,
        path="/",
        host="bench.local",
        scheme="http",
        protocol="HTTP/1.1",
    )
    message = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=peer("10.0.0.1", 40000),
            destination=peer("10.0.0.2", 8080),
            request=attribute_context_pb2.AttributeContext.Request(http=http),
            context_extensions={"domain": AUTHZ_DOMAIN},
        )
    )
    serialized: bytes = message.SerializeToString()
    return serialized


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: 0x00 (not compressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def one() -> Scenario:
    """One descriptor, one tenant whose limit is far above anything the harness can send."""
    return Scenario(
        "one",
        "1 descriptor [(tenant, steady)], never over its limit",
        (request([("tenant", "steady")]),),
        0.0,
    )


def three() -> Scenario:
    """Three descriptors per request, as envoy/envoy.yaml sends them, none ever over."""
    return Scenario(
        "three",
        "3 descriptors: tenant, tenant+route, client address; never over",
        (
            request(
                [("tenant", "steady")],
                [("tenant", "steady"), ("route", "/v1/search")],
                [("remote_address", "10.0.0.1")],
            ),
        ),
        0.0,
    )


def distinct(keys: int = DEFAULT_DISTINCT_KEYS) -> Scenario:
    """One descriptor per request, cycling through `keys` distinct users (a counter each)."""
    width = len(str(keys - 1))
    return Scenario(
        "distinct",
        f"1 descriptor [(user, u<n>)], {keys} distinct values in turn, never over",
        tuple(request([("user", f"u{n:0{width}d}")]) for n in range(keys)),
        0.0,
    )


def overlimit() -> Scenario:
    """90% of requests to a tenant far over its limit, 10% to one that never is."""
    hot = request([("tenant", "over")])
    cool = request([("tenant", "fine")])
    return Scenario(
        "overlimit",
        "1 descriptor; 9 of 10 requests to tenant `over` (1/hour, over), 1 to `fine`",
        (hot,) * 9 + (cool,),
        0.9,
    )


def check() -> Scenario:
    """`one` through the ext_authz front door: a CheckRequest whose x-tenant-id header the
    `extract:` section turns into the same one descriptor [(tenant, steady)], never over."""
    return Scenario(
        "check",
        "ext_authz Check of GET / with x-tenant-id: steady -> [(tenant, steady)], never over",
        (check_request("steady"),),
        0.0,
        CHECK_METHOD,
    )


def single_connection() -> Scenario:
    """`one`'s request over a single HTTP/2 connection with many streams: a server whose
    workers share a port (SO_REUSEPORT) gets the connection on one of them."""
    return Scenario(
        "single-connection",
        "`one`'s 1 descriptor [(tenant, steady)] over 1 connection, 128 streams (h2load -c 1 "
        "-m 128)",
        one().messages,
        0.0,
        clients=1,
        streams=128,
    )


def build(name: str, *, distinct_keys: int = DEFAULT_DISTINCT_KEYS) -> Scenario:
    """The scenario called `name`; ValueError for an unknown name."""
    builders: dict[str, Callable[[], Scenario]] = {
        "one": one,
        "three": three,
        "distinct": lambda: distinct(distinct_keys),
        "overlimit": overlimit,
        "check": check,
        "single-connection": single_connection,
    }
    if name not in builders:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(builders)}")
    scenario = builders[name]()
    if len({len(m) for m in scenario.messages}) != 1:
        raise ValueError(f"scenario {name}: messages differ in length")
    return scenario


NAMES = ("one", "three", "distinct", "overlimit", "check", "single-connection")
# What runs without --scenarios: single-connection only when asked for (it shows how one client
# connection spreads over worker processes, which matters with --workers above 1).
DEFAULT_NAMES = ("one", "three", "distinct", "overlimit", "check")
