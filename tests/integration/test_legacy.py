"""Legacy exports into the simulator: other encodings, decimal commas and thousands
separators, local dates, Excel workbooks; and a wrong guess is an error, never mojibake."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline.simulator.fixture import contact_id
from tests.conftest import ROOT, stored

LEGACY = ROOT / "sample_data" / "legacy_cp1252.csv"
CONFIG = (ROOT / "configs" / "legacy.toml").read_text(encoding="utf-8")


def _by_contact(sim) -> dict[str, dict]:
    return {str(t["contactId"]): t for t in stored(sim)}


def test_the_sample_legacy_export_lands_as_written(simulator, run_cli):
    """cp1252, decimal commas, thousands dots, local dates in Stockholm: the amounts, the
    instants and the accents land right; the ambiguous amount and the impossible date are
    rejected with the input's own text and the formats named."""
    sim = simulator()
    done = run_cli("run", str(LEGACY), "--rejects", "r.csv", sim=sim, config=CONFIG)
    held = _by_contact(sim)
    assert done.code == 3 and len(held) == 4, done.err
    first = held[contact_id(1)]
    assert Decimal(str(first["amount"])) == Decimal("1234.5")
    assert first["description"] == "Köp på café" and first["source"] == "Butik Malmö"
    when = datetime.fromisoformat(first["transactionDate"])
    assert when == datetime(2026, 11, 25, 13, 5, tzinfo=UTC)  # 14:05 in Stockholm
    assert Decimal(str(held[contact_id(3)]["amount"])) == Decimal("-3.25")
    assert Decimal(str(held[contact_id(4)]["amount"])) == Decimal("2000")
    rejects = {r["contactId"]: r for r in done.rejects("r.csv")}
    assert rejects[contact_id(5)]["amount"] == "12.50"  # as written, not 12.5 nor 1250
    assert "a ',' for decimals" in rejects[contact_id(5)]["reason"]
    assert rejects[contact_id(6)]["timeStamp"] == "32.11.2026 10:00"
    assert "%d.%m.%Y %H:%M" in rejects[contact_id(6)]["reason"]


def test_a_report_fed_back_in_utf8_is_read_as_utf8(simulator, run_cli, tmp_path):
    """The rejects report is UTF-8 whatever the input was: fixed and fed back with the same
    config (cp1252), its accents are read right, and only the fixed row lands."""
    sim = simulator()
    run_cli("run", str(LEGACY), "--rejects", "r.csv", sim=sim, config=CONFIG)
    report = (tmp_path / "r.csv").read_text(encoding="utf-8").replace("32.11.2026", "30.11.2026")
    (tmp_path / "fixed.csv").write_text(report, encoding="utf-8")
    config = CONFIG.split("[columns]")[0]  # the report has the API's column names
    again = run_cli("run", "fixed.csv", sim=sim, config=config)
    held = _by_contact(sim)
    assert len(held) == 5 and held[contact_id(6)]["description"] == "Datum finns inte", again.err


@pytest.mark.parametrize(
    ("data", "encoding", "said"),
    [
        ("Köp".encode("cp1252"), "utf-8", 'encoding = "cp1252"'),
        (b"K\x81p", "cp1252", "line 2"),
    ],
)
def test_a_wrong_encoding_is_a_clear_error_naming_where(run_cli, tmp_path, data, encoding, said):
    header = b"contactId,amount,definitionId,source,description\n"
    row = contact_id(1).encode() + b",1,1,POS," + data + b"\n"
    (tmp_path / "in.csv").write_bytes(header + row)
    done = run_cli("validate", "in.csv", config=f'[input]\nencoding = "{encoding}"\n')
    assert done.code == 2 and said in done.err and "Traceback" not in done.err


def test_utf16_with_its_byte_order_mark_is_read(simulator, run_cli, tmp_path):
    text = f"contactId,amount,definitionId,source,description\n{contact_id(1)},5,1,POS,Öl\n"
    (tmp_path / "in.csv").write_bytes(text.encode("utf-16"))
    sim = simulator()
    assert run_cli("run", "in.csv", sim=sim).code == 0
    assert [t["description"] for t in stored(sim)] == ["Öl"]


def test_an_excel_workbook_made_here_is_imported(simulator, run_cli, tmp_path):
    """.xlsx: numbers, dates and text cells; the first sheet; its bad row rejected."""
    pl.DataFrame({
        "contactId": [contact_id(1), contact_id(2), "not-a-guid"],
        "amount": [12.5, 3.0, 1.0],
        "definitionId": [1, 2, 1],
        "timeStamp": [datetime(2026, 11, 25, 14, 5), None, None],
        "source": ["POS", "Web", "POS"],
        "description": ["Köp", "Bonus", "bad"],
    }).write_excel(tmp_path / "points.xlsx")  # fmt: skip
    sim = simulator()
    done = run_cli("run", "points.xlsx", "--rejects", "r.csv", sim=sim,
                   config='[input]\ntimezone = "UTC"\n')  # fmt: skip
    held = _by_contact(sim)
    assert done.code == 3 and len(held) == 2
    assert Decimal(str(held[contact_id(1)]["amount"])) == Decimal("12.5")
    assert Decimal(str(held[contact_id(2)]["amount"])) == Decimal("3")
    when = datetime.fromisoformat(held[contact_id(1)]["transactionDate"])
    assert when == datetime(2026, 11, 25, 14, 5, tzinfo=UTC)
    assert [r["contactId"] for r in done.rejects("r.csv")] == ["not-a-guid"]


@pytest.mark.parametrize(
    "config",
    [
        '[input]\ndecimal_separator = ","\nthousands_separator = ","\n',
        '[input]\nencoding = "klingon"\n',
        '[input]\ndate_formats = ["dd.mm.yyyy"]\n',
    ],
)
def test_bad_format_settings_are_a_usage_error(run_cli, config):
    done = run_cli("validate", str(LEGACY), config=config)
    assert done.code == 2 and "error" in done.err and "Traceback" not in done.err


def test_a_broken_workbook_is_an_input_error(run_cli, tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    done = run_cli("validate", "x.xlsx")
    assert done.code == 2 and "Excel" in done.err


def test_legacy_sample_is_what_the_config_reads(tmp_path):
    assert Path(LEGACY).read_bytes().decode("cp1252").startswith("Kundnr;Poäng")


def test_typed_numbers_are_numbers_whatever_the_local_spelling(simulator, run_cli, tmp_path):
    """With a decimal comma and a thousands dot set, an Excel number cell 1.234 is one and a
    bit, never 1234; the separators are for text."""
    pl.DataFrame({
        "contactId": [contact_id(1), contact_id(2)], "amount": [1.234, 1.5],
        "definitionId": [1, 1], "source": ["POS", "POS"], "description": ["a", "b"],
    }).write_excel(tmp_path / "typed.xlsx")  # fmt: skip
    sim = simulator()
    config = '[input]\ndecimal_separator = ","\nthousands_separator = "."\n'
    assert run_cli("run", "typed.xlsx", sim=sim, config=config).code == 0
    held = _by_contact(sim)
    assert Decimal(str(held[contact_id(1)]["amount"])) == Decimal("1.234")
    assert Decimal(str(held[contact_id(2)]["amount"])) == Decimal("1.5")


def test_a_short_year_is_no_four_digit_year_and_an_id_with_a_separator_no_id(run_cli, tmp_path):
    """``25.11.26`` does not match %Y (it would be the year 26); ``1.000`` with a thousands
    dot is no definition id 1."""
    (tmp_path / "in.csv").write_text(
        "contactId;amount;definitionId;timeStamp;source;description\n"
        f"{contact_id(1)};1;1;25.11.26 10:00;S;short year\n"
        f"{contact_id(2)};1;1.000;25.11.2026 10:00;S;thousand\n"
        f"{contact_id(3)};1;1;25.11.2026 10:00;S;fine\n"
    )
    config = ('[input]\ndecimal_separator = ","\nthousands_separator = "."\n'
              'date_formats = ["%d.%m.%Y %H:%M"]\n')  # fmt: skip
    done = run_cli("validate", "in.csv", "--rejects", "r.csv", config=config)
    reasons = {r["description"]: r["reason"] for r in done.rejects("r.csv")}
    assert set(reasons) == {"short year", "thousand"}
    assert "timeStamp" in reasons["short year"] and "definitionId" in reasons["thousand"]


@pytest.mark.parametrize("fmt", ["%d.%m.%Y %z", "%Y-%m-%d %Z", "%d.%m.%Q"])
def test_a_date_format_with_an_offset_or_an_unknown_directive_is_a_usage_error(run_cli, fmt):
    done = run_cli("validate", str(LEGACY), config=f'[input]\ndate_formats = ["{fmt}"]\n')
    assert done.code == 2 and "date format" in done.err


def test_a_report_fed_back_to_a_utf16_config_is_read_as_utf8(simulator, run_cli, tmp_path):
    text = f"contactId,amount,definitionId,source,description\n{contact_id(1)},5,1,POS,Öl\n"
    (tmp_path / "fixed.csv").write_text(text, encoding="utf-8")
    sim = simulator()
    assert run_cli("run", "fixed.csv", sim=sim, config='[input]\nencoding = "utf-16"\n').code == 0
    assert [t["description"] for t in stored(sim)] == ["Öl"]
