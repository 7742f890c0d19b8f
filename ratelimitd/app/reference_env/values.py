"""The parsers of the reference's variables that each set one of ours (variables.SIMPLE): the
reference's value in, ours out, ValueError for a value ratelimitd cannot take."""

from __future__ import annotations

from collections.abc import Callable

from ratelimitd.app.reference_env.reader import go_bool

# The reference sizes its over-limit cache in bytes, ours in keys: an entry (key, deadline,
# LRU links) costs about this much with a 40-character key (tracemalloc).
CACHE_ENTRY_BYTES = 300

_LOG_LEVELS = {  # logrus levels -> ours
    "panic": "error",
    "fatal": "error",
    "error": "error",
    "warn": "warning",
    "warning": "warning",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}


def _switch(text: str) -> str:
    return "true" if go_bool(text) else "false"


def _log_level(text: str) -> str:
    level = _LOG_LEVELS.get(text.lower())
    if level is None:
        raise ValueError(f"'{text}' is not one of {', '.join(_LOG_LEVELS)}")
    return level


def _log_format(text: str) -> str:
    formats = {"json": "json", "text": "console"}
    if text.lower() not in formats:
        raise ValueError(f"'{text}' is not text or json")
    return formats[text.lower()]


def _ratio(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ValueError(f"'{text}' is not a number from 0 to 1")
    return str(value)


def _key_prefix(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError("a key prefix cannot contain '{' or '}' (they would pick cluster slots)")
    return text


def _local_cache_size(text: str) -> str:
    if not text.isdigit():
        raise ValueError(f"'{text}' is not a whole number of bytes")
    size = int(text)
    return "0" if size == 0 else str(max(1, size // CACHE_ENTRY_BYTES))


# Variable -> its parser, in the order errors are reported (after the groups').
PARSERS: dict[str, Callable[[str], str]] = {
    "LOG_LEVEL": _log_level,
    "LOG_FORMAT": _log_format,
    "SHADOW_MODE": _switch,
    "RESPONSE_DYNAMIC_METADATA": _switch,
    "NEAR_LIMIT_RATIO": _ratio,
    "CACHE_KEY_PREFIX": _key_prefix,
    "LOCAL_CACHE_SIZE_IN_BYTES": _local_cache_size,
    "QUOTA_MODE": _switch,
}
