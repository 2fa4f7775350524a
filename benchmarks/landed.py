"""The landed-row index's cost: planning a file (load, validate, sort against the landed rows
and claim them, batch) with an empty journal and with one holding many landed rows, each in a
fresh child process (wall, CPU, peak RSS); and the time spent claiming, to set beside the
end-to-end run of the same file (issue: planning at most 20 % slower with 10M landed rows,
peak RSS within 1 GiB; recording at most 5 % of the run).

``python -m benchmarks.landed fill STATE ROWS`` writes ROWS synthetic claims (a finished
import's, stored compacted, as a journal holds them after many runs); ``... plan STATE FILE
REPORT`` plans FILE as a new import and writes what claiming cost to REPORT.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl

from benchmarks.runs import Measurement, Settings, _measured, _run
from pipeline.claims import Claims
from pipeline.config import Config
from pipeline.journal import Journal
from pipeline.journal.landed import CLAIMED, Claimed
from pipeline.load import open_source
from pipeline.plan import Plan
from pipeline.validate.landed import Sorting

TENANT = "https://bench.example"
PIECE = 65_536  # claims a record holds, as a piece of the input gives


def landed_planning(path: Path, rows: int, landed: int, settings: Settings) -> Measurement:
    """Plan ``path`` as a new import against a journal holding ``landed`` landed rows."""
    workdir = settings.scratch / f"landed-{landed}"
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    if landed:
        fill(state, landed)
    report = workdir / "claims.json"
    command = [sys.executable, "-m", "benchmarks.landed", "plan", str(state), str(path)]
    result = _run([*command, str(report)], workdir, settings)
    measured = _measured(
        f"landed-{landed}", f"planning, {landed:,} rows landed before", path, rows, result,
        result.exit_code == 0, file=f"{rows:,}-row file",
    )  # fmt: skip
    if measured.ok:
        claimed = json.loads(report.read_text())
        measured.extra.update(landed=landed, **claimed)
        measured.note = f"claiming {claimed['claim_seconds']:.2f} s of it"
    return measured


def fill(state: Path, rows: int) -> None:
    """``rows`` claims of a finished import, compacted into the stored index."""
    with Journal.open(state) as journal:
        journal.register("landed", "landed.csv", "0" * 64, {}, TENANT)
        ref = journal.find("landed")
        assert ref is not None
        for start in range(0, rows, PIECE):
            n = min(PIECE, rows - start)
            ids = pl.int_range(start, start + n, eager=True).hash(11).reinterpret(signed=True)
            claims = pl.DataFrame(
                {"identity": ids, "source_row": pl.int_range(start + 1, start + n + 1, eager=True)}
            )
            journal.claim(
                "landed", ids, (start + 1, start + n), lambda found, c=claims: Claimed(c, [])
            )
        journal.claim("landed", pl.Series([], dtype=pl.Int64), (rows, rows), _nothing)
        journal.finish("landed", {}, 0, "finished")


def _nothing(found: object) -> Claimed:
    return Claimed(pl.DataFrame(schema=CLAIMED), [])


def plan(state: Path, path: Path, report: Path) -> None:
    """Plan ``path`` as a new import, claiming its rows; what claiming cost, to ``report``."""
    config = Config()
    spent = [0.0]
    with Journal.open(state) as journal, open_source(path) as source:
        journal.register(source.sha256[:16], str(path), source.sha256, {}, TENANT)
        claims = Claims(journal, Sorting(source.sha256[:16]))

        def timed(valid: pl.DataFrame):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            sorted_ = claims.sort(valid)
            spent[0] += time.perf_counter() - started
            return sorted_

        planned = Plan(source, source.sha256[:16], config, "UTC", 1000, lambda: None, sort=timed)
        batches = sum(1 for _ in planned.batches())
    report.write_text(json.dumps({"claim_seconds": spent[0], "batches": batches}))


if __name__ == "__main__":
    verb, *args = sys.argv[1:]
    if verb == "fill":
        fill(Path(args[0]), int(args[1]))
    else:
        plan(Path(args[0]), Path(args[1]), Path(args[2]))
