"""The hand-written RateLimitResponse encoder writes exactly the bytes protobuf writes:
checked against Envoy's own generated code (xds-protos) for random decisions."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import given
from hypothesis import strategies as st

from ratelimitd.core.headers import whole_seconds
from ratelimitd.model.messages import Code, Decision, Status
from ratelimitd.model.rules import FailureMode, Limit, Rule, Unit
from ratelimitd.transports.rls_wire import encode_response

UNIT_NUMBERS = {"SECOND": 1, "MINUTE": 2, "HOUR": 3, "DAY": 4, "MONTH": 5, "YEAR": 6, "WEEK": 7}


def rule(limit: Limit | None, name: str | None) -> Rule:
    return Rule("d", "d.k", limit, name, frozenset(), False, False, FailureMode.ALLOW, None)


limits = st.builds(
    Limit,
    st.just("token_bucket"),
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(Unit)),
    st.integers(1, 2**32 - 1),
)
rules = st.one_of(
    st.none(), st.builds(rule, st.one_of(st.none(), limits), st.one_of(st.none(), st.text()))
)
statuses = st.builds(
    Status,
    st.sampled_from(list(Code)),
    rules,
    st.integers(0, 2**32 - 1),
    st.one_of(st.none(), st.integers(0, 10**14)),
)
decisions = st.builds(
    Decision,
    st.sampled_from(list(Code)),
    st.lists(statuses, max_size=4).map(tuple),
    st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=4).map(tuple),
    st.binary(max_size=64),
)


def expected(decision: Decision) -> rls_pb2.RateLimitResponse:
    """The same answer built with Envoy's generated code."""
    response = rls_pb2.RateLimitResponse(overall_code=decision.code.value)
    for status in decision.statuses:
        pb = response.statuses.add(code=status.code.value, limit_remaining=status.remaining)
        if status.rule is not None and status.rule.limit is not None:
            pb.current_limit.requests_per_unit = status.rule.limit.requests_per_unit
            pb.current_limit.unit = UNIT_NUMBERS[status.rule.limit.unit.name]
            if status.rule.name:
                pb.current_limit.name = status.rule.name
        if status.reset_us is not None:
            pb.duration_until_reset.seconds = whole_seconds(status.reset_us)
    response.response_headers_to_add.extend(
        base_pb2.HeaderValue(key=k, value=v) for k, v in decision.response_headers
    )
    response.raw_body = decision.body
    return response


@given(decisions)
def test_encoder_writes_what_protobuf_writes(decision: Decision) -> None:
    ours = encode_response(decision)
    assert rls_pb2.RateLimitResponse.FromString(ours) == expected(decision)
    assert ours == expected(decision).SerializeToString()


def test_an_unmeasured_status_has_no_duration_but_a_zero_one_is_present() -> None:
    zero = encode_response(Decision(Code.OK, (Status(Code.OK, None, 0, 0),)))
    parsed = rls_pb2.RateLimitResponse.FromString(zero)
    assert parsed.statuses[0].HasField("duration_until_reset")
    absent = rls_pb2.RateLimitResponse.FromString(
        encode_response(Decision(Code.OK, (Status(Code.OK),)))
    )
    assert not absent.statuses[0].HasField("duration_until_reset")
