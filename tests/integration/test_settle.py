"""Recovery after a crash, against the simulator as a real server: only requests that may have
left are in doubt, and settling them reads each account they touch once."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from pipeline.simulator.fixture import contact_id
from tests.conftest import stored, write_csv
from tests.integration.test_resume import BATCH, CONFIG, content, finish, source_file, start

# Engage forgets keys after 1 s, and answers after 0.6 s: a few requests are in flight at once
SLOW_AND_FORGETFUL = {"idempotency_window_seconds": 1, "faults": {"latency_ms": 600}}


def shared_accounts_file(path: Path) -> Path:
    """600 rows on 30 accounts (10 contacts, 3 definitions): every batch of 50 touches all."""
    return write_csv(path, [
        {"contactId": contact_id(i % 10 + 1), "amount": f"{i}.5", "definitionId": str(i % 3 + 1),
         "source": "POS", "description": f"receipt {i}", "timeStamp": "2026-11-25T10:00:00"}
        for i in range(1, 601)
    ])  # fmt: skip


def journal_of(workdir: Path) -> Path:
    [path] = workdir.rglob("journal.sqlite")
    return path


def states(workdir: Path) -> dict[int, tuple[str, int, int]]:
    """Planned batches by seq: (state, first_row, last_row)."""
    with closing(sqlite3.connect(journal_of(workdir))) as db:
        rows = db.execute(
            "SELECT seq, state, first_row, last_row FROM batches WHERE part = ''"
        ).fetchall()
    return {seq: (state, first, last) for seq, state, first, last in rows}


def reads(sim) -> Counter[tuple[str, str]]:
    """GET transactions, per (contactId, definitionId) asked for."""
    asked: Counter[tuple[str, str]] = Counter()
    for r in sim.store.requests:
        if r.method == "GET" and r.path.endswith("/transactions"):
            query = parse_qs(r.query)
            asked[(query["contactId"][0].lower(), query["definitionId"][0])] += 1
    return asked


def accounts_of_rows(workdir: Path, first: int, last: int) -> set[tuple[str, str]]:
    """The accounts rows first..last of in.csv touch (the file's rows, valid or not)."""
    import csv

    with (workdir / "in.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[first - 1 : last]
    return {(r["contactId"].lower(), r["definitionId"]) for r in rows}


@pytest.mark.parametrize("killable", [SLOW_AND_FORGETFUL], indirect=True)
def test_killed_while_requests_wait_for_the_limiter_then_keys_expire(killable, run_cli, tmp_path):
    """SIGKILL while most workers wait for the rate limiter; Engage forgets the keys; the
    re-run settles only the batches that had left, reading each of their accounts once, and
    every row is in Engage exactly once."""
    sim, killer = killable
    shared_accounts_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path, "--max-rps", "4", "--concurrency", "8")
    killer.arm(proc.pid, 4, "before")  # two in flight, the fourth arriving, the rest waiting
    assert finish(proc)[0] == -signal.SIGKILL
    before = states(tmp_path)
    left = {seq for seq, (state, _, _) in before.items() if state == "sending"}
    waited = {seq for seq, (state, _, _) in before.items() if state == "planned"}
    assert 1 < len(left) <= killer.posts + 1  # in doubt: what arrived, or was about to
    assert len(waited) >= 3, "batches waited for the limiter when the process died"
    status = run_cli("status").err
    assert "import" in status and ": stopped" in status
    assert f"{len(left)} batches in doubt are settled first" in status
    time.sleep(1.2)  # past Engage's (1 s) and our (0.5 s) memory of the keys
    sim.store.requests.clear()  # the dead process's requests are all answered by now

    result = run_cli("run", "in.csv", "--batch-size", BATCH, "--idempotency-window", "0.5",
                     "--summary", "summary.json", "--metrics-file", "metrics.prom", sim=sim,
                     config=CONFIG)  # fmt: skip
    assert result.code == 0, result.err
    summary = result.summary()
    assert summary["batches_settled"] == len(left), "batches that never left are not settled"
    touched = set().union(*(accounts_of_rows(tmp_path, *before[seq][1:]) for seq in left))
    asked = reads(sim)
    assert set(asked) == touched and max(asked.values()) == 1, "each account read once"
    assert summary["accounts_read"] == len(touched)
    metrics = (tmp_path / "metrics.prom").read_text()
    assert f"points_import_accounts_read {float(len(touched))}" in metrics
    assert f'points_import_batches{{state="settled"}} {float(len(left))}' in metrics
    assert summary["rows_found_applied"] + summary["rows_resent"] == 50 * len(left)
    first_post = next(i for i, r in enumerate(sim.store.requests) if r.method == "POST")
    assert all(r.method == "POST" for r in sim.store.requests[first_post:]), "reads come first"
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 600 and max(counts.values()) == 1
    told = (f"{len(left)} batches, {len(touched)} accounts read: {summary['rows_found_applied']}"
            f" rows found applied, {summary['rows_resent']} re-sent")  # fmt: skip
    assert told in result.err
    assert told in run_cli("runs").err and told in run_cli("status").err


@pytest.mark.parametrize("killable", [{}], indirect=True)
def test_a_resume_inside_the_key_window_reads_nothing(killable, run_cli, tmp_path):
    """Killed mid-run, resumed at once: in-doubt batches are sent again under their keys (Engage
    replays them); not one GET, the definitions included; every row once."""
    sim, killer = killable
    source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path, "--max-rps", "4", "--concurrency", "8")
    killer.arm(proc.pid, 3, "before")
    assert finish(proc)[0] == -signal.SIGKILL
    sim.store.requests.clear()
    result = run_cli("run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json",
                     sim=sim, config=CONFIG)  # fmt: skip
    assert result.code == 3, result.err
    assert [r for r in sim.store.requests if r.method == "GET"] == []
    assert result.summary()["batches_settled"] == 0
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1
    assert result.summary()["rows_resent"] == 0
