"""RateLimitResponse written directly as bytes, without protobuf message objects.

Building the response message field by field was the costliest step of an answer under
pyvoy (bench/: about a tenth of the CPU per decision); the message is small and fixed, so it
is written by hand here, fields in field-number order exactly as protobuf writes them.
This module imports no protobuf code, so tests/test_rls_wire.py can check its output
against Envoy's own generated code (xds-protos). Reading stays with upb (rls_codec), which
is faster than any Python parser.
"""

from __future__ import annotations

from ratelimitd.config.model import Unit
from ratelimitd.headers import whole_seconds
from ratelimitd.messages import Decision

# RateLimitResponse.RateLimit.Unit (statuses' current_limit).
_RESPONSE_UNITS = {
    Unit.SECOND: 1,
    Unit.MINUTE: 2,
    Unit.HOUR: 3,
    Unit.DAY: 4,
    Unit.MONTH: 5,
    Unit.YEAR: 6,
    Unit.WEEK: 7,
}


def put_varint(out: bytearray, value: int) -> None:
    """Append `value` as a base-128 varint."""
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_bytes(out: bytearray, tag: int, data: bytes | bytearray) -> None:
    """Append a length-delimited field: its one-byte tag, length and data."""
    out.append(tag)
    put_varint(out, len(data))
    out += data


def encode_response(decision: Decision) -> bytes:
    """A Decision as a serialized RateLimitResponse, fields in field-number order as
    protobuf writes them."""
    out = bytearray((0x08, decision.code.value))  # overall_code
    for status in decision.statuses:
        item = bytearray((0x08, status.code.value))  # code
        rule = status.rule
        if rule is not None and rule.limit is not None:
            limit = bytearray()
            if rule.limit.requests_per_unit:
                limit.append(0x08)
                put_varint(limit, rule.limit.requests_per_unit)
            limit += bytes((0x10, _RESPONSE_UNITS[rule.limit.unit]))
            if rule.name:
                put_bytes(limit, 0x1A, rule.name.encode())
            put_bytes(item, 0x12, limit)  # current_limit
        if status.remaining:
            item.append(0x18)  # limit_remaining
            put_varint(item, status.remaining)
        if status.reset_us is not None:
            # Whole seconds, rounded up: Envoy truncates to seconds for its own headers, and
            # a client told to come back must not come back too early.
            seconds = whole_seconds(status.reset_us)
            duration = bytearray()
            if seconds:
                duration.append(0x08)
                put_varint(duration, seconds)
            put_bytes(item, 0x22, duration)  # duration_until_reset
        put_bytes(out, 0x12, item)  # statuses
    for key, value in decision.response_headers:
        header = bytearray()
        put_bytes(header, 0x0A, key.encode())
        if value:
            put_bytes(header, 0x12, value.encode())
        put_bytes(out, 0x1A, header)  # response_headers_to_add
    if decision.body:
        put_bytes(out, 0x2A, decision.body)  # raw_body
    return bytes(out)
