"""At scale: the streamed plan is the in-memory plan, the rate limit holds in every second,
a storm of 429s slows the run without losing or doubling a row, and 2 million rows get in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.chunk import chunk
from pipeline.config import Config
from pipeline.load import load, open_source
from pipeline.plan import Plan
from pipeline.simulator.fixture import contact_ids
from pipeline.validate import Rules, validate
from tests.conftest import FAST_RETRY, stored, write_csv


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    contacts = contact_ids()
    return [{"contactId": contacts[i % len(contacts)], "amount": f"{i % 500}.5",
             "definitionId": str(i % 5 + 1), "source": "POS",
             "description": f"receipt {i}, \"quoted\"\nline two" if i % 97 == 0 else f"r {i}",
             "timeStamp": f"2026-11-25T{i % 24:02d}:{i % 60:02d}:00"}
            for i in range(start, start + n)]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_the_streamed_plan_equals_the_in_memory_plan(tmp_path, fmt):
    """Read in pieces of a few kilobytes, the plan has the same batches, bodies and keys as
    the whole file validated and chunked at once."""
    data = rows(3000)
    data[10]["amount"] = "bad"
    data[2500] = dict(data[20])  # a duplicate across pieces
    for at in range(400, 3000, 37):  # and some a few pieces apart (screened in parallel)
        data[at] = dict(data[at - 1 - at % 200])
    path = write_csv(tmp_path / "in.csv", data)
    if fmt == "ndjson":
        path = tmp_path / "in.ndjson"
        pl.read_csv(tmp_path / "in.csv", infer_schema=False).write_ndjson(path)
    whole = load(path).frame
    validated = validate(whole, Rules())
    expected = [(b.seq, b.key, b.body) for b in chunk(validated.valid, 250, "x")]
    with open_source(path) as source:
        plan = Plan(source, "x", Config(), "UTC", 250, lambda: None, chunk_bytes=4096)
        plan_pieces = [(b.seq, b.key, b.body) for b in plan.batches()]
    assert plan_pieces == expected
    assert plan.tally.read == whole.height and plan.tally.invalid_rows == 2 + 71
    invalid = plan.tally.invalid.frame()
    assert invalid is not None
    assert (
        invalid.select("sourceRow", "reason").rows()
        == validated.invalid.select("sourceRow", "reason").rows()
    )


def _windows(times: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_the_rate_limit_holds_in_every_second(simulator, run_cli, tmp_path):
    """--max-rps 10 with 16 in flight: the simulator never sees more than 10 requests in a
    second (its own arrival log), yet nearly 10 a second on average: the run is paced, not
    slowed."""
    sim = simulator()
    write_csv(tmp_path / "in.csv", rows(450))
    result = run_cli("run", "in.csv", "--batch-size", "10", "--max-rps", "10",
                     "--concurrency", "16", sim=sim, config=FAST_RETRY)  # fmt: skip
    assert result.code == 0, result.err
    posts = sorted(r.monotonic for r in sim.store.requests if r.method == "POST")
    assert len(posts) == 45
    assert _windows(posts) <= 10
    assert (len(posts) - 1) / (posts[-1] - posts[0]) > 8


def test_a_storm_of_429s_slows_the_run_and_still_lands_every_row_once(simulator, run_cli,
                                                                       tmp_path):  # fmt: skip
    """Engage allows 8 requests a second, the client is told 50: 429s, the client backs off,
    every row lands exactly once."""
    sim = simulator(rate_limit_rps=8)
    write_csv(tmp_path / "in.csv", rows(1200))
    result = run_cli("run", "in.csv", "--batch-size", "20", "--max-rps", "50",
                     "--concurrency", "8", sim=sim, config=FAST_RETRY)  # fmt: skip
    assert result.code == 0, result.err
    statuses = Counter(r.status for r in sim.store.requests)
    assert statuses[429] > 0
    held = Counter((t["contactId"], t["description"]) for t in stored(sim))
    assert len(held) == 1200 and max(held.values()) == 1


@pytest.mark.slow
def test_two_million_rows_get_in_with_nothing_lost(simulator, tmp_path):
    """2,000,000 rows against the simulator, as a real process: every row accepted, once."""
    sim = simulator(auto_create_contacts=True)
    n = 2_000_000
    i = pl.col("i")
    frame = pl.select(i=pl.int_range(0, n)).select(
        contactId=pl.format("00000000-0000-4000-8000-{}",
                            (i % 10_000).cast(pl.String).str.zfill(12)),
        amount=i.cast(pl.String), definitionId=pl.lit("1"), source=pl.lit("POS"),
        description=pl.format("receipt {}", i),
    )  # fmt: skip
    frame.write_csv(tmp_path / "big.csv")
    env = {**os.environ, "ENGAGE_BASE_URL": sim.url, "ENGAGE_API_KEY": "sim-key"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "big.csv", "--max-rps", "200",
         "--concurrency", "16", "--summary", "summary.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (Path(tmp_path) / "summary.json").read_text()
    assert '"rows_read": 2000000' in summary and '"rows_accepted": 2000000' in summary
    assert len(sim.store.transactions) == n
