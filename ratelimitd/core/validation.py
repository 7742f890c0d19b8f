"""What a request must be to be answered: well formed, and within bounds that keep the work
and memory one request can cost small whatever a client sends. A request that is not is
answered INVALID_ARGUMENT with the reason, naming the flag that sets a bound."""

from __future__ import annotations

from typing import NamedTuple

from ratelimitd.model.messages import InvalidRequestError, Request


class RequestLimits(NamedTuple):
    """Per-request bounds. The defaults are far above what Envoy's rate limit actions
    produce (a few descriptors of a few short entries) and far below what would hurt."""

    max_descriptors: int = 64
    max_entries: int = 32  # per descriptor
    max_key_length: int = 256  # characters of an entry key, and of the domain
    max_value_length: int = 4096  # characters of an entry value (paths, JWT claims, ...)


DEFAULT_REQUEST_LIMITS = RequestLimits()


def validate(request: Request, limits: RequestLimits) -> None:
    """Raise InvalidRequestError, saying why, when the request cannot be answered."""
    if not request.domain:
        raise InvalidRequestError("domain must not be empty")
    _check_length("domain", request.domain, limits.max_key_length, "--max-key-length")
    if not request.descriptors:
        raise InvalidRequestError("at least one descriptor is required")
    if len(request.descriptors) > limits.max_descriptors:
        raise InvalidRequestError(
            f"{len(request.descriptors)} descriptors; at most {limits.max_descriptors} are "
            "allowed (--max-descriptors)"
        )
    for i, descriptor in enumerate(request.descriptors):
        if not descriptor.entries:
            raise InvalidRequestError(f"descriptor {i} has no entries")
        if len(descriptor.entries) > limits.max_entries:
            raise InvalidRequestError(
                f"descriptor {i} has {len(descriptor.entries)} entries; at most "
                f"{limits.max_entries} are allowed (--max-entries)"
            )
        for j, (key, value) in enumerate(descriptor.entries):
            if not key:
                raise InvalidRequestError(f"descriptor {i} entry {j} has an empty key")
            where = f"descriptor {i} entry {j}"
            _check_length(f"{where} key", key, limits.max_key_length, "--max-key-length")
            _check_length(f"{where} value", value, limits.max_value_length, "--max-value-length")


def _check_length(what: str, text: str, maximum: int, flag: str) -> None:
    if len(text) > maximum:
        raise InvalidRequestError(
            f"{what} is {len(text)} characters long; at most {maximum} are allowed ({flag})"
        )
