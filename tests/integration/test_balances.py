"""Balances against the simulator: export, verify (a planted mismatch found, then gone after a
correcting import), bad inputs, and inspect."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from pipeline.simulator.fixture import contact_id
from tests.conftest import ROOT, SAMPLE, stored


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _sums(sim) -> dict[tuple[str, int], Decimal]:
    sums: dict[tuple[str, int], Decimal] = {}
    for t in stored(sim):
        key = (str(t["contactId"]), int(t["definitionId"]))
        sums[key] = sums.get(key, Decimal(0)) + Decimal(str(t["amount"]))
    return sums


def test_export_gives_each_account_s_balance(simulator, run_cli, tmp_path):
    sim = simulator()
    run_cli("run", str(SAMPLE), sim=sim)
    done = run_cli("balances", "export", str(SAMPLE), "--output", "b.csv", sim=sim)
    exported = _rows(tmp_path / "b.csv")
    assert done.code == 0, done.err
    held = {(r["contactId"], int(r["definitionId"])): Decimal(r["balance"]) + Decimal(
        r["pendingPoints"]) for r in exported}  # fmt: skip
    assert held == _sums(sim)
    assert {"accountId", "balanceExpires"} <= set(exported[0])


def test_verify_finds_a_planted_mismatch_then_passes_after_a_correcting_import(
    simulator, run_cli, tmp_path
):
    sim = simulator()
    first = tmp_path / "first.csv"
    first.write_text(
        "contactId,amount,definitionId,source,description\n"
        f"{contact_id(1)},100,1,Legacy,Migrated balance\n"
        f"{contact_id(2)},50.5,2,Legacy,Migrated balance\n"
    )
    assert run_cli("run", "first.csv", sim=sim).code == 0
    expected = tmp_path / "expected.csv"
    expected.write_text(
        "contactId;definitionId;balance\n"
        f"{contact_id(1)};1;120\n"  # the legacy system says 120: 20 were not migrated
        f"{contact_id(2)};2;50.5\n"
    )
    found = run_cli("balances", "verify", "expected.csv", "--report", "m.csv", sim=sim)
    (mismatch,) = _rows(tmp_path / "m.csv")
    assert found.code == 3, found.err
    assert mismatch["contactId"] == contact_id(1) and mismatch["definitionId"] == "1"
    assert (mismatch["expected"], mismatch["actual"], mismatch["difference"]) == ("120", "100",
                                                                                 "-20")  # fmt: skip
    fix = tmp_path / "fix.csv"
    fix.write_text(f"contactId,amount,definitionId,source,description\n"
                   f"{contact_id(1)},20,1,Legacy,Correction\n")  # fmt: skip
    assert run_cli("run", "fix.csv", sim=sim).code == 0
    again = run_cli("balances", "verify", "expected.csv", "--report", "m2.csv", sim=sim)
    assert again.code == 0 and _rows(tmp_path / "m2.csv") == []


def test_verify_adds_a_before_snapshot_and_samples(simulator, run_cli, tmp_path):
    """Balances held before the migration are added to the legacy ones; --sample checks N."""
    sim = simulator()
    (tmp_path / "old.csv").write_text(f"contactId,amount,definitionId,source,description\n"
                                      f"{contact_id(3)},7,1,Shop,Before\n")  # fmt: skip
    run_cli("run", "old.csv", sim=sim)
    run_cli("balances", "export", "old.csv", "--output", "before.csv", sim=sim)
    (tmp_path / "mig.csv").write_text(f"contactId,amount,definitionId,source,description\n"
                                      f"{contact_id(3)},30,1,Legacy,Migrated\n"
                                      f"{contact_id(4)},5,1,Legacy,Migrated\n")  # fmt: skip
    run_cli("run", "mig.csv", sim=sim)
    legacy = f"contactId,definitionId,balance\n{contact_id(3)},1,30\n{contact_id(4)},1,5\n"
    (tmp_path / "legacy.csv").write_text(legacy)
    done = run_cli("balances", "verify", "legacy.csv", "--before", "before.csv", sim=sim)
    assert done.code == 0, done.err
    one = run_cli("balances", "verify", "legacy.csv", "--sample", "1", sim=sim)
    assert "1 balances checked" in one.err


def test_bad_expected_files_are_an_error_or_a_reported_row(simulator, run_cli, tmp_path):
    sim = simulator()
    (tmp_path / "nocol.csv").write_text("contactId,balance\nx,1\n")
    missing = run_cli("balances", "verify", "nocol.csv", sim=sim)
    assert missing.code == 2 and "definitionId" in missing.err and "Traceback" not in missing.err
    (tmp_path / "odd.csv").write_text(f"contactId,definitionId,balance\n{contact_id(5)},1,lots\n"
                                      f"{contact_id(6)},1,3\n")  # fmt: skip
    odd = run_cli("balances", "verify", "odd.csv", "--report", "r.csv", sim=sim)
    notes = {r["contactId"]: r["note"] for r in _rows(tmp_path / "r.csv")}
    assert odd.code == 3
    assert "not a number" in notes[contact_id(5)]
    assert notes[contact_id(6)] == "no such account in Engage"  # nothing was ever imported


def test_inspect_shows_accounts_definitions_and_latest_transactions(simulator, run_cli, tmp_path):
    sim = simulator()
    (tmp_path / "in.csv").write_text(f"contactId,amount,definitionId,source,description\n"
                                     f"{contact_id(7)},12,1,POS,Welcome bonus\n"
                                     f"{contact_id(7)},3,1,POS,Coffee\n")  # fmt: skip
    run_cli("run", "in.csv", sim=sim)
    done = run_cli("inspect", contact_id(7), sim=sim)
    assert done.code == 0, done.err
    assert "Point accounts of" in done.out and "15" in done.out
    assert "Welcome bonus" in done.out and "Coffee" in done.out
    nobody = run_cli("inspect", contact_id(8), sim=sim)
    assert nobody.code == 0 and "no point account" in nobody.out


def test_export_reads_a_legacy_file_with_its_config_and_verify_checks_its_lines(
    simulator, run_cli, tmp_path
):
    """The migration guide's step: export the legacy file's contacts with its config; a
    before-snapshot with a bad line is exit 2; duplicate expected lines are reported."""
    config = str(ROOT / "configs" / "legacy.toml")
    sim = simulator()
    legacy = ROOT / "sample_data" / "legacy_cp1252.csv"
    done = run_cli("balances", "export", str(legacy), "-o", "before.csv", "--config", config,
                   sim=sim)  # fmt: skip
    assert done.code == 0 and "of 6 contacts" in done.err, done.err
    (tmp_path / "bad-before.csv").write_text(
        f"contactId,definitionId,balance\n{contact_id(1)},1.0,3\n"
    )
    (tmp_path / "exp.csv").write_text(
        f"contactId,definitionId,balance\n{contact_id(1)},1,0\n{{{contact_id(1).upper()}}},1,0\n"
    )
    bad = run_cli("balances", "verify", "exp.csv", "--before", "bad-before.csv", sim=sim)
    assert bad.code == 2 and "definitionId" in bad.err and "Traceback" not in bad.err
    dup = run_cli("balances", "verify", "exp.csv", "--report", "r.csv", sim=sim)
    notes = [r["note"] for r in _rows(tmp_path / "r.csv")]
    assert dup.code == 3 and "the same contact and definition as an earlier line" in notes


def test_inspect_of_what_is_no_contact_id_is_a_usage_error(simulator, run_cli):
    sim = simulator()
    done = run_cli("inspect", "x/../../definitions", sim=sim)
    assert done.code == 2 and "not a contact id" in done.err
    assert run_cli("inspect", "{" + contact_id(1).upper() + "}", sim=sim).code == 0


def test_verify_reads_local_spellings_and_a_zero_needs_no_account(simulator, run_cli, tmp_path):
    """Expected balances with a decimal comma, as the config says; a contact the legacy
    system has at 0 and Engage has no account for matches; a balance spelt otherwise is
    reported as written."""
    sim = simulator()
    (tmp_path / "in.csv").write_text(f"contactId,amount,definitionId,source,description\n"
                                     f"{contact_id(1)},1234.5,1,Legacy,Migrated\n")  # fmt: skip
    run_cli("run", "in.csv", sim=sim)
    (tmp_path / "exp.csv").write_text(
        f"contactId;definitionId;balance\n{contact_id(1)};1;1.234,50\n"
        f"{contact_id(2)};1;0\n{contact_id(3)};1;12.50\n"
    )
    config = tmp_path / "c.toml"
    config.write_text('[input]\ndecimal_separator = ","\nthousands_separator = "."\n')
    done = run_cli("balances", "verify", "exp.csv", "--config", str(config), "--report", "r.csv",
                   sim=sim)  # fmt: skip
    (odd,) = _rows(tmp_path / "r.csv")
    assert done.code == 3 and odd["contactId"] == contact_id(3)
    assert odd["expected"] == "12.50" and "not a number" in odd["note"]


def test_export_of_the_contacts_an_import_touched(simulator, run_cli, tmp_path):
    """``--import ID``: the contacts of that import's input, read as the run read it."""
    sim = simulator()
    rows = f"{contact_id(1)};5;1;POS;a\n{contact_id(2)};7;2;POS;b\n"
    (tmp_path / "in.csv").write_text("contactId;amount;definitionId;source;description\n" + rows)
    assert run_cli("run", "in.csv", "--import-id", "night-1", sim=sim).code == 0
    done = run_cli("balances", "export", "--import", "night-1", "-o", "b.csv", sim=sim)
    exported = {
        (r["contactId"], r["definitionId"], r["balance"]) for r in _rows(tmp_path / "b.csv")
    }
    assert done.code == 0 and exported == {(contact_id(1), "1", "5"), (contact_id(2), "2", "7")}
    unknown = run_cli("balances", "export", "--import", "nope", sim=sim)
    assert unknown.code == 2 and "no import nope" in unknown.err
