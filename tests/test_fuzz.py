"""Hostile input over the wire, on both transports: requests past every bound, raw bodies
from hypothesis, and structurally valid requests with hostile values. The server must answer
each one with a decision or a clean INVALID_ARGUMENT / RESOURCE_EXHAUSTED, never crash, never
show a trace, and keep its memory bounded.

`pytest -m slow tests/test_fuzz.py` runs the long version (ten times the examples)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.message import DecodeError
from google.protobuf.wrappers_pb2 import UInt64Value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
CONFIG = """
domain: fuzz
descriptors:
  - key: tenant
    rate_limit: {unit: second, requests_per_unit: 5}
    descriptors:
      - key: route
        rate_limit: {unit: minute, requests_per_unit: 50, algorithm: gcra}
  - key: client
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: fixed_window}
  - key: window
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: sliding_window}
"""
MAX_REQUEST_BYTES = 16_384
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
# A leak of a few hundred bytes per request shows over the long run's 10,000 requests.
MAX_GROWTH_KB = 8 * 1024

Entry = ratelimit_pb2.RateLimitDescriptor.Entry
Override = ratelimit_pb2.RateLimitDescriptor.RateLimitOverride


@dataclass
class Target:
    server: Ratelimitd
    call: Callable[[bytes], bytes]  # raw request bytes in, raw response bytes out

    def send(self, data: bytes) -> rls_pb2.RateLimitResponse | grpc.RpcError:
        """The decoded answer, or the error; fails the test on anything but a clean one."""
        refused: grpc.RpcError | None = None
        try:
            answer = rls_pb2.RateLimitResponse.FromString(self.call(data))
        except grpc.RpcError as error:
            refused = error
        if refused is not None:
            code, details = refused.code(), refused.details() or ""
            assert code in REFUSALS, (code, details)
            assert "Traceback" not in details, details
            assert 'File "' not in details, details
            return refused
        assert answer.overall_code in (
            rls_pb2.RateLimitResponse.OK,
            rls_pb2.RateLimitResponse.OVER_LIMIT,
        )
        return answer

    def rss_kb(self) -> int:
        """Resident memory of the server's process tree (supervisor, workers, Envoy)."""
        return sum(_rss_kb(pid) for pid in _tree(self.server.process.pid))


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass  # exited meanwhile
    return 0


@pytest.fixture(scope="module", params=["grpc-memory", "asgi-redis"])
def target(
    request: pytest.FixtureRequest,
    module_ratelimitd: RatelimitdFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    """A server per transport: grpc on a small in-memory store (its size bound is part of
    what is fuzzed), asgi on Redis."""
    transport, store = request.param.split("-")
    config = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    config.write_text(CONFIG)
    flags = ["--max-request-bytes", str(MAX_REQUEST_BYTES), "--memory-max-keys", "500"]
    server = module_ratelimitd(
        config,
        *flags,
        "--redis-timeout",
        "1",
        redis_url=redis_server.url if store == "redis" else None,
        transport=transport,
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)

        def send(data: bytes) -> bytes:
            answer: bytes = call(data, timeout=10)
            return answer

        yield Target(server, send)
    assert server.process.poll() is None, server.logs()
    assert "Traceback" not in server.logs()


def request(*descriptors: ratelimit_pb2.RateLimitDescriptor, **fields: object) -> bytes:
    message = rls_pb2.RateLimitRequest(
        domain=str(fields.pop("domain", "fuzz")), descriptors=descriptors, **fields
    )
    data: bytes = message.SerializeToString()
    return data


def entries(*pairs: tuple[str, str], **fields: object) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[Entry(key=k, value=v) for k, v in pairs], **fields
    )


TENANT = entries(("tenant", "t"))


def refusal(target: Target, data: bytes) -> tuple[grpc.StatusCode, str]:
    answer = target.send(data)
    assert isinstance(answer, grpc.RpcError), answer
    return answer.code(), answer.details() or ""


@pytest.mark.parametrize(
    ("data", "flag"),
    [
        (request(*[TENANT] * 65), "--max-descriptors"),
        (request(entries(*[("tenant", "t")] * 33)), "--max-entries"),
        (request(entries(("k" * 257, "v"))), "--max-key-length"),
        (request(TENANT, domain="d" * 257), "--max-key-length"),
        (request(entries(("tenant", "v" * 4097))), "--max-value-length"),
    ],
    ids=["descriptors", "entries", "key", "domain", "value"],
)
def test_each_bound_is_invalid_argument_naming_its_flag(
    target: Target, data: bytes, flag: str
) -> None:
    code, details = refusal(target, data)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert flag in details


def test_a_request_over_the_size_limit_is_resource_exhausted(target: Target) -> None:
    data = request(*[entries(("tenant", "v" * 4000))] * 5)
    assert len(data) > MAX_REQUEST_BYTES
    code, _ = refusal(target, data)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_invalid_utf8_is_invalid_argument(target: Target) -> None:
    valid = request(entries(("tenant", "é")))
    broken = valid.replace("é".encode(), b"\xff\xfe")
    code, details = refusal(target, broken)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed RateLimitRequest" in details


def test_nul_bytes_are_ordinary_characters_with_their_own_counters(target: Target) -> None:
    def remaining(value: str) -> int:
        answer = target.send(request(entries(("client", value))))
        assert isinstance(answer, rls_pb2.RateLimitResponse)
        return int(answer.statuses[0].limit_remaining)

    assert [remaining("a\x00b") for _ in range(2)] == [2, 1]
    assert remaining("a") == 2
    assert remaining("a\x00") == 2


@pytest.mark.parametrize("cost", [2**32 - 1, 2**64 - 1])
def test_huge_costs_are_over_limit_and_consume_nothing(target: Target, cost: int) -> None:
    huge = entries(("window", f"huge-{cost}"), hits_addend=UInt64Value(value=cost))
    answer = target.send(request(huge))
    assert isinstance(answer, rls_pb2.RateLimitResponse)
    assert answer.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    answer = target.send(request(entries(("window", f"huge-{cost}"))))
    assert isinstance(answer, rls_pb2.RateLimitResponse)
    assert answer.statuses[0].limit_remaining == 9


def test_a_request_wide_cost_of_2_32_minus_1(target: Target) -> None:
    answer = target.send(request(entries(("client", "request-wide")), hits_addend=2**32 - 1))
    assert isinstance(answer, rls_pb2.RateLimitResponse)
    assert answer.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT


# -- hypothesis ---------------------------------------------------------------------------

# Text that stresses keys: separators the store keys escape, NUL and control characters,
# non-BMP characters, and long runs.
hostile_text = st.one_of(
    st.sampled_from(["", "t", "tenant", "route", "client", "window", "a:b", "{x}", "%", "~*"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet=":={}#~%\x00\x7f", max_size=12),
    st.integers(200, 600).map(lambda n: "v" * n),
)
keys = st.one_of(st.sampled_from(["tenant", "route", "client", "window"]), hostile_text)
overrides = st.builds(
    Override,
    requests_per_unit=st.integers(0, 2**32 - 1),
    unit=st.integers(0, 8),  # 0 and 7+ are not units
)
descriptors = st.builds(
    ratelimit_pb2.RateLimitDescriptor,
    entries=st.lists(st.builds(Entry, key=keys, value=hostile_text), max_size=5),
    limit=st.none() | overrides,
    hits_addend=st.none() | st.integers(0, 2**64 - 1).map(lambda n: UInt64Value(value=n)),
)
requests = st.builds(
    rls_pb2.RateLimitRequest,
    domain=st.sampled_from(["fuzz", "fuzz", "other"]) | hostile_text,
    descriptors=st.lists(descriptors, max_size=8),
    hits_addend=st.integers(0, 2**32 - 1),
)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    body = bytearray(data)
    for position, byte in edits:
        if body:
            body[position % len(body)] = byte
    return bytes(body)


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _mutate,
        requests.map(lambda r: r.SerializeToString()),
        st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4),
    ),
)


def _fuzz(target: Target, strategy: st.SearchStrategy[bytes], examples: int) -> None:
    """Send `examples` bodies from `strategy` twice over; memory must not keep growing."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def check(data: bytes) -> None:
        answer = target.send(data)
        if isinstance(answer, rls_pb2.RateLimitResponse):
            try:
                asked = len(rls_pb2.RateLimitRequest.FromString(data).descriptors)
            except DecodeError:
                return
            assert len(answer.statuses) == asked

    check()  # warms up every cache the requests reach
    warm = target.rss_kb()
    check()
    growth = target.rss_kb() - warm
    assert growth < MAX_GROWTH_KB, f"RSS grew {growth} kB over {examples} more requests"
    assert target.server.process.poll() is None


# The long runs: ten times the examples, with `pytest -m slow`.
LENGTHS = [pytest.param(4000, marks=pytest.mark.slow, id="long"), pytest.param(400, id="ci")]


@pytest.mark.parametrize("examples", LENGTHS)
def test_raw_bodies(target: Target, examples: int) -> None:
    _fuzz(target, raw_bodies, examples)


@pytest.mark.parametrize("examples", LENGTHS)
def test_structurally_valid_hostile_requests(target: Target, examples: int) -> None:
    _fuzz(target, requests.map(lambda r: r.SerializeToString()), examples)
