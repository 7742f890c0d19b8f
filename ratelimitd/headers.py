"""Response headers Envoy adds to the client's response: Retry-After on every OVER_LIMIT, and
the rate limit fields of the chosen style.

- `xratelimit`: X-RateLimit-Limit/Remaining/Reset (draft-polli-ratelimit-headers-03), built
  exactly as Envoy's `enable_x_ratelimit_headers: DRAFT_VERSION_03` builds them from our
  statuses, so either source gives the same values.
- `ietf`: RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers), one item per
  limit, as structured-field lists.
- `legacy`: RateLimit-Limit/Remaining/Reset, envoyproxy/ratelimit's names and values.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ratelimitd.config.model import Limit
from ratelimitd.messages import Code, Status

US_PER_S = 1_000_000

Headers = list[tuple[str, str]]


class HeaderMode(enum.Enum):
    """Which rate limit headers to send besides Retry-After."""

    XRATELIMIT = "xratelimit"
    IETF = "ietf"
    LEGACY = "legacy"
    NONE = "none"


class Measured(NamedTuple):
    """A status with a limit, the limit, a display name and whole seconds to reset."""

    status: Status
    limit: Limit
    name: str
    reset_s: int


def whole_seconds(us: int) -> int:
    """Microseconds rounded up to whole seconds."""
    return -(-us // US_PER_S)


def retry_after_s(statuses: Sequence[Status]) -> int:
    """Seconds until every exceeded limit admits the request again: at least 1."""
    wait = max((s.reset_us or 0 for s in statuses if s.code is Code.OVER_LIMIT), default=0)
    return max(1, whole_seconds(wait))


def sf_string(text: str) -> str:
    """A structured-field string (RFC 8941): quoted, with `\\` and `"` escaped and anything
    outside printable ASCII percent-encoded."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
    return '"' + "".join(out) + '"'


# Bounded: requests' limit overrides make new limits without end.
@functools.lru_cache(maxsize=4096)
def _quota_policy(limit: Limit, name: str | None) -> str:
    """`, <requests_per_unit>;w=<window>[;name="..."][;burst=<capacity>]` for one limit."""
    policy = f", {limit.requests_per_unit};w={limit.unit.seconds}"
    if name:
        policy += f";name={sf_string(name)}"
    if limit.burst != limit.requests_per_unit:
        policy += f";burst={limit.burst}"
    return policy


def _xratelimit(measured: Sequence[Measured]) -> Headers:
    # Envoy's choice: the fewest remaining, the first on ties; every limit's policy listed.
    tightest = min(measured, key=lambda m: m.status.remaining)
    policies = "".join(
        _quota_policy(m.limit, m.status.rule.name if m.status.rule else None) for m in measured
    )
    # With a burst, the first value is the capacity, so remaining never exceeds it.
    return [
        ("X-RateLimit-Limit", f"{tightest.limit.burst}{policies}"),
        ("X-RateLimit-Remaining", str(tightest.status.remaining)),
        ("X-RateLimit-Reset", str(tightest.reset_s)),
    ]


def _ietf(measured: Sequence[Measured]) -> Headers:
    # One item per distinct limit; for a limit matched twice, its tighter status.
    by_name: dict[str, Measured] = {}
    for m in measured:
        seen = by_name.get(m.name)
        if seen is None or m.status.remaining < seen.status.remaining:
            by_name[m.name] = m
    policy = ", ".join(
        f"{sf_string(name)};q={m.limit.burst};w={m.limit.unit.seconds}"
        for name, m in by_name.items()
    )
    remaining = ", ".join(
        f"{sf_string(name)};r={m.status.remaining};t={m.reset_s}" for name, m in by_name.items()
    )
    return [("RateLimit-Policy", policy), ("RateLimit", remaining)]


def _legacy(measured: Sequence[Measured]) -> Headers:
    # The reference's choice: an exceeded limit first, then the fewest remaining.
    tightest = min(
        measured, key=lambda m: (m.status.code is not Code.OVER_LIMIT, m.status.remaining)
    )
    return [
        ("RateLimit-Limit", str(tightest.limit.requests_per_unit)),
        ("RateLimit-Remaining", str(tightest.status.remaining)),
        ("RateLimit-Reset", str(tightest.reset_s)),
    ]


_STYLES: dict[HeaderMode, Callable[[Sequence[Measured]], Headers]] = {
    HeaderMode.XRATELIMIT: _xratelimit,
    HeaderMode.IETF: _ietf,
    HeaderMode.LEGACY: _legacy,
}


def build(
    statuses: Sequence[Status], over_limit: bool, mode: HeaderMode
) -> tuple[tuple[str, str], ...]:
    """Headers for a decision; `over_limit` is the answer (Retry-After only then)."""
    headers: Headers = []
    if over_limit:
        headers.append(("Retry-After", str(retry_after_s(statuses))))
    style = _STYLES.get(mode)
    if style is not None:
        # Every status that reports a current_limit, as Envoy's own header builder sees them
        # (one not evaluated, say because the request was rejected locally, counts as 0 left).
        measured = [
            Measured(
                s, s.rule.limit, s.rule.name or s.rule.full_key, whole_seconds(s.reset_us or 0)
            )
            for s in statuses
            if s.rule is not None and s.rule.limit is not None
        ]
        if measured:
            headers += style(measured)
    return tuple(headers)
