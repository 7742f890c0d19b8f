"""An `application/problem+json` body (RFC 9457) for OVER_LIMIT answers, which Envoy sends as
the 429's body: which limits were exceeded and when to retry."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence

from ratelimitd.core.fired import binding, fired
from ratelimitd.core.headers import whole_seconds
from ratelimitd.model.messages import Status

CONTENT_TYPE = "application/problem+json"


class BodyMode(enum.Enum):
    """What body an OVER_LIMIT answer carries."""

    NONE = "none"
    PROBLEM_JSON = "problem-json"


def problem_json(statuses: Sequence[Status], retry_after_s: int) -> bytes:
    """The body describing the exceeded limits of an OVER_LIMIT decision; `fired_limit`
    names the one whose wait is the Retry-After."""
    limits = []
    over = fired(statuses)
    for status in over:
        assert status.rule is not None
        entry: dict[str, object] = {"name": status.rule.label}
        if status.rule.limit is not None:
            entry |= {
                "requests_per_unit": status.rule.limit.requests_per_unit,
                "unit": status.rule.limit.unit.name.lower(),
                "remaining": status.remaining,
                "reset_seconds": whole_seconds(status.reset_us or 0),
            }
        elif status.rule.concurrency is not None:
            entry["concurrency"] = status.rule.concurrency
        limits.append(entry)
    names = ", ".join(f"'{entry['name']}'" for entry in limits)
    plural = "s" if len(limits) != 1 else ""
    document = {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit{plural} {names} exceeded; retry in {retry_after_s} s.",
        "retry_after_seconds": retry_after_s,
        "limits": limits,
    }
    first = binding(statuses)
    if first is not None and first.rule is not None:
        document["fired_limit"] = first.rule.label
    return json.dumps(document, separators=(",", ":")).encode()
