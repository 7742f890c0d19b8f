"""Which limits fired: the rules a decision finds over their limit, the one binding the
client (whose wait is the Retry-After), and the name each goes by in answers.

Quota limits (`quota_mode`) reject together: a request passes once every exceeded limit that
is not a quota admits it and, when every quota limit of it is exceeded, once the first of
those does."""

from __future__ import annotations

from collections.abc import Sequence

from ratelimitd.model.messages import Code, Status


def fired(statuses: Sequence[Status]) -> list[Status]:
    """The statuses over their limit, in request order."""
    return [s for s in statuses if s.code is Code.OVER_LIMIT and s.rule is not None]


def binding(statuses: Sequence[Status]) -> Status | None:
    """Of an answer's statuses, the exceeded one whose wait is the Retry-After (the first of
    equals): the longest wait of the exceeded limits that are not quotas, or the shortest of
    the quotas' when every quota limit of the request was exceeded, whichever is longer; an
    exceeded quota when nothing else is. None when no limit is exceeded."""
    plain: Status | None = None
    quota: Status | None = None
    quota_passed = False
    for status in statuses:
        rule = status.rule
        if rule is None:
            continue
        if status.code is not Code.OVER_LIMIT:
            quota_passed = quota_passed or rule.quota_mode
        elif not rule.quota_mode:
            if plain is None or _wait(status) > _wait(plain):
                plain = status
        elif quota is None or _wait(status) < _wait(quota):
            quota = status
    if plain is None:
        return quota
    if quota is not None and not quota_passed and _wait(quota) > _wait(plain):
        return quota
    return plain


def _wait(status: Status) -> int:
    return status.reset_us or 0
