"""Bad files: exit 2 with one clear line (or row-level rejects), never a traceback or a post."""

from __future__ import annotations

import gzip
import os

import pytest

from pipeline.simulator.fixture import contact_id

HEADER = "contactId,amount,definitionId,source,description\n"
GOOD = f"{contact_id(1)},5,1,POS,ok\n"


def _posts(sim) -> int:
    return sum(1 for r in sim.store.requests if r.method == "POST")


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n\n  \n", "is empty"),
        ("nocolumn.csv", b"contactId,amount,source,description\n", "no column 'definitionId'"),
        (
            "semicolons.csv",
            HEADER.replace(",", ";").encode() + GOOD.replace(",", ";").encode(),
            None,
        ),
        ("latin1.csv", (HEADER + GOOD).encode() + "Malmö,1,1,s,d\n".encode("latin-1"), "not UTF-8"),
        ("garbage.csv", os.urandom(4096).replace(b"\x00", b"\x01") + b"\x00\xff", "binary"),
        ("garbage.parquet", b"PAR1" + b"\x13" * 300, "not a readable Parquet"),
        ("broken.csv.gz", gzip.compress((HEADER + GOOD).encode())[:30], "broken gzip"),
    ],
)
def test_unreadable_files_exit_2_and_send_nothing(
    simulator, run_cli, tmp_path, name, content, says
):
    """Each unreadable file: exit 2, one line naming the problem, not a single POST."""
    sim = simulator()
    (tmp_path / name).write_bytes(content)
    result = run_cli("run", name, sim=sim)
    if says is None:  # a sniffed delimiter makes this one readable
        assert result.code == 0, result.err
        return
    assert result.code == 2, result.err
    error_lines = [line for line in result.err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and says in error_lines[0], result.err
    assert "Traceback" not in result.err
    assert _posts(sim) == 0


def test_a_configured_delimiter_the_header_lacks_gives_way_to_the_one_it_holds(
    simulator, run_cli, tmp_path
):
    """A ';' file read with a configured ',' (its header holds none): read with ';', said."""
    sim = simulator()
    (tmp_path / "in.csv").write_text(HEADER.replace(",", ";") + GOOD.replace(",", ";"))
    result = run_cli("run", "in.csv", sim=sim, config='[input]\ndelimiter = ","\n')
    assert result.code == 0, result.err
    assert "the header holds no configured delimiter" in result.err
    assert _posts(sim) == 1


def test_a_missing_file_exits_2(run_cli):
    """A file that does not exist: exit 2 and says so."""
    result = run_cli("validate", "nope.csv")
    assert result.code == 2
    assert "does not exist" in result.err


def test_a_10mb_field_is_a_row_level_reject(simulator, run_cli, tmp_path):
    """A 10 MB description rejects its row only; the other row is imported."""
    sim = simulator()
    huge = "x" * (10 * 1024 * 1024)
    (tmp_path / "in.csv").write_text(HEADER + GOOD + f"{contact_id(2)},5,1,POS,{huge}\n")
    result = run_cli("run", "in.csv", sim=sim)
    assert result.code == 3, result.err
    rejects = result.rejects("in.rejects.csv")
    assert [r["sourceRow"] for r in rejects] == ["2"]
    assert "longer than" in rejects[0]["reason"]
    assert len(sim.store.transactions) == 1


def test_ragged_and_badly_quoted_rows_are_rejected_not_fatal(simulator, run_cli, tmp_path):
    """A row with too many fields and a stray quote: row-level rejects, the good row lands."""
    sim = simulator()
    ragged = f"{contact_id(2)},5,1,POS,too,many,fields\n"
    (tmp_path / "in.csv").write_text(HEADER + GOOD + ragged + f'{contact_id(3)},5,1,"" ,d\n')
    result = run_cli("run", "in.csv", sim=sim)
    assert result.code == 3, result.err
    reasons = {r["sourceRow"]: r["reason"] for r in result.rejects("in.rejects.csv")}
    assert "fields" in reasons["2"]
    assert "1" not in reasons
    assert len(sim.store.transactions) == 1 + ("3" not in reasons)


def test_a_rejects_report_holding_a_nul_loads_again(run_cli, tmp_path):
    """An NDJSON \\u0000 is a rejected row; its report, which holds the NUL, is still valid
    input (not "binary"): fed back, that row is rejected again and the others pass."""
    rest = '"amount": "1", "definitionId": "1", "source": "POS"'
    lines = [
        f'{{"contactId": "{contact_id(i)}", {rest}, "description": "{text}"}}'
        for i, text in enumerate(["ok 1", "a\\u0000b", "ok 2"], start=1)
    ]
    (tmp_path / "in.ndjson").write_text("\n".join(lines) + "\n")
    first = run_cli("validate", "in.ndjson", "--rejects", "first.csv")
    assert first.code == 3, first.err
    assert b"\x00" in (tmp_path / "first.csv").read_bytes()
    again = run_cli("validate", "first.csv", "--rejects", "again.csv")
    assert again.code == 3, again.err
    assert [r["reason"] for r in again.rejects("again.csv")] == [
        "description holds a control character"
    ]
