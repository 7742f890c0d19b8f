"""Structured logging: one JSON object per line on stderr (or a readable console format)."""

from __future__ import annotations

import logging
import sys

import structlog

from ratelimitd.observe import tracing


def configure(level: str = "info", fmt: str = "json") -> None:
    """Set up structlog for the process."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            tracing.add_call_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per event, line and newline together: worker processes share stderr, and
        # two writes per line (as print does) interleave into broken lines.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
