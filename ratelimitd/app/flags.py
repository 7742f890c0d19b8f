"""The means of declaring `serve`'s flags (settings.py says which there are): a declarer that
gives each flag its environment variable and default, and the argparse types, each turning a
flag's (or its variable's) text into a value or raising ArgumentTypeError saying what is wrong."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)


class FlagDeclarer:
    """Declares flags on a parser, each defaulting to its environment variable if set, else
    to the attribute of its name in `defaults`, and records the variables read."""

    def __init__(
        self,
        parser: argparse.ArgumentParser,
        environ: Mapping[str, str],
        defaults: object,
        env_name: Callable[[str], str],
        group: argparse._ArgumentGroup | None = None,
    ) -> None:
        self.parser = parser
        # Where the flags go: the parser, or a help section of it.
        self.flags = parser if group is None else group
        self.environ = environ
        self.defaults = defaults
        self.env_name = env_name  # the variable of a flag
        self.variables: list[str] = []

    def option(self, flag: str, help_text: str, shown: str | None = None, **kwargs: Any) -> None:
        """A flag taking a value; its help ends with its variable and default (or `shown`)."""
        env = self.env_name(flag)
        self.variables.append(env)
        default = getattr(self.defaults, flag.removeprefix("--").replace("-", "_"))
        shown = shown or getattr(default, "value", default)
        self.flags.add_argument(
            flag,
            default=self.environ.get(env, default),
            help=f"{help_text} [env {env}; default {shown}]",
            **kwargs,
        )

    def switch(self, flag: str, help_text: str) -> None:
        """An on/off flag (with its --no- form), off unless its variable says true."""
        env = self.env_name(flag)
        self.variables.append(env)
        try:
            default = boolean(self.environ.get(env, ""))
        except argparse.ArgumentTypeError as exc:
            self.parser.error(f"{env}: {exc}")
        self.flags.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"{help_text} [env {env}=true|false; default false]",
        )


def choice(kind: type[E]) -> Callable[[str], E]:
    """A member of `kind`, by its value in any case."""

    def parse(text: str) -> E:
        try:
            return kind(text.lower())
        except ValueError:
            options = ", ".join(str(m.value) for m in kind)
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {options}") from None

    parse.__name__ = kind.__name__
    return parse


def one_of(*options: str) -> Callable[[str], str]:
    """One of `options`, in any case, lowercased."""

    def parse(text: str) -> str:
        if text.lower() not in options:
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {', '.join(options)}")
        return text.lower()

    return parse


def ratio(text: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number from 0 to 1")
    return value


def boolean(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0; empty is false."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


def count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number from `minimum` (to `maximum`, if given)."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number >= {minimum}")
        if maximum is not None and int(text) > maximum:
            raise argparse.ArgumentTypeError(f"'{text}' is above the maximum, {maximum}")
        return int(text)

    return parse


def positive_seconds(text: str) -> float:
    """A number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of seconds")
    return value


def key_prefix(text: str) -> str:
    """A store key prefix: no braces, which would pick Redis Cluster slots."""
    if "{" in text or "}" in text:
        raise argparse.ArgumentTypeError(f"'{text}': a key prefix cannot contain '{{' or '}}'")
    return text
