"""Descriptors built from HTTP requests (the `extract:` section, for ext_authz Check calls):
every source, skipped descriptors, hostile input, and config validation with file:line."""

from __future__ import annotations

import base64
import functools
import json
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.extract_rules import SOURCES
from ratelimitd.config.loader import load_config
from ratelimitd.core.extract import MAX_VALUE_CHARS, READERS, descriptors
from ratelimitd.model.messages import HttpAttributes
from ratelimitd.model.rules import Domain

CONFIG = """
domain: api
extract:
  - entries:
      - {key: tenant, path: "/v1/{tenant}/**"}
  - entries:
      - {key: tenant, path: "/v1/{tenant}/**"}
      - {key: route, path_segments: 3}
  - entries:
      - {key: api_key, header: X-API-Key}
  - entries:
      - {key: bearer, header: authorization, regex: "^Bearer (.+)$"}
  - entries:
      - {key: client, source_address: true, trusted_hops: 1}
  - entries:
      - {key: method, method: true}
      - {key: plan, value: gold}
  - entries:
      - {key: user, jwt_claim: sub}
  - entries:
      - {key: org, jwt_claim: org.id, jwt_header: x-jwt}
"""


def domain_of(tmp_path: Path, text: str = CONFIG) -> Domain:
    path = tmp_path / "api.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_config([path]).domains["api"]


def jwt(claims: object) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{part(b'{}')}.{part(json.dumps(claims).encode())}.signature"


def built(domain: Domain, **attributes: object) -> list[list[tuple[str, str]]]:
    request = HttpAttributes(**attributes)  # type: ignore[arg-type]
    return [list(d.entries) for d in descriptors(domain, request)]


@pytest.fixture
def api(tmp_path: Path) -> Domain:
    return domain_of(tmp_path)


def test_a_full_request_yields_every_descriptor(api: Domain) -> None:
    headers = {
        "x-api-key": "k-1",
        "authorization": f"Bearer {jwt({'sub': 'alice'})}",
        "x-forwarded-for": "203.0.113.7, 10.0.0.2",
        "x-jwt": jwt({"org": {"id": 42}}),
    }
    assert built(
        api,
        method="POST",
        path="/v1/acme/search/deep?q=1",
        headers=headers,
        source_address="10.0.0.9",
    ) == [
        [("tenant", "acme")],
        [("tenant", "acme"), ("route", "/v1/acme/search")],
        [("api_key", "k-1")],
        [("bearer", headers["authorization"][7:])],
        [("client", "10.0.0.2")],  # one trusted hop: the last address it appended
        [("method", "POST"), ("plan", "gold")],
        [("user", "alice")],
        [("org", "42")],
    ]


def test_descriptors_with_a_missing_value_are_skipped(api: Domain) -> None:
    # No tenant in the path, no headers: only what the method and address give.
    assert built(api, method="GET", path="/health", source_address="10.0.0.9") == [
        [("client", "10.0.0.9")],  # no x-forwarded-for: the connection's peer
        [("method", "GET"), ("plan", "gold")],
    ]


def test_path_segments_take_what_there_is(api: Domain) -> None:
    found = built(api, method="GET", path="/v1/acme", source_address="10.0.0.9")
    assert [("tenant", "acme"), ("route", "/v1/acme")] in found


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer a.!!!.c",
        f"Bearer x.{base64.urlsafe_b64encode(b'not json').decode()}.y",
        f"Bearer {jwt(['a', 'list'])}",
        f"Bearer {jwt({'sub': {'nested': 1}})}",
        f"Bearer {jwt({'other': 1})}",
        "Bearer " + "a" * 20_000 + ".b.c",
    ],
)
def test_malformed_tokens_give_no_claim(api: Domain, authorization: str) -> None:
    found = built(
        api, method="GET", path="/", headers={"authorization": authorization}, source_address="x"
    )
    assert all(d[0][0] != "user" for d in found)


def test_a_hostile_header_gets_a_bounded_value_of_its_own(api: Domain) -> None:
    def api_key(value: str) -> str:
        found = built(api, method="GET", path="/", headers={"x-api-key": value}, source_address="x")
        return dict(d[0] for d in found)["api_key"]

    huge, other = "k" * 60_000, "k" * 59_999 + "j"
    assert len(api_key(huge)) < MAX_VALUE_CHARS
    assert api_key(huge) != api_key(other)
    assert api_key("k" * MAX_VALUE_CHARS) == "k" * MAX_VALUE_CHARS


def test_every_source_the_config_accepts_is_read_at_request_time() -> None:
    assert set(READERS) == set(SOURCES)


@given(
    path=st.text(max_size=200),
    headers=st.dictionaries(
        st.sampled_from(["x-api-key", "authorization", "x-jwt", "x-forwarded-for"]),
        st.text(max_size=300),
    ),
    method=st.text(max_size=10),
)
def test_any_request_yields_valid_descriptors(
    path: str, headers: dict[str, str], method: str
) -> None:
    api = domain_of_cached()
    for descriptor in descriptors(api, HttpAttributes(method, path, headers=headers)):
        assert all(
            key and value and len(value) <= MAX_VALUE_CHARS for key, value in descriptor.entries
        )


@functools.cache
def domain_of_cached() -> Domain:
    """The CONFIG domain, loaded once for the hypothesis test (no fixtures per example)."""
    with tempfile.TemporaryDirectory() as scratch:
        return domain_of(Path(scratch))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            "[{key: a}]",
            "exactly one of header, path, path_segments, method, source_address, jwt_claim, "
            "value (found 0)",
        ),
        ("[{key: a, header: x, value: y}]", "(found 2)"),
        ("[{header: x}]", "an extract entry needs a non-empty 'key'"),
        ("[{key: a, path: /v1/*}]", "path template '/v1/*': a path template captures exactly one"),
        ("[{key: a, path: 'v1/{x}'}]", "a path template starts with '/'"),
        ("[{key: a, header: x, regex: '(unclosed'}]", "regex '(unclosed'"),
        ("[{key: a, path_segments: 0}]", "'path_segments' must be between 1 and 64"),
        ("[{key: a, method: false}]", "'method' must be true"),
        ("[{key: a, value: b, regex: c}]", "'regex' applies to header and jwt_claim only"),
        ("[{key: a, header: x, trusted_hops: 1}]", "'trusted_hops' applies to source_address only"),
        (
            "[{key: a, source_address: true, trusted_hops: 99}]",
            "'trusted_hops' must be between 0 and 16",
        ),
        (
            "[{key: a, hedaer: x}]",
            "unknown key 'hedaer' in an extract entry; did you mean 'header'?",
        ),
        ("[]", "an extract descriptor needs a list of 'entries'"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, entries: str, message: str) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(f"domain: api\nextract:\n  - entries: {entries}\n")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([path])
    errors = raised.value.errors
    assert {(error.file, error.line) for error in errors} == {(str(path), 3)}
    assert any(message in error.message for error in errors), errors
