"""Crashes, signals and re-runs: the CLI as a real process, killed at chosen points, then
resumed; the simulator (a real server in this process) must hold every valid row once."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.simulator import SimulatorConfig, SimulatorServer
from pipeline.simulator.fixture import contact_id
from tests.conftest import FAST_RETRY, stored, write_csv

BATCH = "50"
CONFIG = FAST_RETRY + '[input]\ntimezone = "UTC"\n'


def source_file(path: Path) -> Path:
    """600 rows: 12 batches of 50, with 2 invalid rows and 2 the server refuses."""
    rows = [
        {
            "contactId": contact_id(i % 97 + 1),
            "amount": f"{i}.25",
            "definitionId": str(i % 3 + 1),
            "source": "POS",
            "description": f"receipt {i}",
            "timeStamp": f"2026-11-25T10:{i % 60:02d}:00",
        }
        for i in range(1, 601)
    ]
    rows[10]["amount"] = "ten"
    rows[200]["contactId"] = "nope"
    rows[300]["contactId"] = "00000000-0000-4000-8000-000000000300"
    rows[555]["contactId"] = "00000000-0000-4000-8000-000000000555"
    return write_csv(path, rows)


def start(sim: SimulatorServer, workdir: Path, *extra: str) -> subprocess.Popen[str]:
    (workdir / "cfg.toml").write_text(CONFIG)
    env = {**os.environ, "ENGAGE_BASE_URL": sim.url, "ENGAGE_API_KEY": "sim-key"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "in.csv",
            "--batch-size",
            BATCH,
            "--config",
            "cfg.toml",
            "--summary",
            "summary.json",
            *extra,
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def report_of(result) -> tuple[Any, ...]:
    summary = result.summary()
    keys = (
        "rows_read",
        "rows_accepted",
        "rows_rejected",
        "rejected_by_stage",
        "points_by_definition",
        "exit_code",
        "import_id",
    )
    return tuple(summary[k] for k in keys), result.rejects("in.rejects.csv")


def content(t: dict[str, Any]) -> tuple[str, str]:
    return (t["contactId"], t["description"])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Any, ...]:
    """The outcome of an uninterrupted run."""
    workdir = tmp_path_factory.mktemp("baseline")
    source_file(workdir / "in.csv")
    with SimulatorServer(SimulatorConfig()) as sim:
        code, err = finish(start(sim, workdir))
        assert code == 3, err
    from tests.conftest import Result

    return report_of(Result(code, "", err, workdir))


POINTS = [(k, when) for k in range(1, 11) for when in ("before", "after")]


@pytest.mark.parametrize(("at", "when"), POINTS, ids=[f"{w}-post-{k}" for k, w in POINTS])
def test_killed_anywhere_then_resumed_lands_every_row_once(
    killable, run_cli, tmp_path, baseline, at, when
):
    """SIGKILL at 20 points (in flight, or just answered), then a re-run: exactly once, and
    the same report as an uninterrupted run."""
    sim, killer = killable
    source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path)
    killer.arm(proc.pid, at, when)
    code, _ = finish(proc)
    assert code == -signal.SIGKILL
    result = run_cli(
        "run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json", sim=sim, config=CONFIG
    )
    assert result.code == 3, result.err
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1
    assert report_of(result) == baseline


@pytest.mark.parametrize(
    "killable", [{"faults": {"apply_then_fail_rate": 0.5, "seed": 5}}], indirect=True
)
@pytest.mark.parametrize("at", [2, 3, 5, 8])
def test_killed_during_apply_then_fail_then_resumed_lands_every_row_once(
    killable, run_cli, tmp_path, at
):
    """Killed right after an applied-then-failed answer: the re-run re-sends the same key and
    Engage replays it; nothing doubles."""
    sim, killer = killable
    source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path)
    killer.arm(proc.pid, at, "after")
    finish(proc)
    result = run_cli("run", "in.csv", "--batch-size", BATCH, sim=sim, config=CONFIG)
    assert result.code == 3, result.err
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1


@pytest.mark.parametrize(
    "killable",
    [
        {
            "idempotency_window_seconds": 1,
            "faults": {"apply_then_fail_rate": 1.0, "apply_then_fail_mode": "500"},
        }
    ],
    indirect=True,
)
def test_in_doubt_past_the_window_is_reconciled_not_resent(killable, run_cli, tmp_path):
    """Applied, answer lost, crash; Engage forgets the key; the re-run finds the rows by GET
    and does not send them again."""
    sim, killer = killable
    source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path)
    killer.arm(proc.pid, 3, "after")  # POST 3 applied batch 2 and answered 500: in doubt
    finish(proc)
    held = len(stored(sim))
    time.sleep(1.2)  # past Engage's (1 s) and our (0.5 s) window
    result = run_cli(
        "run",
        "in.csv",
        "--batch-size",
        BATCH,
        "--idempotency-window",
        "0.5",
        sim=sim,
        config=CONFIG,
    )
    assert result.code == 3, result.err
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1
    assert 0 < held < 596  # some batches were applied before the crash, not all
    gets = [r for r in sim.store.requests if r.method == "GET" and r.path.endswith("/transactions")]
    assert gets, "the in-doubt batch was reconciled through GET"


def test_sigterm_stops_cleanly_and_the_rerun_completes(killable, run_cli, tmp_path):
    """SIGTERM mid-run: exit 1, summary and rejects written (unsent rows marked), and the
    re-run completes exactly once."""
    sim, killer = killable
    source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path, "--concurrency", "1")
    killer.arm(proc.pid, 4, "before", signal.SIGTERM)
    code, err = finish(proc)
    assert code == 1, err
    summary = (tmp_path / "summary.json").read_text()
    assert '"status": "interrupted"' in summary
    rejects = (tmp_path / "in.rejects.csv").read_text()
    assert ",unsent," in rejects
    assert "Traceback" not in err
    result = run_cli("run", "in.csv", "--batch-size", BATCH, sim=sim, config=CONFIG)
    assert result.code == 3, result.err
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1


@pytest.mark.parametrize("killable", [{"faults": {"latency_ms": 300}}], indirect=True)
def test_a_second_run_of_the_same_import_exits_2(killable, tmp_path):
    """Two processes on one import: one proceeds, the other exits 2 naming the holder."""
    sim, _ = killable
    source_file(tmp_path / "in.csv")
    first = start(sim, tmp_path, "--concurrency", "1")
    deadline = time.monotonic() + 30
    while not any(r.method == "POST" for r in sim.store.requests):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = start(sim, tmp_path, "--concurrency", "1")
    code2, err2 = finish(second)
    code1, err1 = finish(first)
    assert (code1, code2) == (3, 2), (err1, err2)
    assert f"pid {first.pid}" in err2
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 and max(counts.values()) == 1


def test_a_finished_import_is_not_sent_again_unless_forced(simulator, run_cli, tmp_path):
    """A re-run of a finished import sends nothing, says so and reports the same; --force
    needs --yes off a terminal, then sends again under new keys."""
    sim = simulator()
    source_file(tmp_path / "in.csv")
    args = ("run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json")
    first = run_cli(*args, sim=sim, config=CONFIG)
    posts = sum(r.method == "POST" for r in sim.store.requests)
    again = run_cli(*args, sim=sim, config=CONFIG)
    assert again.code == first.code == 3
    assert "already finished" in again.err and "nothing sent" in again.err
    assert sum(r.method == "POST" for r in sim.store.requests) == posts
    assert report_of(again) == report_of(first)
    refused = run_cli(*args, "--force", sim=sim, config=CONFIG)
    assert refused.code == 2 and "--yes" in refused.err
    forced = run_cli(*args, "--force", "--yes", sim=sim, config=CONFIG)
    assert forced.code == 3
    assert len(stored(sim)) == 2 * 596


def appended(path: Path, first: int, count: int) -> None:
    """``count`` more rows at the end of ``path``, numbered from ``first``, as a day's file
    grows with late rows."""
    rows = "".join(
        f"{contact_id(i % 97 + 1)},{i}.5,1,2026-11-25T11:00:00,POS,late receipt {i},,\n"
        for i in range(first, first + count)
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(rows)


def test_a_file_that_grew_sends_only_the_rows_appended(simulator, run_cli, tmp_path):
    """The day's file run again after late rows were appended: only they are read and sent
    (a new import), the summary names the import they continue; again and again, whether the
    path is written the same way or not."""
    sim = simulator()
    path = source_file(tmp_path / "in.csv")
    args = ("run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json")
    first = run_cli(*args, sim=sim, config=CONFIG)
    assert first.code == 3
    first_id = first.summary()["import_id"]
    appended(path, 1, 30)
    second = run_cli(*args, sim=sim, config=CONFIG)
    assert second.code == 0, second.err
    summary = second.summary()
    assert summary["rows_read"] == summary["rows_accepted"] == 30
    assert summary["continues"] == {"import_id": first_id, "through_row": 600}
    assert "rows 1-600 of in.csv were import" in second.err
    again = run_cli(*args, sim=sim, config=CONFIG)
    assert again.code == 0 and "nothing sent" in again.err
    appended(path, 31, 5)
    third = run_cli("run", str(path), *args[2:], sim=sim, config=CONFIG)  # however it is named
    assert third.code == 0 and third.summary()["rows_read"] == 5
    assert third.summary()["continues"]["through_row"] == 630
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 + 35 and max(counts.values()) == 1
    for import_id, rows in ((first_id, 596), (summary["import_id"], 30)):  # each its own rows
        check = run_cli("reconcile", import_id, sim=sim, config=CONFIG)
        assert check.code == 0 and f"{rows} accepted rows" in check.err, check.err


def test_a_row_appended_that_repeats_an_earlier_one_is_a_duplicate(simulator, run_cli, tmp_path):
    """The earlier rows are not read again but still seen: a repeat after them is rejected."""
    sim = simulator()
    path = source_file(tmp_path / "in.csv")
    args = ("run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json")
    assert run_cli(*args, sim=sim, config=CONFIG).code == 3
    lines = path.read_text().splitlines(keepends=True)
    with path.open("a") as f:
        f.write(lines[5])  # row 5 again
    again = run_cli(*args, sim=sim, config=CONFIG)
    assert again.code == 3 and again.summary()["rows_read"] == 1
    assert "duplicate of row 5" in again.rejects("in.rejects.csv")[0]["reason"]
    assert len(stored(sim)) == 596


@pytest.mark.parametrize("end", ["\r", "\r\n"], ids=["cr", "crlf"])
def test_a_grown_file_is_known_with_any_line_end_and_a_stray_quote(
    simulator, run_cli, tmp_path, end
):
    """Classic Mac or Windows line ends, and a quote inside an unquoted value (55" TV)."""
    sim = simulator()
    rows = [f'{contact_id(i)},{i},1,POS,Bought a 55" TV {i}' for i in range(1, 41)]
    path = tmp_path / "in.csv"
    header = "contactId,amount,definitionId,source,description"
    path.write_bytes(end.join([header, *rows[:30], ""]).encode())
    assert run_cli("run", "in.csv", sim=sim, config=CONFIG).code == 0
    path.write_bytes(end.join([header, *rows, ""]).encode())
    again = run_cli("run", "in.csv", "--summary", "s.json", sim=sim, config=CONFIG)
    assert again.code == 0, again.err
    assert again.summary("s.json")["rows_read"] == 10
    assert sorted(t["description"] for t in stored(sim)) == sorted(r.split(",")[-1] for r in rows)


def test_a_row_cut_in_a_quoted_value_is_read_whole_when_the_file_grew(simulator, run_cli, tmp_path):
    """Read when the writer was inside a quoted value, after one of its line breaks: that row
    was malformed then (rejected, not sent); the grown file's run reads it whole."""
    sim = simulator()
    path = tmp_path / "in.csv"
    header = "contactId,amount,definitionId,source,description\n"
    rows = "".join(f"{contact_id(i)},{i},1,POS,row {i}\n" for i in range(1, 4))
    path.write_text(header + rows + f'{contact_id(9)},9,1,POS,"two\n')
    assert run_cli("run", "in.csv", sim=sim, config=CONFIG).code == 3
    with path.open("a") as f:
        f.write(f'lines"\n{contact_id(8)},8,1,POS,row 5\n')
    grown = run_cli("run", "in.csv", "--summary", "s.json", sim=sim, config=CONFIG)
    assert grown.code == 0, grown.err
    assert grown.summary("s.json")["continues"]["through_row"] == 3
    assert sorted(t["description"] for t in stored(sim)) == [
        "row 1", "row 2", "row 3", "row 5", "two\nlines"
    ]  # fmt: skip


def test_a_grown_file_is_known_from_another_working_directory(
    simulator, run_cli, tmp_path, monkeypatch
):
    """The journal keeps the input's full path: a run from elsewhere, the file named another
    way, the same --state-dir, still reads only the rows appended."""
    sim = simulator()
    path = source_file(tmp_path / "in.csv")
    state = ("--state-dir", str(tmp_path / "state"), "--batch-size", BATCH)
    assert run_cli("run", "in.csv", *state, sim=sim, config=CONFIG).code == 3
    appended(path, 1, 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cfg.toml").write_text(CONFIG)
    monkeypatch.chdir(elsewhere)
    grown = run_cli("run", str(path), *state, "--summary", "s.json", sim=sim, config=CONFIG)
    assert grown.code == 0, grown.err
    assert json.loads((elsewhere / "s.json").read_text())["rows_read"] == 3
    assert len(stored(sim)) == 596 + 3


@pytest.mark.parametrize("words", [("first", "other"), ("other", "first")])
def test_a_file_rewritten_to_the_same_size_continues_the_import_of_its_own_bytes(
    simulator, run_cli, tmp_path, words
):
    """Two imports of one path with as many bytes, other rows: a growth continues the one
    whose bytes it starts with (both orders: the journal lists imports of one second by id)."""
    sim = simulator()
    path = tmp_path / "in.csv"
    header = "contactId,amount,definitionId,source,description\n"
    first = [f"{contact_id(i)},{i},1,POS,{words[0]} {i}\n" for i in range(10, 20)]
    second = [f"{contact_id(i)},{i},1,POS,{words[1]} {i}\n" for i in range(10, 20)]
    path.write_text(header + "".join(first))
    assert run_cli("run", "in.csv", sim=sim, config=CONFIG).code == 0
    path.write_text(header + "".join(second))
    assert run_cli("run", "in.csv", sim=sim, config=CONFIG).code == 0
    second_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    path.write_text(header + "".join(second) + f"{contact_id(30)},30,1,POS,late\n")
    grown = run_cli("run", "in.csv", "--summary", "s.json", sim=sim, config=CONFIG)
    assert grown.code == 0, grown.err
    assert grown.summary("s.json")["continues"] == {"import_id": second_id, "through_row": 10}
    counts = Counter(t["description"] for t in stored(sim))
    assert len(counts) == 21 and max(counts.values()) == 1


def test_a_killed_import_whose_file_grew_is_finished_first_then_the_rest(
    killable, run_cli, tmp_path
):
    """Killed after 3 batches, the file then grew: the next run finishes the killed import
    from its own bytes (exit 3: the file holds more), the one after sends the rows appended."""
    sim, killer = killable
    path = source_file(tmp_path / "in.csv")
    proc = start(sim, tmp_path)
    killer.arm(proc.pid, 4, "before")
    assert finish(proc)[0] == -signal.SIGKILL
    appended(path, 1, 30)
    args = ("run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json")
    finishing = run_cli(*args, sim=sim, config=CONFIG)
    assert finishing.code == 3, finishing.err
    summary = finishing.summary()
    assert summary["input_changed"] and summary["input_appended"] and not summary["continues"]
    assert (
        summary["rows_read"] == 600 and "holds rows appended after what was read" in finishing.err
    )
    rest = run_cli(*args, sim=sim, config=CONFIG)
    assert rest.code == 0, rest.err
    assert rest.summary()["continues"]["import_id"] == summary["import_id"]
    counts = Counter(content(t) for t in stored(sim))
    assert len(counts) == 596 + 30 and max(counts.values()) == 1


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b"this is not a database, just text" * 100), "corrupt"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE foo (x)").connection.commit(),
            "not a points-import journal",
        ),
    ],
    ids=["corrupt", "foreign"],
)
def test_an_unusable_journal_exits_2(simulator, run_cli, tmp_path, make, says):
    """A corrupt or foreign journal file: exit 2 with a clear message, nothing sent."""
    sim = simulator()
    source_file(tmp_path / "in.csv")
    (tmp_path / ".points-import").mkdir()
    make(tmp_path / ".points-import" / "journal.sqlite")
    result = run_cli("run", "in.csv", sim=sim, config=CONFIG)
    assert result.code == 2, result.err
    assert says in result.err
    assert not any(r.method == "POST" for r in sim.store.requests)


def test_a_newer_journal_exits_2(simulator, run_cli, tmp_path):
    """A journal written by a newer points-import is refused, not overwritten."""
    sim = simulator()
    source_file(tmp_path / "in.csv")
    assert run_cli("validate", "in.csv").code == 3
    write_csv(
        tmp_path / "one.csv",
        [
            {
                "contactId": contact_id(1),
                "amount": "1",
                "definitionId": "1",
                "source": "s",
                "description": "d",
            }
        ],
    )
    assert run_cli("run", "one.csv", sim=sim, config=CONFIG).code == 0
    db = sqlite3.connect(tmp_path / ".points-import" / "journal.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    result = run_cli("run", "in.csv", sim=sim, config=CONFIG)
    assert result.code == 2 and "newer" in result.err


def test_status_runs_and_reconcile_describe_an_import(simulator, run_cli, tmp_path):
    """status shows batches by state, runs lists the import, reconcile finds every row once."""
    sim = simulator()
    source_file(tmp_path / "in.csv")
    first = run_cli(
        "run", "in.csv", "--batch-size", BATCH, "--summary", "summary.json", sim=sim, config=CONFIG
    )
    import_id = first.summary()["import_id"]
    status = run_cli("status", import_id)
    assert status.code == 0 and "done 12" in status.err and "finished" in status.err
    runs = run_cli("runs")
    assert runs.code == 0 and import_id in runs.err
    sim.store.requests.clear()
    check = run_cli("reconcile", import_id, sim=sim, config=CONFIG)
    assert check.code == 0, check.err
    assert "596 accepted rows" in check.err and "exactly once" in check.err
    reads = [r.query for r in sim.store.requests if r.method == "GET"]
    assert len(reads) == len(set(reads)) == 291  # each account (97 contacts x 3) read once
    again = {
        "contactId": contact_id(2),
        "amount": 1.25,
        "definitionId": 2,
        "source": "POS",
        "description": "receipt 1",
        "timeStamp": "2026-11-25T10:01:00+00:00",
    }
    posted = httpx.post(
        f"{sim.url}/api/v2/point-accounts/transactions", json=[again], headers={"apikey": "sim-key"}
    )
    assert posted.status_code == 202 and not posted.json()["notAccepted"]
    broken = run_cli("reconcile", import_id, "--sample", "596", sim=sim, config=CONFIG)
    assert broken.code == 3
    assert "row 1: doubled: Engage holds it 2 time(s), expected 1" in broken.err


def test_an_error_mid_way_marks_the_import_aborted_and_a_rerun_completes(
    simulator, run_cli, tmp_path, monkeypatch
):
    """An error while the input is read, after batches went out (here: the third piece can't
    be screened), leaves the import 'aborted' with the error, not 'running'; the re-run
    resumes and every row lands once."""
    import pipeline.load
    import pipeline.plan

    sim = simulator()
    rows = [
        {"contactId": contact_id(i % 40 + 1), "amount": str(i), "definitionId": "1",
         "source": "POS", "description": f"row {i} " + "x" * 150}
        for i in range(1, 6001)
    ]  # fmt: skip
    write_csv(tmp_path / "in.csv", rows)  # ~1.2 MB: pieces of 256 KiB, then 512 KiB, ...
    monkeypatch.setattr(pipeline.load, "FIRST_PIECE", 256 << 10)
    screen, calls = pipeline.plan.screen, {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the disk went away")
        return screen(*args, **kwargs)

    monkeypatch.setattr(pipeline.plan, "screen", failing)
    broken = run_cli("run", "in.csv", "--batch-size", "100", sim=sim, config=CONFIG)
    assert broken.code == 1 and "the disk went away" in broken.err
    assert stored(sim), "some batches went out before the error"
    status = run_cli("status")
    assert "aborted" in status.err and "the disk went away" in status.err
    monkeypatch.setattr(pipeline.plan, "screen", screen)
    again = run_cli("run", "in.csv", "--batch-size", "100", sim=sim, config=CONFIG)
    assert again.code == 0, again.err
    held = Counter(str(t["description"]) for t in stored(sim))
    assert len(held) == 6000 and max(held.values()) == 1
