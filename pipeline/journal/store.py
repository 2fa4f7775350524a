"""The journal's file and connection: one SQLite connection behind a lock, thread-safe."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from pipeline.errors import JournalError
from pipeline.journal.schema import connect, immediate, journal_error, prepare

FILENAME = "journal.sqlite"


class Store:
    """The journal file of a state directory. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._beating: dict[str, threading.Event] = {}
        self._db = connect(path)
        try:
            prepare(self._db, path)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, state_dir: Path, create: bool = True) -> Self:
        if not create and not (state_dir / FILENAME).is_file():
            raise JournalError(f"no journal in {state_dir}: nothing was run with this --state-dir")
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"state directory {state_dir} can't be created: {exc.strerror}"
            ) from None
        return cls(state_dir / FILENAME)

    def close(self) -> None:
        for stop in self._beating.values():
            stop.set()
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction that holds the write lock from its first read on,
        with SQLite's errors made journal errors."""
        with self._lock:
            try:
                with immediate(self._db) as db:
                    yield db
            except sqlite3.Error as exc:
                raise journal_error(exc, self.path) from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads only, with SQLite's errors made journal errors."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise journal_error(exc, self.path) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise journal_error(exc, self.path) from exc


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
