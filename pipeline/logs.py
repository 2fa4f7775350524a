"""Logging, configured once by the CLI: JSON lines off a TTY (cron), the console on a TTY.

On a terminal the progress bar and the final table tell the story, so the console shows
warnings and errors only; ``verbosity`` 1 (``-v``) shows everything down to a line per batch,
-1 (``-q``) errors only. ``NO_COLOR`` turns colours off."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO

import structlog

Format = Literal["auto", "json", "console"]


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (it is replaced under test runners)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    level: str = "info", fmt: Format = "auto", stream: TextIO | None = None, verbosity: int = 0
) -> None:
    """Send structlog events to ``stream`` (stderr) as JSON lines or console lines."""
    out: TextIO = stream or _Stderr()  # type: ignore[assignment]
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty() and not os.environ.get("NO_COLOR"))
        if console
        else structlog.processors.JSONRenderer()
    )
    shown = _level(level, console, verbosity)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(shown),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _level(level: str, console: bool, verbosity: int) -> int:
    """The lowest level shown: ``-v`` everything, ``-q`` errors, else the config's (at least
    warnings on a console)."""
    if verbosity > 0:
        return logging.DEBUG
    if verbosity < 0:
        return logging.ERROR
    configured = int(logging.getLevelName(level.upper()))
    return max(configured, logging.WARNING) if console else configured
