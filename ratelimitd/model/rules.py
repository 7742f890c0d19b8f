"""The immutable configuration model: domains, descriptor trees and the rules at their nodes.

Everything here is built once by the loader and never mutated afterwards, so a request can
read a config snapshot without locks while a reload builds the next one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field


class Unit(enum.Enum):
    """A rate limit unit; the value is its length in seconds (month and year as the reference
    defines them: 30 and 365 days)."""

    SECOND = 1
    MINUTE = 60
    HOUR = 3_600
    DAY = 86_400
    WEEK = 604_800
    MONTH = 2_592_000
    YEAR = 31_536_000

    @property
    def seconds(self) -> int:
        """Length of the unit in seconds."""
        return self.value


DEFAULT_ALGORITHM = "token_bucket"
# A bucket may take at most this long to refill; it also keeps every store computation exact.
MAX_REFILL_SECONDS = 10 * 365 * 86_400


class FailureMode(enum.Enum):
    """What a rule answers when the store cannot be reached in time."""

    ALLOW = "allow"
    DENY = "deny"
    UNAVAILABLE = "unavailable"  # no answer: gRPC UNAVAILABLE, Envoy's failure_mode_deny decides


def key_path(entries: Iterable[tuple[str, str | None]]) -> str:
    """Descriptor entries as the reference names them in full keys and per-value stats:
    `key_value.key_value`, a key alone where the value is empty."""
    return ".".join(f"{key}_{value}" if value else key for key, value in entries)


@dataclass(frozen=True, slots=True)
class Source:
    """Where something was declared, for error messages and /rlconfig."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Limit:
    """What a store enforces for one counter: the algorithm and its parameters.

    `burst` is the capacity of the bucket (token bucket) and defaults to requests_per_unit.
    `overdraft` is the most debt, in units of cost, that charges past the limit may run up
    (`overdraft: true`); 0 for a limit that rejects what it cannot take.
    The window is `unit_multiplier` units (100 per 5 minutes). `calendar_zone`, set only for
    calendar windows, is the IANA time zone whose calendar days, weeks, months or years the
    windows follow (algorithms/calendar.py); otherwise windows align to the Unix epoch.
    """

    algorithm: str
    requests_per_unit: int
    unit: Unit
    burst: int
    overdraft: int = 0
    unit_multiplier: int = 1
    calendar_zone: str | None = None

    @property
    def window_seconds(self) -> int:
        """Length of the window in seconds (a calendar window's nominal length: months of
        30 days, years of 365)."""
        return self.unit.seconds * self.unit_multiplier

    @property
    def unit_us(self) -> int:
        """Length of the window in microseconds, the time base of every store."""
        return self.window_seconds * 1_000_000

    def window_text(self) -> str:
        """The window in words: `minute`, `5 minutes`, `calendar month (Europe/Berlin)`."""
        unit = self.unit.name.lower()
        text = unit if self.unit_multiplier == 1 else f"{self.unit_multiplier} {unit}s"
        if self.calendar_zone is not None:
            text = f"calendar {text} ({self.calendar_zone})"
        return text


@dataclass(frozen=True, slots=True)
class Rule:
    """A `rate_limit` as configured at one descriptor node (or synthesised from Envoy's
    per-descriptor limit override).

    `limit` is None when the rule is unlimited or a concurrency limit. A `quota_mode` rule
    over its limit answers OVER_LIMIT for its descriptor but rejects the request only together
    with every other quota rule of it (the reference's `quota_mode`). `concurrency` (no rate)
    is how many requests of the descriptor may be in flight at once: only the in-app
    middleware enforces it, since only it sees requests end.
    """

    domain: str
    full_key: str
    limit: Limit | None
    name: str | None
    replaces: frozenset[str]
    shadow_mode: bool
    detailed_metric: bool
    failure_mode: FailureMode
    source: Source | None
    # The descriptor's `metadata:`, for the answer's dynamic metadata; not part of equality
    # (a dict has no hash).
    metadata: Mapping[str, object] | None = field(default=None, compare=False)
    quota_mode: bool = False
    concurrency: int | None = None

    @property
    def unlimited(self) -> bool:
        """True for `unlimited: true` rules, which never touch the store."""
        return self.limit is None and self.concurrency is None

    @property
    def label(self) -> str:
        """What answers, headers, metrics and reports call the rule: its `name`, else its
        full key."""
        return self.name or self.full_key


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A descriptor value containing `*`: any run of characters, tried in file order."""

    pattern: str
    node: Node
    matches: Callable[[str], bool]

    @staticmethod
    def compile(pattern: str) -> Callable[[str], bool]:
        """Build the predicate for a wildcard value (a trailing `*` alone is a prefix test)."""
        if pattern.count("*") == 1 and pattern.endswith("*"):
            prefix = pattern[:-1]
            return lambda value: value.startswith(prefix)
        regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
        return lambda value: regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """All sibling nodes of one descriptor key at one level, indexed for the reference's
    lookup order: exact value, then wildcards in file order, then the key-only node."""

    exact: Mapping[str, Node]
    wildcards: tuple[Wildcard, ...]
    any_value: Node | None


@dataclass(frozen=True, slots=True)
class Node:
    """One descriptor entry of the config tree.

    `share_threshold` (wildcard nodes only) makes every value matching the wildcard share one
    counter instead of one counter per value.
    """

    key: str
    value: str | None
    rule: Rule | None
    children: Mapping[str, KeyIndex]
    share_threshold: bool
    source: Source


@dataclass(frozen=True, slots=True)
class ExtractEntry:
    """One entry of a descriptor built from an HTTP request: its key, and where its value
    comes from. `kind` names the source (`header`, `path`, `path_segments`, `method`,
    `source_address`, `jwt_claim`, `value`); `argument` is the source's parameter (a header
    name, a segment count, a claim path, trusted hops, a constant); `pattern` is a compiled
    path template, or a header's or claim's `regex` whose first group is the value."""

    key: str
    kind: str
    argument: str | int
    pattern: re.Pattern[str] | None
    source: Source
    jwt_header: str = "authorization"


@dataclass(frozen=True, slots=True)
class ExtractDescriptor:
    """A descriptor built from an HTTP request; skipped when any entry has no value."""

    entries: tuple[ExtractEntry, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class Defaults:
    """Values for rule fields a file leaves out: the command line's, or a file's `defaults:`.
    `quota_mode` (the command line's only, the reference's QUOTA_MODE) makes every rule of the
    domain a quota rule, and a descriptor without a limit a quota that passes."""

    algorithm: str = DEFAULT_ALGORITHM
    failure_mode: FailureMode = FailureMode.ALLOW
    timezone: str = "UTC"  # of calendar windows
    quota_mode: bool = False


class Blanket(enum.Enum):
    """An RLQS assignment that counts nothing: every request of the bucket admitted, or none."""

    ALLOW_ALL = "allow_all"
    DENY_ALL = "deny_all"


@dataclass(frozen=True, slots=True)
class QuotaBuckets:
    """A domain's `rlqs:` section: the bucket_id keys which, in this order, form the
    descriptor a rate_limit_quota bucket is matched with, and what a bucket that matches no
    limited rule is assigned (a blanket rule, or a rule of its own)."""

    keys: tuple[str, ...]
    unmatched: Blanket | Rule
    source: Source


@dataclass(frozen=True, slots=True)
class Domain:
    """The descriptor tree of one `domain`, the defaults its rules were built with (which
    also apply to Envoy's limit overrides in this domain), and how to build descriptors from
    an HTTP request for external-authorization calls."""

    name: str
    root: Mapping[str, KeyIndex]
    source: Source
    defaults: Defaults = Defaults()
    extract: tuple[ExtractDescriptor, ...] = ()  # descriptors of ext_authz Check calls
    rlqs: QuotaBuckets | None = None  # how rate_limit_quota buckets find their rules


@dataclass(frozen=True, slots=True)
class Config:
    """A complete, validated configuration: every domain, and every rule in file order."""

    domains: Mapping[str, Domain] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()
    digest: str = ""  # the loader's ContentDigest of `files`
    warnings: tuple[str, ...] = ()  # `file:line: message` of what loads but has no effect
