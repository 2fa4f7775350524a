"""End to end: the CLI imports files into the simulator, a real server on loopback."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx

from pipeline import spool
from pipeline.simulator.fixture import contact_id
from tests.conftest import FAST_RETRY, SAMPLE, stored, write_csv

DEMO_TZ = '[input]\ntimezone = "Europe/Stockholm"\n'


def _content(row: dict[str, object]) -> tuple[str, Decimal, int, str, str]:
    return (
        str(row["contactId"]).lower(),
        Decimal(str(row["amount"])),
        int(str(row["definitionId"])),
        str(row["source"]),
        str(row["description"]),
    )


def numbered_rows(n: int) -> list[dict[str, str]]:
    """``n`` valid rows over 50 contacts, each told apart by its description ``row i``."""
    return [
        {
            "contactId": contact_id(i % 50 + 1),
            "amount": str(i),
            "definitionId": "1",
            "source": "POS",
            "description": f"row {i}",
        }
        for i in range(1, n + 1)
    ]


def timed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows, each with a timeStamp of its own."""
    return [
        {**r, "timeStamp": f"2026-11-25T10:{i // 60:02d}:{i % 60:02d}Z"} for i, r in enumerate(rows)
    ]


def write_report(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows of a rejects report, edited, with every column it had."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _input_rows(path: Path) -> dict[int, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return dict(enumerate(csv.DictReader(f), start=1))


def test_sample_imports_every_valid_row_once_and_reports_the_bad_ones(simulator, run_cli):
    """The sample: exit 3, each accepted row stored exactly once, the rejects are the rest."""
    sim = simulator()
    result = run_cli(
        "run", str(SAMPLE), "--summary", "summary.json", sim=sim, config=DEMO_TZ + FAST_RETRY
    )
    assert result.code == 3, result.err
    summary = result.summary()
    rejects = result.rejects("transactions.rejects.csv")
    assert summary["rows_read"] == summary["rows_accepted"] + summary["rows_rejected"]
    assert (summary["rows_read"], summary["rows_rejected"]) == (4026, 26)
    assert Counter(r["stage"] for r in rejects) == {"validation": 22, "server": 4}
    assert all(r["reason"] for r in rejects)
    rejected_rows = {int(r["sourceRow"]) for r in rejects}
    accepted = [row for n, row in _input_rows(SAMPLE).items() if n not in rejected_rows]
    assert Counter(_content(t) for t in stored(sim)) == Counter(_content(r) for r in accepted)
    assert max(Counter(_content(t) for t in stored(sim)).values()) == 1


def test_rejects_spilled_to_disk_make_the_same_report(simulator, run_cli, monkeypatch):
    """With the rejects held in memory or spilled to disk a few rows at a time (as a file of
    millions of bad rows is), the same report, byte for byte, and the same summary."""
    reports = []
    for spill_rows, span in ((None, None), (3, 500)):
        monkeypatch.setattr(spool, "SPILL_ROWS", spill_rows or spool.SPILL_ROWS)
        monkeypatch.setattr(spool, "SPAN", span or spool.SPAN)
        result = run_cli("run", "--dry-run", str(SAMPLE), "--summary", "summary.json",
                         config=DEMO_TZ)  # fmt: skip
        assert result.code == 3, result.err
        summary = result.summary()
        reports.append(((result.workdir / "transactions.rejects.csv").read_bytes(),
                        summary["rows_invalid"], summary["rejected_by_stage"]))  # fmt: skip
    assert reports[0] == reports[1]
    assert reports[0][1] == 20  # the sample's bad rows a dry run sees (no definitions)


def test_running_the_same_file_again_adds_nothing(simulator, run_cli):
    """A re-run sends the same keys: Engage replays, the store is unchanged, same outcome."""
    sim = simulator()
    first = run_cli("run", str(SAMPLE), "--summary", "summary.json", sim=sim, config=DEMO_TZ)
    held = stored(sim)
    again = run_cli("run", str(SAMPLE), "--summary", "summary.json", sim=sim, config=DEMO_TZ)
    assert (first.code, again.code) == (3, 3)
    assert stored(sim) == held
    assert again.rejects("transactions.rejects.csv") == first.rejects("transactions.rejects.csv")


def test_fixed_rejects_import_and_nothing_else_twice(simulator, run_cli, tmp_path):
    """Fixing the rejects report and importing it adds exactly the fixed rows."""
    sim = simulator()
    run_cli("run", str(SAMPLE), sim=sim, config=DEMO_TZ)
    before = len(stored(sim))
    with (tmp_path / "transactions.rejects.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fixed = [
        {
            **r,
            "contactId": contact_id(7),
            "amount": "10",
            "definitionId": "1",
            "source": "Store 012",
            "description": f"fixed row {r['sourceRow']}",
            "timeStamp": "",
            "validFrom": "",
            "validTo": "2027-12-31",
        }
        for r in rows
    ]
    write_report(tmp_path / "fixed.csv", fixed)
    result = run_cli("run", "fixed.csv", sim=sim, config=DEMO_TZ)
    assert result.code == 0, result.err
    assert len(stored(sim)) == before + len(rows)
    assert max(Counter(_content(t) for t in stored(sim)).values()) == 1


def test_a_fed_back_rejects_report_keeps_its_duplicates_out(simulator, run_cli, tmp_path):
    """Rows A, B, A, C (C's amount bad): the second A is a duplicate. C fixed in the report
    and the report imported: C lands, A does not land a second time: the landed-row index
    knows it (without a timeStamp, it is held back as a twin of the first A: exit 3)."""
    sim = simulator()
    good = {"definitionId": "1", "source": "POS"}
    rows = [
        {"contactId": contact_id(1), "amount": "5", "description": "A", **good},
        {"contactId": contact_id(2), "amount": "6", "description": "B", **good},
        {"contactId": contact_id(1), "amount": "5", "description": "A", **good},
        {"contactId": contact_id(3), "amount": "ten", "description": "C", **good},
    ]
    write_csv(tmp_path / "in.csv", rows)
    first = run_cli("run", "in.csv", sim=sim)
    assert first.code == 3, first.err
    report = first.rejects("in.rejects.csv")
    assert [r["description"] for r in report] == ["A", "C"]
    report[1]["amount"] = "10"
    write_report(tmp_path / "fixed.csv", report)
    again = run_cli("run", "fixed.csv", sim=sim)
    assert again.code == 3, again.err
    assert sorted(t["description"] for t in stored(sim)) == ["A", "B", "C"]
    [kept_out] = again.rejects("fixed.rejects.csv")
    assert kept_out["description"] == "A" and "a twin landed" in kept_out["reason"]
    third = run_cli("run", "fixed.rejects.csv", sim=sim)  # and so on, report after report
    assert third.code == 3, third.err
    assert len(stored(sim)) == 3


def test_a_fed_back_report_keeps_the_rows_of_an_unfinished_import_out(simulator, run_cli, tmp_path):
    """The first batch applied, then answered 500, with no retry left: exit 1, its rows
    reported 'outcome unknown', the rest 'not sent'. That report imported as it is (against
    the README's advice) sends none of them, report after report, whatever their reasons
    say: the landed-row index holds them for the unfinished import (those in doubt may be in
    Engage, and re-running the original sends the rest). Once it is re-run, the report
    fed back sends nothing: every row landed."""
    sim = simulator(faults={"apply_then_fail_rate": 1.0, "apply_then_fail_mode": "500"})
    write_csv(tmp_path / "in.csv", timed(numbered_rows(30)))
    config = FAST_RETRY.replace("max_attempts = 30", "max_attempts = 1")
    first = run_cli("run", "in.csv", "--batch-size", "10", "--concurrency", "1", sim=sim,
                    config=config)  # fmt: skip
    assert first.code == 1, first.err
    assert len(stored(sim)) == 10  # the first batch: applied, never answered
    assert "in.rejects.csv; 30 of them not settled" in first.err
    httpx.put(f"{sim.url}/_sim/faults", json={}).raise_for_status()
    report = first.rejects("in.rejects.csv")
    assert Counter(r["reason"].split(" (")[0].split(":")[0] for r in report) == {
        "outcome unknown": 10,
        "not sent": 20,
    }
    again = run_cli("run", "in.rejects.csv", sim=sim)
    assert again.code == 3, again.err
    assert len(stored(sim)) == 10  # none sent
    kept = again.rejects("in.rejects.rejects.csv")
    assert Counter(r["reason"].split(":")[0] for r in kept) == {
        "outcome unknown": 10,
        "not sent yet": 20,
    }
    import_id = hashlib.sha256((tmp_path / "in.csv").read_bytes()).hexdigest()[:16]
    assert all(f"import {import_id}" in r["reason"] for r in kept)
    for row in kept:
        row["reason"] = ""  # cleared: the reason is not what keeps them out
    write_report(tmp_path / "cleared.csv", kept)
    cleared = run_cli("run", "cleared.csv", sim=sim)
    assert cleared.code == 3 and len(stored(sim)) == 10, cleared.err
    resumed = run_cli("run", "in.csv", "--batch-size", "10", sim=sim)
    assert resumed.code == 0, resumed.err
    assert len(stored(sim)) == 30
    assert max(Counter(_content(t) for t in stored(sim)).values()) == 1
    third = run_cli("run", "cleared.rejects.csv", "--summary", "third.json", sim=sim)
    assert third.code == 0, third.err
    assert len(stored(sim)) == 30 and third.summary("third.json")["rows_already_landed"] == 30


def test_faults_still_store_every_valid_row_exactly_once(simulator, run_cli):
    """30 % failing requests and 10 % apply-then-fail: every valid row lands exactly once."""
    faults = {
        "error_rates": {500: 0.1, 502: 0.08, 503: 0.06, 429: 0.06},
        "apply_then_fail_rate": 0.1,
        "retry_after_seconds": 0.01,
        "seed": 11,
    }
    sim = simulator(faults=faults)
    result = run_cli(
        "run",
        str(SAMPLE),
        "--batch-size",
        "100",
        "--summary",
        "summary.json",
        sim=sim,
        config=DEMO_TZ + FAST_RETRY,
    )
    assert result.code == 3, result.err
    assert result.summary()["rows_accepted"] == 4000
    counts = Counter(_content(t) for t in stored(sim))
    assert len(counts) == 4000 and max(counts.values()) == 1
    statuses = Counter(r.status for r in sim.store.requests)
    assert statuses[500] and statuses[429], "the faults must really have happened"


def test_a_refusal_after_an_attempt_that_was_applied_sends_nothing_twice(
    simulator, run_cli, tmp_path
):
    """Half the batches are applied and then answered 500; 30 % of requests get a 400 that
    is not Engage's answer to the key. A 400 after an unknown outcome is retried under the
    same key, never split under new keys; if it stays, the batch is left in doubt and the run
    stops, and the next run settles it: no row lands twice, and every row is either stored or
    in the rejects, not both."""
    faults = {
        "error_rates": {400: 0.3},
        "apply_then_fail_rate": 0.5,
        "apply_then_fail_mode": "500",
        "seed": 4,
    }
    sim = simulator(faults=faults)
    rows = numbered_rows(600)
    write_csv(tmp_path / "in.csv", rows)
    config = FAST_RETRY.replace("max_attempts = 30", "max_attempts = 3")
    for _ in range(20):  # a batch left in doubt stops the run; the next run settles it
        result = run_cli("run", "in.csv", "--batch-size", "50", sim=sim, config=config)
        if result.code != 1:
            break
        assert "whose outcome is unknown" in result.err, result.err
    assert result.code in (0, 3), result.err
    held = Counter(str(t["description"]) for t in stored(sim))
    assert max(held.values()) == 1
    rejected = {f"row {r['sourceRow']}" for r in result.rejects("in.rejects.csv")}
    assert not rejected & set(held)
    assert len(rejected) + len(held) == 600
    statuses = Counter(r.status for r in sim.store.requests)
    assert statuses[400] and statuses[500], "the faults must really have happened"


def test_a_refused_batch_is_split_until_the_bad_row_is_found(simulator, run_cli, tmp_path):
    """A 400 for a batch with one bad row: only that row is rejected, the rest stored once."""
    sim = simulator(max_description_length=100)
    rows = numbered_rows(200)
    rows[136]["description"] = "x" * 150
    write_csv(tmp_path / "in.csv", rows)
    result = run_cli("run", "in.csv", sim=sim, config=FAST_RETRY)
    assert result.code == 3, result.err
    rejects = result.rejects("in.rejects.csv")
    assert [(r["sourceRow"], r["stage"]) for r in rejects] == [("137", "batch")]
    assert "400" in rejects[0]["reason"]
    assert len(stored(sim)) == 199


def test_a_refused_key_aborts_with_exit_1(simulator, run_cli, tmp_path):
    """A wrong API key: exit 1, one clear line, nothing stored."""
    sim = simulator()
    write_csv(
        tmp_path / "in.csv",
        [
            {
                "contactId": contact_id(1),
                "amount": "5",
                "definitionId": "1",
                "source": "s",
                "description": "d",
            }
        ],
    )
    result = run_cli("run", "in.csv", sim=sim, key="wrong-key")
    assert result.code == 1
    assert "refused the API key (401)" in result.err
    assert "Traceback" not in result.err
    assert stored(sim) == []


def test_header_only_is_a_quiet_night(simulator, run_cli, tmp_path):
    """A header-only file: exit 0, 'nothing to import', no request."""
    sim = simulator()
    write_csv(tmp_path / "in.csv", [])
    result = run_cli("run", "in.csv", sim=sim)
    assert result.code == 0
    assert "nothing to import" in result.err
    assert not [r for r in sim.store.requests if r.method == "POST"]


def test_a_file_that_grows_while_it_is_read_imports_what_it_held_and_says_so(
    simulator, run_cli, tmp_path, monkeypatch
):
    """An export still being written when the cron job starts: the rows it held when it was
    hashed are imported (that is the import's identity), and the run ends with exit 3 naming
    the change, so the rows added since are not lost silently; run again, only they are
    read."""
    import pipeline.plan

    sim = simulator()
    path = write_csv(tmp_path / "in.csv", numbered_rows(20))
    screen = pipeline.plan.screen

    def growing(*args, **kwargs):
        with path.open("a") as handle:
            handle.write(f"{contact_id(99)},5,1,POS,late row\n")
        return screen(*args, **kwargs)

    monkeypatch.setattr(pipeline.plan, "screen", growing)
    result = run_cli("run", "in.csv", "--summary", "s.json", sim=sim)
    assert result.code == 3, result.err
    assert "in.csv holds rows appended after what was read" in result.err
    assert len(stored(sim)) == 20
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["input_changed"] is True and summary["rows_read"] == 20
    monkeypatch.setattr(pipeline.plan, "screen", screen)
    late = path.read_text().count("late row")
    again = run_cli("run", "in.csv", "--summary", "s.json", sim=sim)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["continues"]["through_row"] == 20 and summary["rows_read"] == late
    assert again.code in (0, 3) and not summary["input_changed"]
    assert len(stored(sim)) == 20 + summary["rows_accepted"]
    held = [(t["contactId"], t["description"]) for t in stored(sim)]
    assert len(held) == len(set(held))  # none of the 20 again


def test_a_file_still_being_written_is_read_to_its_last_whole_row(
    simulator, run_cli, tmp_path, monkeypatch
):
    """An export cut in the middle of a row when it was read, and growing: that row is not
    read (cut short, its amount could be too), the run says rows were appended (exit 3);
    run again, the rest is read, the cut row whole."""
    from pipeline.load import source as source_module

    sim = simulator()
    path = write_csv(tmp_path / "in.csv", numbered_rows(20))
    with path.open("a") as handle:
        handle.write(f"{contact_id(98)},12")  # the writer is in the middle of row 21
    whole_rows = source_module._Scan.whole_rows

    def writing(scan, at):
        with path.open("a") as handle:  # ...and goes on, just after it was hashed
            handle.write(f"5,1,,POS,late row,,\n{contact_id(99)},7,1,,POS,later row,,\n")
        return whole_rows(scan, at)

    monkeypatch.setattr(source_module._Scan, "whole_rows", writing)
    first = run_cli("run", "in.csv", "--summary", "s.json", sim=sim)
    assert first.code == 3, first.err
    assert first.summary("s.json")["input_appended"] and len(stored(sim)) == 20
    monkeypatch.setattr(source_module._Scan, "whole_rows", whole_rows)
    rest = run_cli("run", "in.csv", "--summary", "s.json", sim=sim)
    assert rest.code == 0, rest.err
    assert rest.summary("s.json")["continues"]["through_row"] == 20
    late = {t["description"]: t["amount"] for t in stored(sim) if "late" in t["description"]}
    assert len(stored(sim)) == 22 and late == {"late row": 125, "later row": 7}


def test_an_import_re_run_with_other_settings_is_refused(simulator, run_cli, tmp_path):
    """A finished import re-run with another --batch-size: its batches would not be the
    recorded ones, and the report made of them wrong (the reviewer's: refused rows dropped,
    accepted ones called unsent, doubled when fed back). Exit 2, nothing sent; the same
    settings replay its outcome."""
    sim = simulator()
    write_csv(tmp_path / "in.csv", numbered_rows(30))
    first = run_cli("run", "in.csv", "--batch-size", "10", sim=sim)
    assert first.code == 0, first.err
    report = (tmp_path / "in.rejects.csv").read_bytes()
    other = run_cli("run", "in.csv", "--batch-size", "7", sim=sim)
    assert other.code == 2 and "planned with batch_size 10" in other.err, other.err
    assert (tmp_path / "in.rejects.csv").read_bytes() == report
    same = run_cli("run", "in.csv", "--batch-size", "10", sim=sim)
    assert same.code == 0 and "already finished" in same.err, same.err
    assert len(stored(sim)) == 30


def test_engage_refusing_every_row_stops_the_run_after_a_few_batches(simulator, run_cli, tmp_path):
    """Every request answered 400 (a contract changed): each batch of n rows took 2n-1
    requests to refuse row by row, a million rows two million requests. After three such
    batches in a row the run stops (exit 1): those rows refused, the rest not sent; once
    Engage takes rows again, the same command sends the rest."""
    sim = simulator(faults={"error_rates": {400: 1.0}})
    write_csv(tmp_path / "in.csv", numbered_rows(100))
    args = ("run", "in.csv", "--batch-size", "10", "--concurrency", "1")
    first = run_cli(*args, sim=sim)
    assert first.code == 1 and "refused every row of 3 batches in a row" in first.err, first.err
    posts = [r for r in sim.store.requests if r.method == "POST"]
    assert len(posts) == 3 * 19 and not stored(sim)
    stages = Counter(r["reason"].split(":")[0] for r in first.rejects("in.rejects.csv"))
    assert stages == {"Engage refused it": 30, "not sent": 70}
    httpx.put(f"{sim.url}/_sim/faults", json={}).raise_for_status()
    again = run_cli(*args, sim=sim)
    assert again.code == 3, again.err
    assert len(stored(sim)) == 70 and len(again.rejects("in.rejects.csv")) == 30
