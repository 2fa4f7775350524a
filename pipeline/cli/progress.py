"""Progress of a run, for whoever watches: a live bar on a terminal (rows, batches, rows/s,
rejects so far, ETA from the input's size), a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.chunk import Batch
from pipeline.runner import Progress as RunProgress

log = structlog.get_logger("pipeline.cli.progress")
EVERY_S = 5.0


class _Counts(RunProgress):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = self.settled = self.batches = 0
        self.in_doubt = self.accounts = self.accounts_read = 0
        self.started = time.monotonic()

    def settling(self, batches: int, accounts: int) -> None:
        self.in_doubt, self.accounts = batches, accounts

    def account_read(self) -> None:
        self.accounts_read += 1

    def settling_line(self) -> str:
        return (
            f"settling {self.in_doubt:,} batches in doubt:"
            f" {self.accounts_read:,}/{self.accounts:,} accounts read"
        )

    def rows_read(self, rows: int) -> None:
        with self.lock:
            self.read += rows

    def batch_done(self, batch: Batch) -> None:
        with self.lock:
            self.settled += batch.rows.height
            self.batches += 1

    def rate(self) -> float:
        return self.settled / max(time.monotonic() - self.started, 1e-9)


class _Logged(_Counts):
    """Off a terminal: one line every few seconds while batches settle."""

    def __init__(self) -> None:
        super().__init__()
        self.last = time.monotonic()

    def account_read(self) -> None:
        super().account_read()
        if self._due():
            log.info("progress", settling=self.settling_line())

    def batch_done(self, batch: Batch) -> None:
        super().batch_done(batch)
        if self._due():
            log.info("progress", rows_read=self.read, rows_settled=self.settled,
                     batches=self.batches, rows_per_s=round(self.rate()))  # fmt: skip

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self.last < EVERY_S:
            return False
        self.last = now
        return True


class _Bar(_Counts):
    """On a terminal: a live bar."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar = bar
        self.task = bar.add_task("rows", total=None)

    def rows_read(self, rows: int) -> None:
        super().rows_read(rows)
        self.bar.update(self.task, total=self.read)

    def settling(self, batches: int, accounts: int) -> None:
        super().settling(batches, accounts)
        self.settle_task = self.bar.add_task(self.settling_line(), total=accounts)

    def account_read(self) -> None:
        super().account_read()
        self.bar.update(self.settle_task, advance=1, description=self.settling_line())

    def batch_done(self, batch: Batch) -> None:
        super().batch_done(batch)
        described = f"{self.batches} batches, {self.rate():,.0f} rows/s"
        self.bar.update(self.task, completed=self.settled, description=described)

    def finished(self) -> None:
        self.bar.stop()


@contextmanager
def progress_display(quiet: bool = False) -> Iterator[RunProgress]:
    """A bar on a terminal (on stderr, with the logs), progress lines otherwise; nothing when
    ``quiet``."""
    if quiet:
        yield RunProgress()
        return
    if not sys.stderr.isatty():
        yield _Logged()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        yield _Bar(bar)


@contextmanager
def counting(label: str, total: int) -> Iterator[Callable[..., None]]:
    """On a terminal, a bar of ``total`` things done (``label``) that the callable given
    advances (by one, or its argument); off a terminal, nothing."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)
