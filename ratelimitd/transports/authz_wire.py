"""CheckResponse (envoy.service.auth.v3) written directly as bytes, like rls_wire: fields in
field-number order exactly as protobuf writes them. No protobuf code here, so
tests/test_authz_wire.py checks the output against Envoy's own generated code (xds-protos).
"""

from __future__ import annotations

from ratelimitd.core.authz import AuthzDecision, Verdict
from ratelimitd.transports.rls_wire import put_bytes, put_varint

# The CheckResponse of every OK without headers: status {} (code 0), ok_response {}.
_ALLOWED = b"\x0a\x00\x1a\x00"


def _header_options(tag: int, headers: tuple[tuple[str, str], ...]) -> bytearray:
    """Each header as a HeaderValueOption {header: HeaderValue {key, value}} in field `tag`."""
    out = bytearray()
    for key, value in headers:
        header = bytearray()
        put_bytes(header, 0x0A, key.encode())  # key
        if value:
            put_bytes(header, 0x12, value.encode())  # value
        option = bytearray()
        put_bytes(option, 0x0A, header)  # header
        put_bytes(out, tag, option)
    return out


def encode_check_response(decision: AuthzDecision) -> bytes:
    """A serialized CheckResponse: status {code}, then ok_response {response_headers_to_add}
    or denied_response {status {code}, headers, body}."""
    if decision.verdict is Verdict.OK:
        if not decision.headers:
            return _ALLOWED
        ok = _header_options(0x32, decision.headers)  # response_headers_to_add (6)
        out = bytearray(b"\x0a\x00")  # status {} (code 0)
        put_bytes(out, 0x1A, ok)  # ok_response (3)
        return bytes(out)
    status = bytearray((0x08,))  # code
    put_varint(status, decision.grpc_code)
    http_status = bytearray((0x08,))  # HttpStatus.code
    put_varint(http_status, decision.http_status)
    denied = bytearray()
    put_bytes(denied, 0x0A, http_status)  # status (1)
    denied += _header_options(0x12, decision.headers)  # headers (2)
    if decision.body:
        put_bytes(denied, 0x1A, decision.body)  # body (3)
    out = bytearray()
    put_bytes(out, 0x0A, status)  # status (1)
    put_bytes(out, 0x12, denied)  # denied_response (2)
    return bytes(out)
