"""Chunk: valid rows, in input order, into batches of at most 1000 with deterministic keys.

A batch's ``Idempotency-Key`` is derived from the import's identity, the batch's sequence
number and the exact bytes of its body, so the same input gives the same bodies and keys on
every run, machine and Python version, and a row changed in place changes only its own
batch's key. A half of a batch Engage refused gets a key derived from its parent's.
Each row's JSON is written by ``model.encode``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from pipeline.model import JSON, encode

KEY_NAMESPACE = b"points-import/batch/v1"


@dataclass(frozen=True)
class Batch:
    """One request's worth of rows and the key it is sent under."""

    seq: int  # 1-based position in the import's plan
    key: str
    rows: pl.DataFrame  # sourceRow, FIELDS, the input's text (RAW), _json
    part: str = ""  # "" for a planned batch; "0"/"1" per split, e.g. "01"; "r" reconciled
    body: bytes = b""

    @classmethod
    def of(cls, seq: int, key: str, rows: pl.DataFrame, part: str = "") -> Batch:
        return cls(seq, key, rows, part, body_of(rows))

    @property
    def label(self) -> str:
        return f"{self.seq}" + (f".{self.part}" if self.part else "")

    def halves(self) -> tuple[Batch, Batch]:
        """The two halves of this batch, each under a key derived from this one's."""
        middle = (self.rows.height + 1) // 2
        return (
            Batch.of(self.seq, child_key(self.key, "0"), self.rows.head(middle), self.part + "0"),
            Batch.of(self.seq, child_key(self.key, "1"), self.rows.slice(middle), self.part + "1"),
        )


class Chunker:
    """Valid rows fed piece by piece, batches out as soon as they are full: the same batches,
    bodies and keys as ``chunk`` over all the rows at once."""

    def __init__(self, size: int, import_id: str) -> None:
        if not 1 <= size <= 1000:
            raise ValueError(f"batch size must be 1 to 1000, not {size}")
        self.size, self.import_id = size, import_id
        self.seq = 0
        self.carry: pl.DataFrame | None = None

    def feed(self, valid: pl.DataFrame) -> Iterator[Batch]:
        encoded = valid if JSON in valid.columns else encode(valid)  # validate encodes
        rows = encoded if self.carry is None else pl.concat([self.carry, encoded])
        full = rows.height - rows.height % self.size
        yield from self._batches(rows.head(full))
        self.carry = rows.slice(full)

    def flush(self) -> Iterator[Batch]:
        if self.carry is not None and self.carry.height:
            yield from self._batches(self.carry)
        self.carry = None

    def _batches(self, rows: pl.DataFrame) -> Iterator[Batch]:
        """Consecutive batches of ``size`` rows (the last maybe fewer): the rows' JSON joined
        once, ``,`` between rows, each body a slice of it."""
        offsets = range(0, rows.height, self.size)
        lasts = [min(offset + self.size, rows.height) - 1 for offset in offsets]
        joined = rows.select(
            pl.col(JSON).str.join(",").cast(pl.Binary),
            (pl.col(JSON).str.len_bytes().cast(pl.Int64).cum_sum() + pl.int_range(pl.len()))
            .gather(lasts)
            .implode()
            .alias("ends"),  # where each batch's last row ends in the joined text
        )
        text = memoryview(joined[JSON].item()) if rows.height else memoryview(b"")
        start = 0
        for offset, end in zip(offsets, joined["ends"].item(), strict=True):
            self.seq += 1
            body = b"".join((b"[", text[start:end], b"]"))
            key = batch_key(self.import_id, self.seq, body)
            yield Batch(self.seq, key, rows.slice(offset, self.size), "", body)
            start = end + 1  # past the comma


def chunk(valid: pl.DataFrame, size: int, import_id: str) -> Iterator[Batch]:
    """Batches of at most ``size`` rows (1 to 1000), in input order, with their keys."""
    chunker = Chunker(size, import_id)
    yield from chunker.feed(valid)
    yield from chunker.flush()


def body_of(rows: pl.DataFrame) -> bytes:
    joined = rows.select(pl.col(JSON).str.join(",")).item() if rows.height else ""
    return b"[" + str(joined).encode("utf-8") + b"]"


def batch_key(import_id: str, seq: int, body: bytes) -> str:
    digest = hashlib.sha256(KEY_NAMESPACE)
    for part in (import_id.encode("utf-8"), str(seq).encode("ascii"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)  # not joined first: a body is ~150 kB
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))


def child_key(parent: str, half: str) -> str:
    digest = hashlib.sha256(KEY_NAMESPACE + b"/split/" + f"{parent}/{half}".encode("ascii"))
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))
