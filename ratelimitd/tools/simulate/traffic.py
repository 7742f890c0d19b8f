"""The requests `ratelimitd simulate` replays: synthetic patterns and traffic files
(`--descriptor` and `--hits` are tools.request_flags').

Traffic file: JSON lines, one request per line (blank lines are skipped), for example

    {"t": 0.25, "domain": "example", "descriptors": [[["tenant", "acme"], ["route", "/a"]]]}

- `t` (required): seconds since the start of the simulation, >= 0. Lines are replayed in
  time order, file order among equal times.
- `domain`: the request's domain; may be left out when `--domain` is given.
- `descriptors` (required): a list of descriptors, each a list of `[key, value]` pairs or, as
  in protobuf JSON, `{"entries": [{"key": k, "value": v}], "hits_addend": n}`.
- `hits` (or `hits_addend`, `hitsAddend`): the request's hits_addend; 0 (default) means 1.
- `count`: this many identical requests at `t` (default 1).

So the body of a `POST /json` request plus a `t` is a valid line.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ratelimitd.core.headers import US_PER_S
from ratelimitd.core.validation import DEFAULT_REQUEST_LIMITS, validate
from ratelimitd.model.messages import Descriptor, InvalidRequestError, Request

# Requests one pattern or one traffic line may make: a typo must not exhaust memory or time.
MAX_REQUESTS = 10_000_000
_HITS_FIELDS = ("hits", "hits_addend", "hitsAddend")  # ours, then protobuf JSON's spellings
_LINE_FIELDS = ("t", "domain", "descriptors", *_HITS_FIELDS, "count")
_DESCRIPTOR_FIELDS = ("entries", "hits_addend", "hitsAddend")
_ENTRY_FIELDS = ("key", "value")
_PATTERNS = {
    "steady": ("RATE", "DURATION"),
    "ramp": ("FROM", "TO", "DURATION"),
    "burst": ("COUNT",),
}
PATTERN_SYNTAX = "steady:RATE:DURATION, ramp:FROM:TO:DURATION or burst:COUNT, optionally @START"


class SimulateError(Exception):
    """Simulate cannot go on; the message says why (with file and line for a traffic file)."""


class Arrival(NamedTuple):
    """`repeat` requests at `t_us` microseconds after the start."""

    t_us: int
    repeat: int


class Event(NamedTuple):
    """`request`, `repeat` times at `t_us` microseconds after the start."""

    t_us: int
    request: Request
    repeat: int = 1


def whole_number(value: object, what: str, minimum: int, maximum: int = 2**32 - 1) -> int:
    """`value` as a whole number from `minimum` to `maximum`; SimulateError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulateError(f"{what} must be a whole number, not {value!r}")
    if not minimum <= value <= maximum:
        raise SimulateError(f"{what} must be between {minimum} and {maximum}, not {value}")
    return value


def non_negative(value: object, what: str) -> float:
    """`value` as a finite number >= 0; SimulateError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SimulateError(f"{what} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise SimulateError(f"{what} must be a finite number >= 0, not {value}")
    return float(value)


def number(text: str) -> int | float | str:
    """A pattern argument as a number where it is one (the checks then say what is wrong)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _arrival_s(i: int, rate: float, accel: float) -> float:
    """When the expected count rate*t + accel*t**2 reaches i: the root of that quadratic, in
    the form that stays exact for accel == 0 (i / rate) and never cancels."""
    return 2 * i / (rate + math.sqrt(rate * rate + 4 * accel * i)) if i else 0.0


def parse_pattern(spec: str) -> list[Arrival]:
    """The arrivals of a synthetic pattern, from t=0 or from `@START` seconds:

    - `steady:RATE:DURATION`: RATE requests per second, evenly spaced, for DURATION seconds;
    - `ramp:FROM:TO:DURATION`: the same with a rate changing linearly from FROM to TO;
    - `burst:COUNT`: COUNT requests at one instant.
    """
    body, at, start_text = spec.partition("@")
    kind, *args = body.split(":")
    names = _PATTERNS.get(kind)
    if names is None or len(args) != len(names) or (at and not start_text):
        raise SimulateError(f"bad pattern {spec!r}: expected {PATTERN_SYNTAX}")
    values = dict(zip(names, map(number, args), strict=True))

    def arg(name: str) -> float:
        return non_negative(values[name], f"pattern {spec!r}: {name}")

    start = non_negative(number(start_text or "0"), f"pattern {spec!r}: START")
    start_us = round(start * US_PER_S)
    if kind == "burst":
        count = whole_number(values["COUNT"], f"pattern {spec!r}: COUNT", 1, MAX_REQUESTS)
        return [Arrival(start_us, count)]
    rate_from, rate_to = (arg("RATE"),) * 2 if kind == "steady" else (arg("FROM"), arg("TO"))
    duration = arg("DURATION")
    # A hair over the product: 2.3/s for 100 s (229.99999999999997) makes 230 requests.
    total = math.floor((rate_from + rate_to) / 2 * duration + 1e-9)
    if total < 1:
        raise SimulateError(f"pattern {spec!r} makes no requests")
    if total > MAX_REQUESTS:
        raise SimulateError(f"pattern {spec!r} makes {total} requests; at most {MAX_REQUESTS}")
    accel = (rate_to - rate_from) / (2 * duration)
    return [
        Arrival(start_us + round(_arrival_s(i, rate_from, accel) * US_PER_S), 1)
        for i in range(total)
    ]


def checked_request(domain: str, descriptors: tuple[Descriptor, ...], hits: int) -> Request:
    """A request the engine will take: checked now, so that a bad one is reported where it
    was written rather than in the middle of the replay."""
    request = Request(domain, descriptors, hits)
    try:
        validate(request, DEFAULT_REQUEST_LIMITS)
    except InvalidRequestError as exc:
        raise SimulateError(str(exc)) from None
    return request


def _check_fields(value: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for name in value:
        if name not in allowed:
            near = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(allowed)})"
            raise SimulateError(f"{where}unknown field '{name}'{hint}")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise SimulateError(f"{what} must be a string, not {value!r}")
    return value


def _descriptor(value: object, where: str) -> Descriptor:
    """A traffic line's descriptor: [[key, value], ...] or protobuf JSON's {"entries": ...}."""
    pairs, hits = value, None
    if isinstance(value, dict):
        _check_fields(value, _DESCRIPTOR_FIELDS, f"{where}: ")
        pairs = value.get("entries")
        if not isinstance(pairs, list):
            raise SimulateError(f"{where}: 'entries' must be a list of {{key, value}} objects")
        cost = next((value[name] for name in _DESCRIPTOR_FIELDS[1:] if name in value), None)
        hits = None if cost is None else whole_number(cost, f"{where}: 'hits_addend'", 0)
    elif not isinstance(pairs, list):
        raise SimulateError(
            f"{where} must be a list of [key, value] pairs or an object with 'entries'"
        )
    entries = []
    for j, pair in enumerate(pairs):
        what = f"{where} entry {j}"
        if isinstance(pair, dict):
            _check_fields(pair, _ENTRY_FIELDS, f"{what}: ")
            key, text = pair.get("key"), pair.get("value", "")  # protobuf JSON omits ""
        elif isinstance(pair, list) and len(pair) == 2:
            key, text = pair
        else:
            raise SimulateError(f"{what} must be a [key, value] pair")
        entries.append((_text(key, f"{what} key"), _text(text, f"{what} value")))
    return Descriptor(tuple(entries), None, hits)


def _event(text: str, default_domain: str | None) -> Event:
    """One traffic line as an event."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimulateError(f"not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(line, dict):
        raise SimulateError("expected a JSON object")
    _check_fields(line, _LINE_FIELDS, "")
    if "t" not in line:
        raise SimulateError("missing 't' (seconds since the start)")
    t_us = round(non_negative(line["t"], "'t'") * US_PER_S)
    domain = line.get("domain", default_domain)
    if domain is None:
        raise SimulateError("missing 'domain' (or give --domain)")
    descriptors = line.get("descriptors")
    if not isinstance(descriptors, list):
        raise SimulateError("'descriptors' must be a list of descriptors")
    hits = next((line[name] for name in _HITS_FIELDS if name in line), 0)
    request = checked_request(
        _text(domain, "'domain'"),
        tuple(_descriptor(d, f"descriptor {i}") for i, d in enumerate(descriptors)),
        whole_number(hits, "'hits'", 0),
    )
    return Event(t_us, request, whole_number(line.get("count", 1), "'count'", 1, MAX_REQUESTS))


def parse_traffic(lines: Iterable[bytes], name: str, default_domain: str | None) -> list[Event]:
    """The events of a traffic file's lines, in file order; errors name `name` and the line."""
    events = []
    for line_number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").strip()
            if text:
                events.append(_event(text, default_domain))
        except (SimulateError, UnicodeDecodeError) as exc:
            raise SimulateError(f"{name}:{line_number}: {exc}") from None
    return events


def read_traffic(path: str, default_domain: str | None) -> list[Event]:
    """The events of the traffic file at `path` (`-`: standard input)."""
    if path == "-":
        return parse_traffic(sys.stdin.buffer, "<stdin>", default_domain)
    try:
        with open(path, "rb") as file:
            return parse_traffic(file, path, default_domain)
    except OSError as exc:
        raise SimulateError(f"{path}: cannot read the traffic file: {exc.strerror}") from None
