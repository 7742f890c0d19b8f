"""The hand-written RateLimitResponse encoder writes exactly the bytes protobuf writes:
checked against Envoy's own generated code (xds-protos) for random decisions.

xds-protos has no current_limit.unit_multiplier (field 4, proposed in envoyproxy/envoy#47307):
there it is an unknown field, which the parser keeps, so it is checked by decoding it from
the parsed message's unknown fields, then discarding them and comparing the rest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import given
from hypothesis import strategies as st

from ratelimitd.core.dynamic_metadata import decision_fields, request_fields
from ratelimitd.core.headers import whole_seconds
from ratelimitd.model.messages import (
    Code,
    Decision,
    Descriptor,
    LimitOverride,
    Request,
    Status,
)
from ratelimitd.model.rules import FailureMode, Limit, Rule, Unit
from ratelimitd.transports.rls_wire import encode_response, metadata_field, request_metadata

OVERRIDE_UNITS = [u for u in Unit if u is not Unit.WEEK]  # what Envoy's override can name
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


# -- dynamic_metadata (a google.protobuf.Struct) ------------------------------------------------

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8)
plain = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), texts)
values = st.recursive(
    plain,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
over_rule = st.builds(rule, limits, st.one_of(st.none(), texts)).map(
    lambda r: replace(r, metadata=None)
)
metadata_rules = st.builds(
    lambda r, m: replace(r, metadata=m),
    st.builds(rule, limits, texts),
    st.dictionaries(texts, values, max_size=3),
)
requests = st.builds(
    Request,
    texts,
    st.lists(
        st.builds(
            Descriptor,
            st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
            st.one_of(
                st.none(),
                st.builds(
                    LimitOverride, st.integers(0, 2**32 - 1), st.sampled_from(OVERRIDE_UNITS)
                ),
            ),
            st.one_of(st.none(), st.integers(0, 2**32 - 1)),
        ),
        max_size=3,
    ).map(tuple),
    st.integers(0, 2**32 - 1),
)
answered = st.lists(
    st.one_of(
        st.builds(
            Status, st.just(Code.OK), metadata_rules, st.integers(0, 9), st.integers(0, 10**9)
        ),
        st.builds(
            Status, st.just(Code.OVER_LIMIT), over_rule, st.integers(0, 9), st.integers(0, 10**9)
        ),
    ),
    max_size=4,
).map(tuple)


def plain_fields(fields: dict[str, object]) -> dict[str, object]:
    """Fields as struct_pb2.Struct.update takes them."""
    return {key: to_plain(value) for key, value in fields.items()}


def to_plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


@given(decisions, requests, answered)
def test_dynamic_metadata_is_the_struct_protobuf_writes(
    decision: Decision, request: Request, statuses: tuple[Status, ...]
) -> None:
    decision = decision._replace(statuses=statuses)
    ours = encode_response(
        decision, None, metadata_field(request_metadata(request), decision.statuses)
    )
    want = expected(decision)
    fields = request_fields(request) | decision_fields(decision.statuses)
    want.dynamic_metadata.update(plain_fields(fields))
    parsed = rls_pb2.RateLimitResponse.FromString(ours)
    assert multipliers(parsed) == expected_multipliers(decision)
    parsed.DiscardUnknownFields()
    assert parsed == want
    # Map entries go in key order, as deterministic serialization writes them; upb alone
    # puts a key after the keys it is a prefix of (C++ and Go before), and the order on the
    # wire means nothing: bytes are compared where no key is a prefix of another (and no
    # unit_multiplier, which xds-protos does not know, is written).
    if prefix_free(fields) and not any(expected_multipliers(decision)):
        assert ours == want.SerializeToString(deterministic=True)


def prefix_free(value: object) -> bool:
    """Whether no mapping in `value` has a key that begins another of its keys."""
    if isinstance(value, Mapping):
        keys = list(value)
        if any(a != b and b.startswith(a) for a in keys for b in keys):
            return False
        return all(prefix_free(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(prefix_free(v) for v in value)
    return True


def test_the_reference_keys_of_a_request() -> None:
    request = Request(
        "web",
        (
            Descriptor((("user", "alice"),)),
            Descriptor((("path", "/a"), ("method", "GET")), LimitOverride(42, Unit.MINUTE), 0),
            Descriptor((("k", ""),), LimitOverride(0, Unit.HOUR), 3),
        ),
        hits_addend=2,
    )
    parsed = rls_pb2.RateLimitResponse.FromString(
        encode_response(Decision(Code.OK, ()), None, metadata_field(request_metadata(request), ()))
    )
    assert json_format.MessageToDict(parsed.dynamic_metadata) == {
        "domain": "web",
        "hitsAddend": 2.0,
        "descriptors": [
            {"entries": ["user=alice"]},
            {
                "entries": ["path=/a", "method=GET"],
                "limit": "requests_per_unit:42 unit:MINUTE",
                "hitsAddend": 0.0,
            },
            {"entries": ["k="], "limit": "unit:HOUR", "hitsAddend": 3.0},
        ],
    }


def test_no_hits_addend_key_for_a_request_addend_of_zero() -> None:
    request = Request("web", (Descriptor((("a", "b"),)),))
    assert "hitsAddend" not in request_fields(request)
