"""Notifications: a run that failed, or whose rows need a look, told through apprise URLs
(Slack, Teams, e-mail, webhooks: https://github.com/caronc/apprise/wiki).

What is told is what an operator needs at 3 a.m.: the outcome, the counts, the exit code, the
rejects report's path, the host. Never the API key (it is in no summary) and never a row.
A notification that can't be delivered is a warning, never a failed run.
"""

from __future__ import annotations

import logging
import socket
import warnings
from collections.abc import Sequence
from typing import Any

import structlog

log = structlog.get_logger("pipeline.notify")
COUNTS = (
    ("rows read", "rows_read"),
    ("rows accepted", "rows_accepted"),
    ("rows rejected", "rows_rejected"),
    ("rows held back", "rows_held_back"),
    ("rows landed before", "rows_already_landed"),
)


def message(summary: dict[str, Any] | None, outcome: str, exit_code: int) -> tuple[str, str]:
    """The title and body for a run's ``summary`` (None: it failed before it had one)."""
    summary = summary or {}
    what = summary.get("status") or "failed"
    title = f"points-import {what} on {socket.gethostname()}: exit {exit_code}"
    lines = [outcome]
    if summary.get("import_id"):
        lines.append(f"import {summary['import_id']} of {summary.get('input', '?')}")
    lines += [f"{label}: {summary[key]}" for label, key in COUNTS if summary.get(key)]
    if summary.get("rows_rejected") and summary.get("rejects_path"):
        lines.append(f"rejects report: {summary['rejects_path']}")
    return title, "\n".join(lines)


def notify(urls: Sequence[str], title: str, body: str) -> bool:
    """Tell every URL; False (and a warning) if one could not be told."""
    if not urls:
        return True
    with warnings.catch_warnings():  # apprise's own deprecations (imghdr) are not the run's
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        _quiet_apprise()
        sender = apprise.Apprise()
        added = [url for url in urls if sender.add(url)]
        told = bool(added) and bool(
            sender.notify(title=title, body=body, notify_type=apprise.NotifyType.FAILURE)
        )
    if len(added) != len(urls):
        log.warning("notification URL not understood by apprise", count=len(urls) - len(added))
    if not told:
        log.warning("notification not delivered", services=len(added))
    return told and len(added) == len(urls)


def _quiet_apprise() -> None:
    """apprise logs through the standard library, URLs and all: not to our stderr."""
    logger = logging.getLogger("apprise")
    if logger.propagate:  # once: a handler a call would pile up
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
