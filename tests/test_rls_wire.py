"""The hand-written RateLimitResponse encoder writes exactly the bytes protobuf writes:
checked against Envoy's own generated code (xds-protos) for random decisions.

xds-protos has no current_limit.unit_multiplier (field 4, proposed in envoyproxy/envoy#47307):
there it is an unknown field, which the parser keeps, so it is checked by decoding it from
the parsed message's unknown fields, then discarding them and comparing the rest."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
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
    st.just(0),
    st.one_of(st.just(1), st.integers(1, 2**32 - 1)),
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


def multipliers(response: rls_pb2.RateLimitResponse) -> list[int | None]:
    """Per status, the unit_multiplier its current_limit carries (None: absent), decoded by
    hand from the unknown field 4: a UInt32Value whose value is its field 1."""
    found: list[int | None] = []
    for status in response.statuses:
        unknown = UnknownFieldSet(status.current_limit)
        fields = [unknown[i] for i in range(len(unknown))]
        assert [(f.field_number, f.wire_type) for f in fields] in ([], [(4, 2)])
        if not fields:
            found.append(None)
            continue
        wrapper = fields[0].data
        assert wrapper[0] == 0x08  # field 1, varint
        value, shift = 0, 0
        for byte in wrapper[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
        assert byte < 0x80  # the varint ends the wrapper
        found.append(value)
    return found


def expected_multipliers(decision: Decision) -> list[int | None]:
    """unit_multiplier as it should be on the wire: present only when it is not 1."""
    limits = [None if s.rule is None else s.rule.limit for s in decision.statuses]
    return [None if x is None or x.unit_multiplier == 1 else x.unit_multiplier for x in limits]


@given(decisions)
def test_encoder_writes_what_protobuf_writes(decision: Decision) -> None:
    ours = encode_response(decision)
    parsed = rls_pb2.RateLimitResponse.FromString(ours)
    assert multipliers(parsed) == expected_multipliers(decision)
    # Field 4 is the last of current_limit, so protobuf writes it (kept as unknown) where we do.
    assert parsed.SerializeToString() == ours
    parsed.DiscardUnknownFields()
    assert parsed == expected(decision)
    if not any(expected_multipliers(decision)):
        assert ours == expected(decision).SerializeToString()


def test_unit_multiplier_bytes_by_hand() -> None:
    limit = Limit("fixed_window", 100, Unit.MINUTE, 100, unit_multiplier=5)
    ours = encode_response(Decision(Code.OK, (Status(Code.OK, rule(limit, None), 7, None),)))
    # statuses (2) { code OK, current_limit (2) { 1: 100, 2: MINUTE, 4: { 1: 5 } }, 3: 7 }
    current_limit = b"\x08\x64" + b"\x10\x02" + b"\x22\x02\x08\x05"
    status = b"\x08\x01" + b"\x12" + bytes((len(current_limit),)) + current_limit + b"\x18\x07"
    assert ours.endswith(b"\x12" + bytes((len(status),)) + status)


def test_an_unmeasured_status_has_no_duration_but_a_zero_one_is_present() -> None:
    zero = encode_response(Decision(Code.OK, (Status(Code.OK, None, 0, 0),)))
    parsed = rls_pb2.RateLimitResponse.FromString(zero)
    assert parsed.statuses[0].HasField("duration_until_reset")
    absent = rls_pb2.RateLimitResponse.FromString(
        encode_response(Decision(Code.OK, (Status(Code.OK),)))
    )
    assert not absent.statuses[0].HasField("duration_until_reset")
