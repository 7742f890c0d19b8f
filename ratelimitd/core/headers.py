"""Response headers Envoy adds to the client's response: Retry-After on every OVER_LIMIT, and
the rate limit fields of the chosen style.

- `xratelimit`: X-RateLimit-Limit/Remaining/Reset (draft-polli-ratelimit-headers-03), in the
  format of Envoy's `enable_x_ratelimit_headers: DRAFT_VERSION_03`, for one limit: on a
  rejection the binding one (whose wait is the Retry-After), else the tightest (fewest
  remaining; on ties the longest reset, where Envoy's own builder takes the first).
- `ietf`: RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers), one item per
  limit, as structured-field lists, the one xratelimit describes first.
- `legacy`: RateLimit-Limit/Remaining/Reset, envoyproxy/ratelimit's names, values and choice
  of limit: the last exceeded one that is not a quota, else the fewest remaining (the first
  on ties).

Retry-After is the wait until the request can pass: until every exceeded limit admits it, and,
when every quota limit of the request rejected it, until the first of them admits it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence

from ratelimitd.core.fired import binding
from ratelimitd.model.messages import Code, Status
from ratelimitd.model.rules import Limit, Rule

US_PER_S = 1_000_000

Headers = list[tuple[str, str]]


class HeaderMode(enum.Enum):
    """Which rate limit headers to send besides Retry-After."""

    XRATELIMIT = "xratelimit"
    IETF = "ietf"
    LEGACY = "legacy"
    NONE = "none"


def whole_seconds(us: int) -> int:
    """Microseconds rounded up to whole seconds."""
    return -(-us // US_PER_S)


def retry_after_s(statuses: Sequence[Status]) -> int:
    """Seconds until the request can pass (the binding limit's wait): at least 1."""
    return _wait_s(binding(statuses))


def _wait_s(bound: Status | None) -> int:
    return max(1, whole_seconds(0 if bound is None else bound.reset_us or 0))


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
    policy = f", {limit.requests_per_unit};w={limit.window_seconds}"
    if name:
        policy += f";name={sf_string(name)}"
    if limit.burst != limit.requests_per_unit:
        policy += f";burst={limit.burst}"
    return policy


_XRATELIMIT_NAMES = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_LEGACY_NAMES = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


class HeaderPlan:
    """The headers of one plan's decisions: everything that does not depend on the counters
    (limits, policies, names) is computed once, when the plan is made; `build` writes in the
    numbers of one decision.

    `measured` are the statuses that report a current_limit, as (index in the request, rule).
    """

    __slots__ = (
        "_admitted_xratelimit",
        "_at",
        "_ietf_policy",
        "_limit_values",
        "_mode",
        "_names",
        "_quoted",
    )

    def __init__(self, measured: Sequence[tuple[int, Rule]], mode: HeaderMode) -> None:
        self._mode = mode
        self._at = tuple(i for i, _ in measured)
        self._admitted_xratelimit = mode is HeaderMode.XRATELIMIT and bool(self._at)
        limits = [rule.limit for _, rule in measured if rule.limit is not None]
        assert len(limits) == len(measured), "measured statuses have limits"
        self._names = tuple(rule.label for _, rule in measured)
        if mode is HeaderMode.XRATELIMIT:
            # With a burst, the first value is the capacity, so remaining never exceeds it.
            policies = "".join(
                _quota_policy(limit, rule.name)
                for limit, (_, rule) in zip(limits, measured, strict=True)
            )
            self._limit_values = tuple(f"{limit.burst}{policies}" for limit in limits)
        elif mode is HeaderMode.LEGACY:
            self._limit_values = tuple(str(limit.requests_per_unit) for limit in limits)
        else:
            self._limit_values = ()
        self._quoted = tuple(sf_string(name) for name in self._names)
        self._ietf_policy = tuple(
            f"{quoted};q={limit.burst};w={limit.window_seconds}"
            for quoted, limit in zip(self._quoted, limits, strict=True)
        )

    def build(self, statuses: Sequence[Status], over_limit: bool) -> tuple[tuple[str, str], ...]:
        """The headers of a decision with these `statuses`; `over_limit` is the answer
        (Retry-After only then)."""
        at = self._at
        if self._admitted_xratelimit and not over_limit:  # the usual answer, directly
            best = _tightest(statuses, at) if len(at) > 1 else 0
            status = statuses[at[best]]
            return (
                ("X-RateLimit-Limit", self._limit_values[best]),
                ("X-RateLimit-Remaining", str(status.remaining)),
                ("X-RateLimit-Reset", str(whole_seconds(status.reset_us or 0))),
            )
        mode = self._mode
        headers: Headers = []
        bound = None
        if over_limit:
            bound = binding(statuses)
            headers.append(("Retry-After", str(_wait_s(bound))))
        if not at or mode is HeaderMode.NONE:
            return tuple(headers)
        if mode is HeaderMode.LEGACY:
            chosen = _references_choice(statuses, at)
        else:
            # The binding limit, measured by construction (else the tightest).
            found = [n for n, i in enumerate(at) if statuses[i] is bound]
            chosen = found[0] if found else _tightest(statuses, at)
        if mode is HeaderMode.IETF:
            return (*headers, *self._ietf(statuses, chosen))
        names = _LEGACY_NAMES if mode is HeaderMode.LEGACY else _XRATELIMIT_NAMES
        status = statuses[at[chosen]]
        headers += (
            (names[0], self._limit_values[chosen]),
            (names[1], str(status.remaining)),
            (names[2], str(whole_seconds(status.reset_us or 0))),
        )
        return tuple(headers)

    def _ietf(self, statuses: Sequence[Status], first: int) -> Headers:
        # One item per distinct limit name; for a limit matched twice, its tighter status.
        chosen: dict[str, int] = {self._names[first]: first}
        for n, name in enumerate(self._names):
            seen = chosen.get(name)
            if seen is None or statuses[self._at[n]].remaining < statuses[self._at[seen]].remaining:
                chosen[name] = n
        policy = ", ".join(self._ietf_policy[n] for n in chosen.values())
        remaining = ", ".join(
            f"{self._quoted[n]};r={statuses[self._at[n]].remaining};"
            f"t={whole_seconds(statuses[self._at[n]].reset_us or 0)}"
            for n in chosen.values()
        )
        return [("RateLimit-Policy", policy), ("RateLimit", remaining)]


def _tightest(statuses: Sequence[Status], at: Sequence[int]) -> int:
    """Which of the measured statuses `at` has the fewest remaining; on ties the longest
    reset, then the first."""
    best = 0
    least, longest = statuses[at[0]].remaining, statuses[at[0]].reset_us or 0
    for n in range(1, len(at)):
        status = statuses[at[n]]
        remaining, reset_us = status.remaining, status.reset_us or 0
        if remaining < least or (remaining == least and reset_us > longest):
            best, least, longest = n, remaining, reset_us
    return best


def _references_choice(statuses: Sequence[Status], at: Sequence[int]) -> int:
    """The reference's choice among the measured statuses: the last exceeded one that is not
    a quota, else the fewest remaining (the first on ties)."""
    for n in range(len(at) - 1, -1, -1):
        status = statuses[at[n]]
        if status.code is Code.OVER_LIMIT and not (status.rule and status.rule.quota_mode):
            return n
    best = 0
    for n in range(1, len(at)):
        if statuses[at[n]].remaining < statuses[at[best]].remaining:
            best = n
    return best
