"""Store keys for counters.

A key names one counter: the domain, the request's descriptor entries, and the limit's
identity (algorithm and parameters), so that a changed rule never reads another rule's state:

    rl:{<domain>:<key1>=<value1>}:<algorithm>:<per_unit>/<window s>:<burst>[:<key>=<value>]...

(`<window s>`: the unit's seconds times unit_multiplier, so 100 per minute and 100 per
5 minutes never share a counter; `<window s>@<zone>` for a calendar window, so it shares
none with a window from the epoch or in another zone.)

- Unambiguous: every component is percent-escaped for the separators (`% : = { } # ~`), so no
  two distinct descriptors produce the same key whatever their values contain.
- Bounded: a hash tag or tail longer than its budget is replaced by `#` and a 128-bit BLAKE2b
  digest of the escaped text (`#` never appears unescaped, so digests cannot collide with
  plain text).
- Cluster-friendly: the `{...}` hash tag holds the domain and first entry (usually the
  tenant), so all of a tenant's counters share one Redis Cluster slot.
- Shared wildcard counters (`share_threshold`) use `~<pattern>` in place of `=<value>`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

from ratelimitd.model.rules import Limit

DEFAULT_PREFIX = "rl:"
TAG_BUDGET = 96
TAIL_BUDGET = 160

_SPECIAL = re.compile(r"[%:={}#~\x00-\x1f\x7f]")


def _escape_char(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def escape(text: str) -> str:
    """Percent-escape the characters keys use as separators."""
    return _SPECIAL.sub(_escape_char, text) if _SPECIAL.search(text) else text


def _bounded(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    return "#" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _entry(key: str, value: str, shared_pattern: str | None) -> str:
    if shared_pattern is not None:
        return f"{escape(key)}~{escape(shared_pattern)}"
    return f"{escape(key)}={escape(value)}"


# Entries longer than this in all are not cached: the cache's memory stays bounded however
# long the values a client sends.
_CACHED_ENTRIES_CHARS = 512


def counter_key(
    domain: str,
    entries: Sequence[tuple[str, str]],
    limit: Limit,
    algorithm_tag: str,
    shared: Sequence[str | None] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The store key of the counter for `entries` under `limit` in `domain`.

    `shared[i]`, when given and not None, is the wildcard pattern whose matches share one
    counter, used in place of entry i's value.
    """
    if sum(len(key) + len(value) for key, value in entries) <= _CACHED_ENTRIES_CHARS:
        return _cached_counter_key(domain, entries, limit, algorithm_tag, shared, prefix)
    return _counter_key(domain, entries, limit, algorithm_tag, shared, prefix)


def _counter_key(
    domain: str,
    entries: Sequence[tuple[str, str]],
    limit: Limit,
    algorithm_tag: str,
    shared: Sequence[str | None] | None,
    prefix: str,
) -> str:
    window = str(limit.window_seconds)
    if limit.calendar_zone is not None:
        window += f"@{escape(limit.calendar_zone)}"
    identity = f"{algorithm_tag}:{limit.requests_per_unit}/{window}:{limit.burst}"
    return _key(domain, entries, identity, shared, prefix)


def slot_key(
    domain: str,
    entries: Sequence[tuple[str, str]],
    capacity: int,
    shared: Sequence[str | None] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The store key of the in-flight slots for `entries` under a `concurrency: capacity`
    limit: `<prefix>{<tag>}:concurrency:<capacity>[:<tail>]`, escaped and bounded as counter
    keys are (a changed capacity starts afresh, as a changed rate does)."""
    return _key(domain, entries, f"concurrency:{capacity}", shared, prefix)


def _key(
    domain: str,
    entries: Sequence[tuple[str, str]],
    identity: str,
    shared: Sequence[str | None] | None,
    prefix: str,
) -> str:
    parts = [
        _entry(key, value, shared[i] if shared else None) for i, (key, value) in enumerate(entries)
    ]
    tag = _bounded(f"{escape(domain)}:{parts[0]}", TAG_BUDGET)
    key = f"{prefix}{{{tag}}}:{identity}"
    if len(parts) > 1:
        key = f"{key}:{_bounded(':'.join(parts[1:]), TAIL_BUDGET)}"
    return key


# Hot tenants' keys are built once, not on every plan.
_cached_counter_key = functools.lru_cache(maxsize=16_384)(_counter_key)
