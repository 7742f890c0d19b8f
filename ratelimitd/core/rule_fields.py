"""A rule as people see it, rendered in one place: its fields as JSON-ready data (what
`POST /explain` and `explain --json` show) and the two one-line texts made from them, the
`/rlconfig` line and the rule line of `explain`'s text.
"""

from __future__ import annotations

from typing import TypedDict

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.model.rules import Rule


class RuleFields(TypedDict):
    """Every field of a rule; the limit's fields are None for an unlimited rule, `source`
    for a rule made from Envoy's limit override."""

    domain: str
    full_key: str
    name: str | None
    source: str | None
    unlimited: bool
    algorithm: str | None
    requests_per_unit: int | None
    unit: str | None
    burst: int | None
    overdraft: int | None
    replaces: list[str]
    shadow_mode: bool
    quota_mode: bool
    detailed_metric: bool
    failure_mode: str
    unit_multiplier: int | None
    window: str | None  # the window in words (Limit.window_text)
    calendar: str | None  # the time zone of a calendar window
    concurrency: int | None  # requests in flight at most, for a concurrency limit


def rule_fields(rule: Rule) -> RuleFields:
    """The rule's fields, the limit's flattened in; `unit` is the Unit's name (MINUTE)."""
    limit = rule.limit
    return {
        "domain": rule.domain,
        "full_key": rule.full_key,
        "name": rule.name,
        "source": None if rule.source is None else str(rule.source),
        "unlimited": rule.unlimited,
        "algorithm": None if limit is None else limit.algorithm,
        "requests_per_unit": None if limit is None else limit.requests_per_unit,
        "unit": None if limit is None else limit.unit.name,
        "burst": None if limit is None else limit.burst,
        "overdraft": None if limit is None else limit.overdraft,
        "replaces": sorted(rule.replaces),
        "shadow_mode": rule.shadow_mode,
        "quota_mode": rule.quota_mode,
        "detailed_metric": rule.detailed_metric,
        "failure_mode": rule.failure_mode.value,
        "unit_multiplier": None if limit is None else limit.unit_multiplier,
        "window": None if limit is None else limit.window_text(),
        "calendar": None if limit is None else limit.calendar_zone,
        "concurrency": rule.concurrency,
    }


def config_line(rule: Rule) -> str:
    """The rule's /rlconfig line: `<full key>: <settings> source=<file:line>`, every setting
    as key=value; name, replaces, overdraft, unit_multiplier, calendar (its time zone),
    quota_mode and detailed_metric only when set."""
    fields = rule_fields(rule)
    if fields["unlimited"]:
        settings = ["unlimited"]
    elif fields["concurrency"] is not None:
        settings = [f"concurrency={fields['concurrency']}"]
    else:
        settings = [
            f"{key}={fields[key]}" for key in ("algorithm", "unit", "requests_per_unit", "burst")
        ]
        if fields["overdraft"]:
            settings.append(f"overdraft={fields['overdraft']}")
        if fields["unit_multiplier"] != 1:
            settings.append(f"unit_multiplier={fields['unit_multiplier']}")
        if fields["calendar"]:
            settings.append(f"calendar={fields['calendar']}")
    if fields["name"]:
        settings.append(f"name={fields['name']}")
    if fields["replaces"]:
        settings.append(f"replaces={','.join(fields['replaces'])}")
    settings.append(f"shadow_mode={str(fields['shadow_mode']).lower()}")
    if fields["quota_mode"]:
        settings.append("quota_mode=true")
    if fields["detailed_metric"]:
        settings.append("detailed_metric=true")
    settings.append(f"failure_mode={fields['failure_mode']} source={fields['source']}")
    return f"{fields['full_key']}: {' '.join(settings)}"


def summary(rule: Rule) -> str:
    """The rule in a few words for explain's text: `<full key> [name=] <algorithm> <n>/<window>
    [burst=] [overdraft=] [replaces=] [shadow_mode] [quota_mode] [detailed_metric]
    failure_mode= (source)`;
    burst only where the algorithm has one that differs from the rate."""
    fields = rule_fields(rule)
    parts = [fields["full_key"]]
    if fields["name"]:
        parts.append(f"name={fields['name']}")
    algorithm, rate = fields["algorithm"], fields["requests_per_unit"]
    if fields["concurrency"] is not None:
        parts.append(f"concurrency {fields['concurrency']}")
    elif algorithm is None:
        parts.append("unlimited")
    else:
        parts.append(f"{algorithm} {rate}/{fields['window']}")
        if ALGORITHMS[algorithm].uses_burst and fields["burst"] != rate:
            parts.append(f"burst={fields['burst']}")
        if fields["overdraft"]:
            parts.append(f"overdraft={fields['overdraft']}")
    if fields["replaces"]:
        parts.append(f"replaces={','.join(fields['replaces'])}")
    if fields["shadow_mode"]:
        parts.append("shadow_mode")
    if fields["quota_mode"]:
        parts.append("quota_mode")
    if fields["detailed_metric"]:
        parts.append("detailed_metric")
    parts.append(f"failure_mode={fields['failure_mode']}")
    parts.append(f"({fields['source'] or 'Envoy override'})")
    return " ".join(parts)
