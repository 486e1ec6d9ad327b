"""Structured logging: events with key=value fields, rendered by whoever hosts the code.

Inside Airflow 3 the task runner has already configured structlog, so library events land in
the task log with their fields; the `co2` command configures it for the console.
"""

from __future__ import annotations

import logging
import sys

import structlog

get_logger = structlog.get_logger


def configure_console_logging(level: str = "INFO", json: bool = False) -> None:
    """Render events as `key=value` lines (or JSON lines) on stderr."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
