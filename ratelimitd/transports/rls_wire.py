"""RateLimitResponse written directly as bytes, without protobuf message objects.

Building the response message field by field was the costliest step of an answer under
pyvoy (bench/: about a tenth of the CPU per decision); the message is small and fixed, so it
is written by hand here, fields in field-number order exactly as protobuf writes them.
This module imports no protobuf code, so tests/test_rls_wire.py can check its output
against Envoy's own generated code (xds-protos). Reading stays with upb (rls_codec), which
is faster than any Python parser.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from ratelimitd.core import dynamic_metadata
from ratelimitd.model.messages import Code, Decision, Request, Status
from ratelimitd.model.rules import Unit

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


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    """`value` as a base-128 varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    # The usual remaining counts and seconds, without the loop.
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x800000000:  # up to 35 bits: large limits' remaining counts
        if value < 0x10000000:
            return bytes(
                (
                    (value & 0x7F) | 0x80,
                    ((value >> 7) & 0x7F) | 0x80,
                    ((value >> 14) & 0x7F) | 0x80,
                    value >> 21,
                )
            )
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                ((value >> 21) & 0x7F) | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    put_varint(out, value)
    return bytes(out)


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


def current_limits(statuses: Sequence[Status]) -> tuple[bytes, ...]:
    """Per status, its current_limit field as written in the response (b"" for none). A
    plan's statuses keep their rules from one decision to the next, so callers compute this
    once per plan and pass it to encode_response."""
    fields = []
    for status in statuses:
        rule = status.rule
        if rule is None or rule.limit is None:
            fields.append(b"")
            continue
        limit = bytearray()
        if rule.limit.requests_per_unit:
            limit.append(0x08)
            put_varint(limit, rule.limit.requests_per_unit)
        limit += bytes((0x10, _RESPONSE_UNITS[rule.limit.unit]))
        if rule.name:
            put_bytes(limit, 0x1A, rule.name.encode())
        if rule.limit.unit_multiplier != 1:
            # unit_multiplier (4), a UInt32Value: its value is field 1. Absent means 1.
            multiplier = bytearray(b"\x08")
            put_varint(multiplier, rule.limit.unit_multiplier)
            put_bytes(limit, 0x22, multiplier)
        field = bytearray()
        put_bytes(field, 0x12, limit)  # current_limit
        fields.append(bytes(field))
    return tuple(fields)


# Encoded response_headers_to_add fields by (name, value): most values repeat from one answer
# to the next (a limit's policy, seconds to reset), and a lookup costs less than encoding.
_HEADER_FIELDS: dict[tuple[str, str], bytes] = {}
_HEADER_FIELDS_KEPT = 4096


def _header_field(key: str, value: str) -> bytes:
    """One response_headers_to_add entry: a HeaderValue with its key and, if not empty,
    its value."""
    field = _HEADER_FIELDS.get((key, value))
    if field is None:
        name = key.encode()
        header = b"\x0a" + _length(len(name)) + name
        if value:
            data = value.encode()
            header += b"\x12" + _length(len(data)) + data
        field = b"\x1a" + _length(len(header)) + header
        if len(_HEADER_FIELDS) >= _HEADER_FIELDS_KEPT:
            _HEADER_FIELDS.clear()  # values that did not repeat (remaining counts) wash out
        _HEADER_FIELDS[key, value] = field
    return field


def _length(size: int) -> bytes:
    return _ONE_BYTE[size] if size < 0x80 else varint(size)


_CODES = {code: bytes((0x08, code)) for code in Code}
# duration_until_reset fields by whole seconds: a few values cover most answers.
_DURATIONS: dict[int, bytes] = {}
_DURATIONS_KEPT = 4096


def _duration_field(seconds: int) -> bytes:
    """A status's duration_until_reset field of `seconds` (a Duration of just seconds)."""
    if seconds:
        encoded = varint(seconds)
        field = b"\x22" + _ONE_BYTE[len(encoded) + 1] + b"\x08" + encoded
    else:
        field = b"\x22\x00"
    if len(_DURATIONS) >= _DURATIONS_KEPT:
        _DURATIONS.clear()
    _DURATIONS[seconds] = field
    return field


def encode_response(
    decision: Decision, limits: Sequence[bytes] | None = None, metadata: bytes = b""
) -> bytes:
    """A Decision as a serialized RateLimitResponse, fields in field-number order as
    protobuf writes them; `limits` is current_limits(decision.statuses), if known;
    `metadata` its dynamic_metadata field (metadata_field), if any."""
    if limits is None:
        limits = current_limits(decision.statuses)
    # Concatenated bytes: on this path, fewer and cheaper steps than bytearray appends.
    parts = [_CODES[decision.code]]  # overall_code
    for status, limit in zip(decision.statuses, limits, strict=False):  # equal by contract
        item = _CODES[status.code] + limit  # code, current_limit
        remaining = status.remaining
        if remaining:
            item += b"\x18" + varint(remaining)  # limit_remaining
        reset_us = status.reset_us
        if reset_us is not None:
            # Whole seconds, rounded up: Envoy truncates to seconds for its own headers, and
            # a client told to come back must not come back too early.
            seconds = -(-reset_us // 1_000_000)
            duration = _DURATIONS.get(seconds)
            if duration is None:
                duration = _duration_field(seconds)
            item += duration
        parts.append(b"\x12" + _length(len(item)) + item)  # statuses
    for key, value in decision.response_headers:
        parts.append(_header_field(key, value))  # response_headers_to_add
    if decision.body:
        parts.append(b"\x2a" + _length(len(decision.body)) + decision.body)  # raw_body
    if metadata:
        parts.append(metadata)  # dynamic_metadata
    return b"".join(parts)


# -- dynamic_metadata: a google.protobuf.Struct ----------------------------------------------


def request_metadata(request: Request) -> dict[str, bytes]:
    """The encoded Struct entries of the dynamic metadata fixed by `request`: a plan's
    requests share them, so callers keep them per plan for metadata_field."""
    return _entries(dynamic_metadata.request_fields(request))


def metadata_field(request_entries: Mapping[str, bytes], statuses: Sequence[Status]) -> bytes:
    """The response's dynamic_metadata field (6): the request's entries and the answer's,
    in key order as protobuf's deterministic serialization writes a map."""
    entries = {**request_entries, **_entries(dynamic_metadata.decision_fields(statuses))}
    body = b"".join(entries[key] for key in sorted(entries))
    return b"\x32" + _length(len(body)) + body


def _entries(fields: Mapping[str, object]) -> dict[str, bytes]:
    """Each field as an encoded entry of Struct's `fields` map."""
    return {key: _struct_entry(key, value) for key, value in fields.items()}


def _struct_entry(key: str, value: object) -> bytes:
    name = key.encode()
    encoded = _value(value)
    entry = b"\x0a" + _length(len(name)) + name + b"\x12" + _length(len(encoded)) + encoded
    return b"\x0a" + _length(len(entry)) + entry


def _value(value: object) -> bytes:
    """A google.protobuf.Value: null, bool, number, string, struct (a mapping with str keys)
    or list."""
    if value is None:
        return b"\x08\x00"  # null_value: NULL_VALUE, written as any set oneof member
    if isinstance(value, bool):
        return b"\x20\x01" if value else b"\x20\x00"
    if isinstance(value, int | float):
        return b"\x11" + _DOUBLE.pack(value)
    if isinstance(value, str):
        data = value.encode()
        return b"\x1a" + _length(len(data)) + data
    if isinstance(value, Mapping):
        fields = b"".join(_struct_entry(k, value[k]) for k in sorted(value))
        return b"\x2a" + _length(len(fields)) + fields
    if isinstance(value, list | tuple):
        items = b"".join(b"\x0a" + _length(len(v)) + v for v in map(_value, value))
        return b"\x32" + _length(len(items)) + items
    raise TypeError(f"no google.protobuf.Value for {type(value).__name__}")
