"""The rejects, kept as they come (in any order) and given back in input order, in bounded
memory: a report of millions of rows (a file mostly invalid, say, or a run stopped early with
the rest of a migration unsent) must not take the run's memory with it.

Up to ``spill_rows`` rows are held in memory; beyond that they go to files in a temporary
folder (``TMPDIR``), one per span of ``span`` source rows, so that reading them back in
order takes one span at a time (each input row is rejected at most once: a span holds at
most ``span`` rows). The folder goes when the spool does (a killed run's, when the next
run spools).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl
import structlog

from pipeline.model import SOURCE_ROW

log = structlog.get_logger("pipeline.spool")
PREFIX = "points-import-rejects-"  # then the pid: a killed run's folder is swept by the next
SPILL_ROWS = 200_000
SPAN = 250_000


class Spool:
    """Rows of one shape, each with its ``sourceRow`` and ``stage``; thread-safe."""

    def __init__(self, spill_rows: int | None = None, span: int | None = None) -> None:
        self.spill_rows, self.span = spill_rows or SPILL_ROWS, span or SPAN
        self.height = 0
        self.stages: Counter[str] = Counter()
        self._held: list[pl.DataFrame] = []
        self._held_rows = 0
        self._spans: dict[int, list[Path]] = defaultdict(list)
        self._folder: Path | None = None
        self._lock = threading.Lock()

    def add(self, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        stages = frame["stage"].value_counts().rows()
        with self._lock:
            self._held.append(frame)
            self._held_rows += frame.height
            self.height += frame.height
            self.stages.update({str(stage): int(n) for stage, n in stages})
            if self._held_rows >= self.spill_rows:
                self._spill()

    def frame(self) -> pl.DataFrame | None:
        """Every row, in input order, in one frame (None if there are none); for the small."""
        parts = list(in_order([self]))
        return pl.concat(parts) if parts else None

    def _spill(self) -> None:
        """The rows held, to disk; if that fails (a full disk), they stay held: the report
        must lose and double nothing, so memory gives way first."""
        written: list[tuple[int, Path]] = []
        try:
            folder = self._folder or self._make_folder()
            for span, part in _by_span(pl.concat(self._held), self.span):
                path = folder / f"{span}-{len(self._spans[span])}.arrow"
                written.append((span, path))
                part.write_ipc(path)
        except OSError as exc:
            for _, path in written:
                path.unlink(missing_ok=True)
            self.spill_rows *= 2  # not again at the next row
            log.warning("rejected rows can't be spooled to disk; kept in memory", error=str(exc))
            return
        for span, path in written:
            self._spans[span].append(path)
        self._held, self._held_rows = [], 0

    def _make_folder(self) -> Path:
        _sweep(Path(tempfile.gettempdir()))
        self._folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        return self._folder


def _sweep(temp: Path) -> None:
    """Folders of runs that were killed (no clean-up then): their process is gone."""
    for folder in temp.glob(f"{PREFIX}*-*"):
        pid = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


def in_order(spools: Iterable[Spool]) -> Iterator[pl.DataFrame]:
    """The rows of ``spools`` (of one shape and span), sorted by ``sourceRow``, a span at a
    time: all at once if none went to disk."""
    spools = [s for s in spools if s.height]
    held = [frame for s in spools for frame in s._held]
    if not any(s._spans for s in spools):
        if held:
            yield pl.concat(held, how="diagonal").sort(SOURCE_ROW)
        return
    span = spools[0].span
    in_memory = dict(_by_span(pl.concat(held, how="diagonal"), span)) if held else {}
    for at in sorted({*in_memory, *(k for s in spools for k in s._spans)}):
        files = [pl.read_ipc(path) for s in spools for path in s._spans[at]]
        parts = [*files, *([in_memory[at]] if at in in_memory else [])]
        yield pl.concat(parts, how="diagonal").sort(SOURCE_ROW)


def _by_span(frame: pl.DataFrame, span: int) -> Iterator[tuple[int, pl.DataFrame]]:
    for (at,), part in frame.group_by(pl.col(SOURCE_ROW) // span):
        yield int(at), part
