"""HTTP request -> descriptors, as a domain's `extract:` section says: how an external
authorization call (which carries the whole request, not descriptors) becomes the request the
engine decides.

A descriptor whose entries cannot all be filled (a missing header, a regex or path template
that does not match, a malformed token) is skipped, as Envoy skips a rate limit action whose
header is missing. Values longer than MAX_VALUE_CHARS are replaced by a digest, so a huge
header costs no more than any other value and still gets a counter of its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable

from ratelimitd.model.messages import Descriptor, HttpAttributes
from ratelimitd.model.rules import Domain, ExtractEntry

MAX_VALUE_CHARS = 256
MAX_TOKEN_CHARS = 16_384  # a bearer token longer than this is not decoded


def descriptors(domain: Domain, request: HttpAttributes) -> tuple[Descriptor, ...]:
    """The descriptors `domain` builds from `request`, in config order."""
    found = []
    for spec in domain.extract:
        entries = []
        for entry in spec.entries:
            value = value_of(entry, request)
            if value is None:
                break
            entries.append((entry.key, value))
        else:
            found.append(Descriptor(tuple(entries)))
    return tuple(found)


def value_of(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    """One entry's value from `request`, None when it has none."""
    value = READERS[entry.kind](entry, request)
    if not value:
        return None
    if len(value) > MAX_VALUE_CHARS:
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16)
        return "#" + digest.hexdigest()
    return value


def _path(request: HttpAttributes) -> str:
    return request.path.partition("?")[0]


def _captured(pattern: re.Pattern[str] | None, text: str | None) -> str | None:
    """`text`, or its first group (the whole match without one) where a regex is set."""
    if text is None or pattern is None:
        return text
    match = pattern.search(text)
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def _header(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    return _captured(entry.pattern, request.headers.get(str(entry.argument)))


def _path_template(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    assert entry.pattern is not None
    match = entry.pattern.fullmatch(_path(request))
    return match.group(1) if match else None


def _path_segments(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    segments = [s for s in _path(request).split("/") if s]
    return "/" + "/".join(segments[: int(entry.argument)])


def _method(_: ExtractEntry, request: HttpAttributes) -> str | None:
    return request.method


def _source_address(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    """The client: the connection's peer, or with `trusted_hops` N the N-th address from the
    right of x-forwarded-for as ext_authz sends it. Envoy has appended its own peer by then
    (with use_remote_address), so behind N trusted proxies the client is at N + 1."""
    hops = int(entry.argument)
    if hops:
        forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",")]
        forwarded = [a for a in forwarded if a]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.source_address


def _jwt_claim(entry: ExtractEntry, request: HttpAttributes) -> str | None:
    """A claim of the bearer token's payload. The signature is not checked here: Envoy's
    jwt_authn filter must have verified the token before ext_authz runs."""
    header = request.headers.get(entry.jwt_header, "")
    token = header[7:] if header[:7].lower() == "bearer " else header
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    for name in str(entry.argument).split("."):
        if not isinstance(claims, dict) or name not in claims:
            return None
        claims = claims[name]
    if isinstance(claims, bool):
        return _captured(entry.pattern, "true" if claims else "false")
    if isinstance(claims, str | int | float):
        return _captured(entry.pattern, str(claims))
    return None  # an object or list names no single value


def _value(entry: ExtractEntry, _: HttpAttributes) -> str | None:
    return str(entry.argument)


# The request-time reader of each source config.extract_rules.SOURCES names.
READERS: dict[str, Callable[[ExtractEntry, HttpAttributes], str | None]] = {
    "header": _header,
    "path": _path_template,
    "path_segments": _path_segments,
    "method": _method,
    "source_address": _source_address,
    "jwt_claim": _jwt_claim,
    "value": _value,
}
