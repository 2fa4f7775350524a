"""Exactly once per row, whatever file brings it back: the same rows through every path a
user may send them by land once in total (the simulator, a real server on loopback, holds
each exactly once); rows another import may still send are held back; untimed twins are
reported and sent only when allowed."""

from __future__ import annotations

import csv
import gzip
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.simulator.fixture import contact_id
from tests.conftest import stored, write_csv
from tests.integration.test_resume import finish, start

CONFIG = '[input]\ntimezone = "UTC"\n'
UNKNOWN = "00000000-0000-4000-8000-000000000999"  # a well-formed contact Engage does not have


def rows(first: int, last: int, **extra: str) -> list[dict[str, str]]:
    """Distinct timed rows ``first`` to ``last`` (each its own timeStamp)."""
    return [
        {
            "contactId": contact_id(i % 40 + 1),
            "amount": f"{i}.50",
            "definitionId": str(i % 3 + 1),
            "timeStamp": f"2026-11-25T{i // 60 % 24:02d}:{i % 60:02d}:00+01:00",
            "source": "POS",
            "description": f"receipt {i}",
            **extra,
        }
        for i in range(first, last + 1)
    ]


def held(sim: Any) -> Counter[tuple[str, str]]:
    return Counter((t["contactId"], t["description"]) for t in stored(sim))


def run(run_cli: Any, sim: Any, path: str, *flags: str, config: str = CONFIG) -> Any:
    result = run_cli("run", path, "--summary", "s.json", *flags, sim=sim, config=config)
    result.landed = result.summary("s.json").get("rows_already_landed")
    return result


def test_the_same_rows_by_every_path_land_once(simulator, run_cli, tmp_path: Path):
    """One file imported, then its rows again: without --import-id, reordered with CRLF line
    ends and columns in another order, under other column names, gzipped, as Parquet, merged
    with new rows, with rows appended: every run exits 0, only the new rows are sent."""
    sim = simulator()
    base = rows(1, 120)
    write_csv(tmp_path / "base.csv", base)
    first = run(run_cli, sim, "base.csv", "--import-id", "legacy-2026-11")
    assert first.code == 0 and first.landed == 0, first.err
    assert sum(held(sim).values()) == 120

    again = run(run_cli, sim, "base.csv")
    assert (again.code, again.landed) == (0, 120), again.err
    assert again.summary("s.json")["already_landed_in"] == {"legacy-2026-11": 120}
    assert "120 rows had landed before (import legacy-2026-11): not sent again" in again.err

    shuffled = base[:]
    random.Random(7).shuffle(shuffled)
    columns = ["description", "timeStamp", "amount", "source", "definitionId", "contactId"]
    with (tmp_path / "export.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(
            {**r, "amount": "+0" + r["amount"] + "0", "contactId": r["contactId"].upper()}
            for r in shuffled
        )
    reexport = run(run_cli, sim, "export.csv")
    assert (reexport.code, reexport.landed) == (0, 120), reexport.err

    renamed = [{"Kund": r["contactId"], "Poäng": r["amount"], **r} for r in base]
    renames = {"contactId": "Kund", "amount": "Poäng"}
    pl.DataFrame(renamed).drop(*renames).write_csv(tmp_path / "renamed.csv")
    mapping = CONFIG + '[columns]\nKund = "contactId"\n"Poäng" = "amount"\n'
    assert run(run_cli, sim, "renamed.csv", config=mapping).landed == 120

    (tmp_path / "base.csv.gz").write_bytes(gzip.compress((tmp_path / "base.csv").read_bytes()))
    assert run(run_cli, sim, "base.csv.gz").landed == 120
    pl.read_csv(tmp_path / "base.csv", infer_schema=False).write_parquet(tmp_path / "base.parquet")
    assert run(run_cli, sim, "base.parquet").landed == 120

    write_csv(tmp_path / "merged.csv", base[-30:] + rows(121, 150))
    merged = run(run_cli, sim, "merged.csv")
    assert (merged.code, merged.landed) == (0, 30), merged.err
    assert merged.summary("s.json")["rows_accepted"] == 30

    write_csv(tmp_path / "appended.csv", base + rows(151, 160))
    appended = run(run_cli, sim, "appended.csv")
    assert (appended.code, appended.landed) == (0, 120), appended.err

    counts = held(sim)
    assert sum(counts.values()) == 160 and max(counts.values()) == 1


def test_a_fed_back_report_lands_only_its_fixed_rows(simulator, run_cli, tmp_path: Path):
    """Rows Engage refused (an unknown contact) and rows validation refused, in the rejects
    report: fixed, the report imported lands them; the ones left as they were are refused
    again; the rows that landed the first time are not in it, and stay single."""
    sim = simulator()
    data = rows(1, 40)
    for i in (3, 17, 29):
        data[i]["contactId"] = UNKNOWN
    data[8]["amount"] = "ten"
    write_csv(tmp_path / "day.csv", data)
    first = run(run_cli, sim, "day.csv")
    assert first.code == 3 and sum(held(sim).values()) == 36, first.err
    report = first.rejects("day.rejects.csv")
    assert [r["stage"] for r in report] == ["server", "validation", "server", "server"]
    for row in report[:2]:  # two fixed, two left as they were
        row.update(contactId=contact_id(2), amount="9.50")
    with (tmp_path / "fixed.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(report[0]))
        writer.writeheader()
        writer.writerows(report)
    fixed = run(run_cli, sim, "fixed.csv")
    assert fixed.code == 3, fixed.err
    assert fixed.summary("s.json")["rows_accepted"] == 2
    assert [r["stage"] for r in fixed.rejects("fixed.rejects.csv")] == ["server", "server"]
    counts = held(sim)
    assert sum(counts.values()) == 38 and max(counts.values()) == 1


def test_untimed_twins_are_reported_and_sent_when_allowed(simulator, run_cli, tmp_path: Path):
    """A monthly bonus without timeStamp: next month's identical rows may be new points or
    the same file sent again. They are held back (exit 3, the reason naming the twin and
    the override), and --allow-twins on the report sends them."""
    sim = simulator()
    bonus = [{k: v for k, v in r.items() if k != "timeStamp"} for r in rows(1, 10)]
    write_csv(tmp_path / "november.csv", bonus)
    assert run(run_cli, sim, "november.csv").code == 0
    write_csv(tmp_path / "december.csv", bonus[::-1])
    december = run(run_cli, sim, "december.csv")
    assert december.code == 3, december.err
    report = december.rejects("december.rejects.csv")
    assert len(report) == 10 and sum(held(sim).values()) == 10
    assert all("a twin landed" in r["reason"] and "--allow-twins" in r["reason"] for r in report)
    sent = run(run_cli, sim, "december.rejects.csv", "--allow-twins")
    assert sent.code == 0, sent.err
    assert set(held(sim).values()) == {2}  # each bonus twice: November's and December's


def test_with_an_id_column_the_source_id_is_the_identity(simulator, run_cli, tmp_path: Path):
    """[input] id_column: a re-export with corrected text but the same transaction ids is
    the same rows (not sent); the id is never sent; the report keeps the id column."""
    sim = simulator()
    data = [{**r, "txn": f"T-{i}"} for i, r in enumerate(rows(1, 20))]
    data[5]["contactId"] = UNKNOWN
    config = CONFIG + 'id_column = "txn"\n'
    header = ["txn", "contactId", "amount", "definitionId", "timeStamp", "source", "description"]
    pl.DataFrame(data).select(header).write_csv(tmp_path / "legacy.csv")
    first = run(run_cli, sim, "legacy.csv", config=config)
    assert first.code == 3, first.err
    assert [r["txn"] for r in first.rejects("legacy.rejects.csv")] == ["T-5"]
    assert all("txn" not in str(t) and "T-" not in str(t) for t in stored(sim))
    pl.DataFrame(data).select(header).with_columns(
        pl.col("description").str.to_uppercase()
    ).write_csv(tmp_path / "corrected.csv")
    again = run(run_cli, sim, "corrected.csv", config=config)
    assert (again.code, again.landed) == (3, 19), again.err  # T-5 refused again
    assert sum(held(sim).values()) == 19


def test_a_crash_in_flight_then_another_file_sends_nothing_twice(killable, run_cli, tmp_path):
    """SIGKILL while a request is in flight (its rows claimed, no answer), then a different
    file holding some of the same rows: those the killed import may still send are held
    back naming it; re-run, it settles them; the held rows fed back then land only if they
    had not. Nothing doubled, nothing lost."""
    sim, killer = killable
    first = rows(1, 300)
    write_csv(tmp_path / "in.csv", first)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    proc = start(sim, tmp_path, "--concurrency", "1")
    killer.arm(proc.pid, 3, "before")
    code, _ = finish(proc)
    assert code == -signal.SIGKILL
    write_csv(tmp_path / "other.csv", first[80:220] + rows(301, 320))
    other = run(run_cli, sim, "other.csv")
    assert other.code == 3, other.err
    reasons = Counter(r["reason"].split(":")[0] for r in other.rejects("other.rejects.csv"))
    assert set(reasons) <= {"outcome unknown", "not sent yet"} and reasons, reasons
    resumed = run_cli("run", "in.csv", "--batch-size", "50", sim=sim, config=CONFIG)
    assert resumed.code == 0, resumed.err
    fed = run(run_cli, sim, "other.rejects.csv")
    assert fed.code == 0, fed.err
    counts = held(sim)
    assert sum(counts.values()) == 320 and max(counts.values()) == 1


def test_status_and_runs_show_rows_landed_before_and_held_back(simulator, run_cli, tmp_path):
    """The second import of the same rows: runs lists how many had landed before and how many
    it held back; status says where they landed."""
    sim = simulator()
    write_csv(tmp_path / "one.csv", rows(1, 30))
    assert run(run_cli, sim, "one.csv").code == 0
    bonus = [{k: v for k, v in r.items() if k != "timeStamp"} for r in rows(100, 104)]
    write_csv(tmp_path / "two.csv", rows(1, 20) + bonus)
    write_csv(tmp_path / "bonus.csv", bonus)
    assert run(run_cli, sim, "bonus.csv").code == 0
    two = run(run_cli, sim, "two.csv")
    assert (two.code, two.landed) == (3, 20), two.err
    listing = run_cli("runs").err.splitlines()
    assert listing[0].split()[5:7] == ["landed", "held"]
    counts = sorted(line.split()[5:7] for line in listing[1:])
    assert counts == [["0", "0"], ["0", "0"], ["20", "5"]]
    status = run_cli("status", two.summary("s.json")["import_id"]).err
    assert "5 held back" in status and "20 had landed before (not sent)" in status


def test_a_forgotten_import_run_again_keeps_its_report(simulator, run_cli, tmp_path: Path):
    """Its rows forgotten ([journal] remember_days), a finished import run again sends
    nothing, exits as it did, and leaves the rejects report it wrote: made again, it would
    lose the rows Engage refused (they are no longer known)."""
    sim = simulator()
    data = rows(1, 10)
    data[3]["contactId"] = UNKNOWN
    write_csv(tmp_path / "day.csv", data)
    first = run(run_cli, sim, "day.csv")
    assert first.code == 3 and len(first.rejects("day.rejects.csv")) == 1, first.err
    time.sleep(2.1)  # the journal's times are in whole seconds
    again = run(run_cli, sim, "day.csv", config=CONFIG + "[journal]\nremember_days = 0.00001\n")
    assert again.code == 3, again.err
    assert "its rejects report is not made again" in again.err
    assert len(again.rejects("day.rejects.csv")) == 1 and sum(held(sim).values()) == 9
