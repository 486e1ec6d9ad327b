"""Structured logging: events with key=value fields, rendered by whoever hosts the code.

Inside Airflow 3 the task runner has already configured structlog, so library events land in
the task log with their fields; the `co2` command configures it for the console.

Airflow's log viewer shows what a task writes to stderr as ERROR lines, and renders a field whose
value is a boolean or null as nothing at all: libraries' progress messages are routed to the log at
their own level (`route_mlflow_logging`, `printed_as_info`), and fields a person must read are words.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import structlog

get_logger = structlog.get_logger


def route_mlflow_logging() -> None:
    """MLflow's log records through the host's logging (Airflow's task log), each at its own level.

    MLflow gives its `mlflow` logger a handler of its own that writes to stderr and stops the records
    there; without it they propagate to the root logger, which Airflow's task runner renders.
    """
    logger = logging.getLogger("mlflow")
    logger.handlers = []
    logger.propagate = True


class _LinesAsInfo(io.TextIOBase):
    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line.strip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.logger.info(self.pending.strip())
        self.pending = ""


@contextlib.contextmanager
def printed_as_info(source: str) -> Iterator[None]:
    """What is printed to stderr inside the block, one INFO event per line from logger `source`.

    For progress messages a library prints rather than logs (MLflow's "Successfully registered
    model ..."), which Airflow would otherwise show as errors.
    """
    lines = _LinesAsInfo(get_logger(source))
    try:
        with contextlib.redirect_stderr(lines):
            yield
    finally:
        lines.flush()


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
