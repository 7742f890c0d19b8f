"""The three Envoy examples of envoy/, and what to try on each once it runs: curl commands,
each with the answer it should get (rendered for people, and parsed back by
tests/test_demos.py, so what is printed is what is checked)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Try:
    """One request to send `times` times in a row through Envoy, and what each answers."""

    path: str
    headers: tuple[tuple[str, str], ...] = ()
    post: bool = False
    times: int = 1
    status: int = 200
    expect_headers: tuple[str, ...] = ()  # present in the answer
    why: str = ""

    def curl(self, listener: str) -> str:
        """The curl command line, for `listener` (http://host:port)."""
        words = ["curl", "-i"]
        for name, value in self.headers:
            words += ["-H", f"{name}: {value}"]
        if self.post:
            words += ["-d", "{}"]
        return shlex.join([*words, listener + self.path])

    def answer(self) -> str:
        """What it answers: `[<n> times: ]HTTP <status>[ with <header>, ...][ (<why>)]`."""
        text = f"{self.times} times: " if self.times > 1 else ""
        text += f"HTTP {self.status}"
        if self.expect_headers:
            text += " with " + ", ".join(self.expect_headers)
        return text + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class Example:
    """A directory of envoy/: its Envoy bootstrap and ratelimitd config, and what to try."""

    name: str
    what: str
    tries: tuple[Try, ...] = field(default_factory=tuple)

    @property
    def bootstrap(self) -> str:
        """The bootstrap's path, relative to the repository."""
        return f"envoy/{self.directory}envoy.yaml"

    @property
    def config(self) -> str:
        """The ratelimitd config's path, relative to the repository."""
        return f"envoy/{self.directory}ratelimitd.yaml"

    @property
    def directory(self) -> str:
        """Its directory under envoy/ ('' for envoy/ itself), with a trailing slash."""
        return "" if self.name == "envoy" else f"{self.name}/"


def _tenant(name: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", name),)


def _llm(tenant: str, model: str | None, usage: int) -> tuple[tuple[str, str], ...]:
    headers = [("x-tenant-id", tenant), ("x-model", model), ("x-usage", str(usage))]
    return tuple((k, v) for k, v in headers if v is not None)


RETRY = ("retry-after",)

EXAMPLES = {
    example.name: example
    for example in (
        Example(
            "envoy",
            "the rate limit filter, descriptors from headers (domain edge)",
            (
                Try("/", _tenant("t1"), times=5, why="tenant t1: 5 a minute"),
                Try("/", _tenant("t1"), status=429, expect_headers=RETRY, why="the 6th"),
                Try("/slow", _tenant("t2"), times=2, why="t2 on /slow: 2 a minute"),
                Try("/slow", _tenant("t2"), status=429, expect_headers=RETRY, why="the 3rd"),
                Try("/", _tenant("acme"), why="acme: 100 a minute, bursts of 150"),
            ),
        ),
        Example(
            "ext-authz",
            "ext_authz, descriptors from the path by ratelimitd's extract: (domain api)",
            (
                Try("/v1/initech/search", times=2, why="free plan: 2 searches a minute"),
                Try("/v1/initech/search", status=429, expect_headers=RETRY, why="the 3rd"),
                Try("/v1/acme/search", times=5, why="acme, pro plan: 5 searches a minute"),
                Try("/v1/acme/search", status=429, expect_headers=RETRY, why="the 6th"),
                Try("/healthz", why="never limited"),
            ),
        ),
        Example(
            "llm-quota",
            "token quotas charged after the answer; x-usage picks the tokens the stand-in "
            "model server reports (domain llm)",
            (
                Try(
                    "/v1/chat/completions",
                    _llm("t1", "small", 6000),
                    post=True,
                    times=2,
                    expect_headers=("x-tokens-used",),
                    why="10,000 tokens a minute: the 2nd is let in with 4,000 left, "
                    "and leaves t1 2,000 in debt",
                ),
                Try(
                    "/v1/chat/completions",
                    _llm("t1", "small", 6000),
                    post=True,
                    status=429,
                    expect_headers=RETRY,
                    why="in debt until refill pays it back",
                ),
                Try(
                    "/v1/chat/completions",
                    _llm("t1", "large", 100),
                    post=True,
                    expect_headers=("x-tokens-used",),
                    why="another model, another bucket",
                ),
                Try(
                    "/v1/chat/completions",
                    _llm("t1", None, 100),
                    post=True,
                    status=400,
                    why="no x-model: never reaches the model",
                ),
            ),
        ),
    )
}
