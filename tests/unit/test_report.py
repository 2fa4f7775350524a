"""Report: the rejects CSV's shape, that it is valid input again, and exact point totals."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ReportError
from pipeline.load import load
from pipeline.model import FIELDS, KEPT, RAW
from pipeline.post.ledger import REFUSED_SCHEMA, Ledger
from pipeline.report import REJECT_COLUMNS, STAGES, Rejects, points, write_rejects
from pipeline.spool import PREFIX, Spool

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def invalid(rows: list[int]) -> pl.DataFrame:
    """Invalid rows as validate gives them: sourceRow, the input's fields, reason."""
    data = {f: ["x"] * len(rows) for f in FIELDS}
    data["amount"] = ["1,5"] * len(rows)
    data["description"] = ['say "hi",\nthen go'] * len(rows)
    return pl.DataFrame(
        {"sourceRow": rows, **data, "reason": ["amount must be a number"] * len(rows)}
    ).with_columns(stage=pl.lit("validation"), idempotencyKey=pl.lit(None, pl.String))


def refused(rows: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(r, stage, "why", "k1", *(["2"] * len(FIELDS)), None) for r, stage in rows],
        schema=REFUSED_SCHEMA, orient="row",
    )  # fmt: skip


def spooled(*frames: pl.DataFrame, spill_rows: int | None = None, span: int | None = None) -> Spool:
    spool = Spool(spill_rows, span)
    for frame in frames:
        spool.add(frame)
    return spool


def test_rejects_hold_every_refused_row_in_input_order_with_its_input_values():
    """Validation and server rejects together, sorted by sourceRow, values as in the input."""
    frame = Rejects(
        (spooled(invalid([4]), invalid([1])), spooled(refused([(3, "server")])))
    ).frame()
    assert frame.columns == list(REJECT_COLUMNS)
    assert frame.select("sourceRow", "stage", "amount").rows() == [
        (1, "validation", "1,5"), (3, "server", "2"), (4, "validation", "1,5")]  # fmt: skip
    assert frame["idempotencyKey"].to_list() == [None, "k1", None]


def test_the_rejects_file_loads_again_as_input(tmp_path):
    """Written and loaded back, the rejects' eight fields are the same; extra columns ignored."""
    frame = Rejects((spooled(invalid([1, 2])), spooled(refused([])))).frame()
    write_rejects(Rejects((spooled(invalid([1, 2])),)), tmp_path / "r.csv")
    again = load(tmp_path / "r.csv").frame
    assert again.select(FIELDS).rows() == frame.select(FIELDS).rows()
    assert again["sourceRow"].to_list() == [1, 2]  # its own row numbers, not the old ones


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(range(1, 41)),
    stages=st.lists(st.sampled_from(STAGES), min_size=40, max_size=40),
    spill_rows=st.integers(1, 12),
    span=st.integers(1, 9),
)
def test_rejects_spooled_to_disk_come_back_as_if_held(order, stages, spill_rows, span):
    """Rows added in any order, in frames of any size, spilled to disk in spans or held:
    the same rows in input order, the same counts by stage, and the same CSV."""
    frames = [
        invalid(order[i : i + 3]).with_columns(pl.Series("stage", stages[i : i + 3]))
        for i in range(0, 40, 3)
    ]
    held = Rejects((spooled(*frames[:5]), spooled(*frames[5:])))
    spilled = Rejects(
        (
            spooled(*frames[:5], spill_rows=spill_rows, span=span),
            spooled(*frames[5:], spill_rows=spill_rows, span=span),
        )
    )
    assert spilled.frame().equals(held.frame())
    assert held.frame()["sourceRow"].to_list() == list(range(1, 41))
    assert spilled.by_stage() == held.by_stage() == {s: stages.count(s) for s in STAGES}
    assert all(part.height <= span for part in spilled.parts())
    assert _csv(spilled) == _csv(held)


def _csv(found: Rejects) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        write_rejects(found, Path(folder) / "r.csv")
        return (Path(folder) / "r.csv").read_bytes()


def test_a_spool_s_folder_goes_with_it():
    """Spilled rows live in a temporary folder, removed when the spool is."""
    spool = spooled(invalid([1, 2, 3]), spill_rows=1)
    folder = spool._folder
    assert folder is not None and any(folder.iterdir())
    del spool
    gc.collect()
    assert not folder.exists()


def test_a_killed_run_s_spool_folder_is_swept_by_the_next(tmp_path, monkeypatch):
    """A folder of a process that is gone goes when the next spool makes its own; one of a
    live process stays."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, alive = tmp_path / f"{PREFIX}{dead.pid}-x", tmp_path / f"{PREFIX}{os.getpid()}-y"
    for folder in (gone, alive):
        folder.mkdir()
        (folder / "0-0.arrow").write_bytes(b"")
    spool = spooled(invalid([1, 2]), spill_rows=1)
    assert not gone.exists() and alive.exists() and spool._folder is not None


def test_a_spill_that_fails_keeps_every_row_once(monkeypatch):
    """The disk full half-way through a spill: its files are taken back, the rows stay in
    memory, none lost or doubled; spilling goes on later."""
    real, calls = pl.DataFrame.write_ipc, []

    def flaky(frame: pl.DataFrame, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(frame, path)

    monkeypatch.setattr(pl.DataFrame, "write_ipc", flaky)
    spool = spooled(
        invalid([1, 2, 3, 4]), invalid([5]), invalid([6, 7, 8, 9]), spill_rows=4, span=2
    )
    assert Rejects((spool,)).frame()["sourceRow"].to_list() == list(range(1, 10))
    assert spool.height == 9 and len(calls) > 3  # it went on spilling


def test_no_rejects_is_a_header_only_report(tmp_path):
    """A run without rejects still writes the report: its header, so no stale file misleads."""
    write_rejects(Rejects((Spool(), Spool())), tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().strip() == ",".join(REJECT_COLUMNS)


def test_points_are_summed_exactly_per_definition():
    """0.1 + 0.2 is 0.3 in the ledger, and whole sums are integers in the summary."""
    ledger = Ledger()
    rows = pl.DataFrame({"sourceRow": [1, 2, 3], "amount": ["0.1", "0.2", "5"],
                         "definitionId": [1, 1, 2]}).with_columns(
        *[pl.lit(None, pl.String).alias(RAW[f]) for f in KEPT])  # fmt: skip
    ledger.settle(rows, "k", None, None)
    assert ledger.points == {1: Decimal("0.3"), 2: Decimal("5")}
    assert points(ledger.points) == {"1": 0.3, "2": 5}


def test_a_report_that_cant_be_written_leaves_no_half_file(tmp_path, monkeypatch):
    """A full disk while the report is written: a one-line error naming the file (exit 1),
    the report as it was before, no .tmp left behind (it was an internal error)."""
    path = tmp_path / "r.csv"
    path.write_text("the report before\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", full)
    with pytest.raises(ReportError, match=r"r\.csv can't be written \(No space left on device\)"):
        write_rejects(Rejects(()), path)
    assert ReportError.exit_code == 1
    assert path.read_text() == "the report before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
