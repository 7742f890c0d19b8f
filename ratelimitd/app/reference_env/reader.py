"""Reading one environment into a Translation: the reference variables that are set, the ones
ours override, and what each set or why it has no effect."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from ratelimitd.app.settings import ENV_PREFIX

log = structlog.get_logger(__name__)


@dataclass
class Translation:
    """What the reference's variables in one environment mean here."""

    # RATELIMITD_* variables implied by the reference's (only ones the environment leaves unset)
    environ: dict[str, str] = field(default_factory=dict)
    # reference variable -> (the RATELIMITD_* variable it set, what to log; never a secret)
    read: dict[str, tuple[str, str]] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)  # variable -> how we behave
    ignored: dict[str, str] = field(default_factory=dict)  # variable -> why it has no effect
    overridden: dict[str, str] = field(default_factory=dict)  # variable -> what wins
    errors: list[str] = field(default_factory=list)  # "VARIABLE: problem"

    def note(self, final: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """The fields of the `reference_environment` startup event, given the settings in
        force as RATELIMITD_* variables (Settings.to_environment): a variable whose value a
        flag replaced counts as overridden. Empty when no reference variable set anything,
        which is also the case in worker processes (they get every setting as RATELIMITD_*)."""
        read: dict[str, str] = {}
        overridden = dict(self.overridden)
        for name, (target, shown) in self.read.items():
            if final.get(target) == self.environ[target]:
                read[name] = shown
            else:
                overridden[name] = "--" + target.removeprefix(ENV_PREFIX).lower().replace("_", "-")
        if not read:
            return {}
        fields = {
            "read": read,
            "accepted": self.accepted,
            "ignored": self.ignored,
            "overridden": overridden,
        }
        return {kind: names for kind, names in fields.items() if names}

    def log(self, final: Mapping[str, str]) -> None:
        """Log which reference variables were read and what became of them, as one event: a
        warning if some have no effect here."""
        fields = self.note(final)
        if fields:
            emit = log.warning if "ignored" in fields else log.info
            emit("reference_environment", **fields)


class InvalidError(ValueError):
    """A reference variable with a value that cannot be used; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")


class Reader:
    """Reads one environment into a Translation."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.result = Translation()

    def value(self, name: str) -> str | None:
        """The variable's value; None when unset or empty."""
        return self._environ.get(name) or None

    def named(self, prefix: str) -> list[str]:
        """The variables whose names start with `prefix` that are set (and not empty)."""
        return sorted(
            name for name, value in self._environ.items() if name.startswith(prefix) and value
        )

    def flag(self, name: str) -> bool:
        """A boolean variable, read as the reference reads it (Go's strconv.ParseBool)."""
        text = self.value(name)
        try:
            return text is not None and go_bool(text)
        except ValueError as exc:
            raise InvalidError(name, str(exc)) from None

    def claim(self, names: Iterable[str], *targets: str) -> list[str]:
        """The variables of `names` that are set, if they may set `targets` (none of ours
        is set); else they are recorded as overridden and the answer is empty."""
        present = [name for name in names if self.value(name) is not None]
        winner = next((target for target in targets if target in self._environ), None)
        if winner is None:
            return present
        for name in present:
            self.result.overridden[name] = winner
        return []

    def set(self, target: str, value: str, names: Iterable[str], shown: str | None = None) -> None:
        """Record that `names` set `target` to `value` (logged as `shown`, if given)."""
        self.result.environ[target] = value
        for name in names:
            self.result.read[name] = (target, f"{target}={value if shown is None else shown}")

    def simple(self, name: str, target: str, parse: Callable[[str], str]) -> None:
        """One variable that maps to one of ours through `parse`."""
        if self.claim([name], target):
            try:
                value = parse(self.value(name) or "")
            except ValueError as exc:
                raise InvalidError(name, str(exc)) from None
            self.set(target, value, [name])


def go_bool(text: str) -> bool:
    """`text` read as Go's strconv.ParseBool reads it; ValueError if it is not a boolean."""
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise ValueError(f"'{text}' is not true or false")
