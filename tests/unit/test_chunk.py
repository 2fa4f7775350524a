"""Chunk: batch sizes, order, the JSON bodies and the keys' determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.chunk import Batch, chunk
from pipeline.model import KEPT, RAW

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def valid_rows(n: int, **overrides: object) -> pl.DataFrame:
    """A frame shaped like validate's valid output."""
    data = {
        "sourceRow": list(range(1, n + 1)),
        "contactId": [GUID] * n,
        "amount": [f"{i}.5" for i in range(n)],
        "definitionId": [1 + i % 3 for i in range(n)],
        "timeStamp": [None] * n,
        "source": ["POS"] * n,
        "description": [f"receipt {i}" for i in range(n)],
        "validFrom": [None] * n,
        "validTo": ["2027-01-01T00:00:00+01:00"] * n,
    }
    data.update(overrides)  # type: ignore[arg-type]
    frame = pl.DataFrame(
        data,
        schema_overrides={"definitionId": pl.Int64, "timeStamp": pl.String, "validFrom": pl.String},
    )
    frame = frame.with_columns(pl.lit(None, pl.String).alias("_rowId"))
    return frame.with_columns(pl.col(f).cast(pl.String).alias(RAW[f]) for f in KEPT)


def keys(frame: pl.DataFrame, size: int = 1000, import_id: str = "night-1") -> list[str]:
    return [b.key for b in chunk(frame, size, import_id)]


def fingerprints(frame: pl.DataFrame) -> list[tuple[str, str]]:
    return [(b.key, hashlib.sha256(b.body).hexdigest()) for b in chunk(frame, 1000, "night-1")]


def test_batches_hold_at_most_size_rows_in_input_order():
    """2,500 rows in 1000-row batches: 1000, 1000, 500, rows in input order."""
    batches = list(chunk(valid_rows(2500), 1000, "x"))
    assert [b.rows.height for b in batches] == [1000, 1000, 500]
    assert [b.seq for b in batches] == [1, 2, 3]
    assert pl.concat([b.rows for b in batches])["sourceRow"].to_list() == list(range(1, 2501))


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_over_1000_rows_cannot_be_planned(size):
    """Engage takes at most 1000 rows a request: larger (or empty) batches are refused."""
    with pytest.raises(ValueError, match="1 to 1000"):
        list(chunk(valid_rows(3), size, "x"))


def test_body_is_the_rows_as_json_with_exact_amounts_and_absent_optionals():
    """The body parses to the rows; amounts are JSON numbers, exact; null fields are absent."""
    frame = valid_rows(2, amount=["0.1", "-12345678901.25"])
    body = next(chunk(frame, 10, "x")).body
    rows = json.loads(body, parse_float=Decimal)
    assert [r["amount"] for r in rows] == [Decimal("0.1"), Decimal("-12345678901.25")]
    assert list(rows[0]) == [
        "contactId",
        "amount",
        "definitionId",
        "source",
        "description",
        "validTo",
    ]
    assert rows[1]["definitionId"] == 2


@settings(max_examples=150, deadline=None)
@given(
    st.text(min_size=1).filter(
        lambda s: not any((ord(c) < 32 and c not in "\t\r\n") or c == "\x7f" for c in s)
    )
)
def test_any_valid_text_survives_json_encoding(text):
    """Quotes, backslashes, newlines, unicode: the body decodes to the same text."""
    body = next(chunk(valid_rows(1, description=[text], source=[text]), 10, "x")).body
    row = json.loads(body)[0]
    assert (row["description"], row["source"]) == (text, text)


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["POS", 'say "hi"', "a\\b", "line\nbreak", "tab\there"]),
            st.sampled_from([None, "2026-01-01T10:00:00+01:00"]),
            st.sampled_from([None, "2027-01-01T00:00:00+01:00"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_rows_json_does_not_depend_on_the_rows_around_it(rows):
    """A piece's columns decide how it is encoded (a field absent from every row, text with
    nothing to escape): each row's JSON is the same alone as among any others."""
    frame = valid_rows(
        len(rows),
        description=[r[0] for r in rows],
        timeStamp=[r[1] for r in rows],
        validFrom=[r[2] for r in rows],
    )
    body = next(chunk(frame, 1000, "x")).body
    alone = [next(chunk(frame.slice(i, 1), 1000, "x")).body[1:-1] for i in range(len(rows))]
    assert body == b"[" + b",".join(alone) + b"]"
    together = json.loads(body)
    assert [row.get("validFrom") for row in together] == [r[2] for r in rows]
    assert [row["description"] for row in together] == [r[0] for r in rows]


def test_same_input_gives_same_keys_and_bodies_in_another_process():
    """Keys and bodies are byte-identical across processes (no hash seed, no clock)."""
    code = (
        "from tests.unit.test_chunk import fingerprints, valid_rows;"
        "print(fingerprints(valid_rows(2500)))"
    )
    here = fingerprints(valid_rows(2500))
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert other.stdout.strip() == str(here)


def test_one_changed_row_changes_only_its_own_batch_key():
    """Changing row 1500 in place changes batch 2's key only."""
    before = keys(valid_rows(2500))
    changed = valid_rows(2500).with_columns(
        pl.when(pl.col("sourceRow") == 1500)
        .then(pl.lit("99"))
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    after = keys(changed)
    assert [a == b for a, b in zip(before, after, strict=True)] == [True, False, True]


def test_keys_differ_by_import_and_sequence():
    """The same rows in another import, or at another position, get other keys."""
    one = keys(
        valid_rows(2000, amount=["1"] * 2000, description=["d"] * 2000, definitionId=[1] * 2000)
    )
    assert one[0] != one[1]  # identical bodies, different sequence numbers
    assert keys(valid_rows(10), import_id="a") != keys(valid_rows(10), import_id="b")


def test_halves_split_rows_and_derive_stable_keys():
    """A refused batch's halves cover its rows, and their keys derive from the parent's."""
    batch = next(chunk(valid_rows(5), 10, "x"))
    left, right = batch.halves()
    assert (left.rows.height, right.rows.height) == (3, 2)
    assert (left.label, right.label) == ("1.0", "1.1")
    assert len({batch.key, left.key, right.key}) == 3
    again: tuple[Batch, Batch] = next(chunk(valid_rows(5), 10, "x")).halves()
    assert (again[0].key, again[1].key) == (left.key, right.key)
    assert left.halves()[0].key != right.halves()[0].key
