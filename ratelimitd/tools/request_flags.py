"""The command line's words for a request, one vocabulary for `ratelimitd explain`,
`ratelimitd simulate` and `examples/client.py`:

- `--descriptor KEY=VALUE[,KEY=VALUE...]`: one descriptor, its entries in order; repeatable,
  one descriptor per flag. Within a key or value, `\\,` `\\=` `\\\\` stand for a literal
  comma, equals sign and backslash. Anything that could mean two things is an error: an entry
  without `=`, a second unescaped `=` in an entry (`tenant=acme route=/x` typed as one entry),
  an empty key or one with spaces around it, a backslash before any other character.
- `--hits N`: the request's `hits_addend`, one request costing N (0, the default, counts as
  1); `--hits-addend`, the RLS field's name, is read as the same flag.
- Bare `KEY=VALUE` arguments (the old positional entries) are refused, naming the flag.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from typing import Any

from ratelimitd.model.messages import Descriptor
from ratelimitd.model.quota import BucketId, bucket_id

DESCRIPTOR_SYNTAX = "KEY=VALUE[,KEY=VALUE...]"
MAX_HITS = 2**32 - 1  # hits_addend is a uint32
_ESCAPABLE = (",", "=", "\\")


class DescriptorSyntaxError(ValueError):
    """A `--descriptor` value that is not one unambiguous descriptor; the message says why."""


def _unescaped(spec: str) -> list[tuple[str, bool]]:
    """`spec`'s characters, each with whether it was escaped."""
    chars: list[tuple[str, bool]] = []
    rest = iter(spec)
    for char in rest:
        if char != "\\":
            chars.append((char, False))
            continue
        escaped = next(rest, "")
        if escaped not in _ESCAPABLE:  # a trailing backslash escapes ""
            raise DescriptorSyntaxError(
                f"bad descriptor {spec!r}: a backslash escapes only ',', '=' or '\\' "
                "(write \\\\ for a backslash)"
            )
        chars.append((escaped, True))
    return chars


def _entry(item: list[tuple[str, bool]], spec: str) -> tuple[str, str]:
    """One `KEY=VALUE` of a descriptor, from its characters."""
    text = "".join(char for char, _ in item)
    equals = [i for i, (char, escaped) in enumerate(item) if char == "=" and not escaped]
    if not equals:
        raise DescriptorSyntaxError(
            f"bad descriptor {spec!r}: {text!r} is not KEY=VALUE "
            "(write \\, for a comma inside a value)"
        )
    if len(equals) > 1:
        raise DescriptorSyntaxError(
            f"bad descriptor {spec!r}: {text!r} has more than one '=': separate entries with "
            "',' (write \\= for an '=' inside a value)"
        )
    key = "".join(char for char, _ in item[: equals[0]])
    if not key or key != key.strip():
        raise DescriptorSyntaxError(
            f"bad descriptor {spec!r}: key {key!r} is empty or has spaces around it"
        )
    return key, "".join(char for char, _ in item[equals[0] + 1 :])


def parse_descriptor(spec: str) -> Descriptor:
    """`KEY=VALUE[,KEY=VALUE...]` as a descriptor; DescriptorSyntaxError for anything that
    could be read two ways (see the module's docstring)."""
    items: list[list[tuple[str, bool]]] = [[]]
    for char, escaped in _unescaped(spec):
        if char == "," and not escaped:
            items.append([])
        else:
            items[-1].append((char, escaped))
    return Descriptor(tuple(_entry(item, spec) for item in items))


def _descriptor_argument(text: str) -> Descriptor:
    try:
        return parse_descriptor(text)
    except DescriptorSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bucket_argument(text: str) -> BucketId:
    """A `--bucket` value: a bucket_id written as a descriptor (its order does not matter);
    each key once."""
    try:
        entries = parse_descriptor(text).entries
    except DescriptorSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("descriptor", "bucket")) from None
    keys = [key for key, _ in entries]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"bad bucket {text!r}: key {repeated[0]!r} twice")
    return bucket_id(dict(entries))


def _hits(text: str) -> int:
    """A `--hits` value: a whole number from 0 to MAX_HITS."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_HITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 0 to {MAX_HITS} (the cost of one request)"
        )
    return int(text)


class _RefuseBareEntries(argparse.Action):
    """Bare KEY=VALUE arguments (once one descriptor's entries, or a descriptor's entries
    after the first given as separate arguments): an error showing the flag."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if not values:
            return
        tokens = " ".join(shlex.quote(str(value)) for value in values)
        # One example for every case: which descriptor stray entries belong to is a guess.
        parser.error(
            f"unexpected {tokens}: each descriptor is one --descriptor, its entries joined by "
            "commas (--descriptor tenant=acme,route=/v1/search, not tenant=acme route=/v1/search)"
        )


def add_request_flags(
    parser: argparse.ArgumentParser, whose: str, *, required: bool = False
) -> None:
    """Declare `--descriptor` and `--hits` on `parser`, for the request(s) named by `whose`
    ("the request", "every --pattern request"), and refuse bare KEY=VALUE arguments."""
    parser.add_argument(
        "--descriptor",
        action="append",
        default=[],
        required=required,
        type=_descriptor_argument,
        metavar=DESCRIPTOR_SYNTAX,
        help=f"a descriptor of {whose}, its entries in order; repeatable, one descriptor per "
        "flag (write \\, \\= \\\\ for a comma, equals sign, backslash in a key or value)",
    )
    parser.add_argument(
        "--hits",
        type=_hits,
        default=0,
        metavar="N",
        help=f"the hits_addend of {whose}: one request costing N (default 0, which counts as 1)",
    )
    parser.add_argument("--hits-addend", dest="hits", type=_hits, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "bare_entries", nargs="*", action=_RefuseBareEntries, help=argparse.SUPPRESS
    )
