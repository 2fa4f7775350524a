"""Load: every format, header matching, malformed rows, whole-file errors, row numbers."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, InputError
from pipeline.load import load, open_source, read_chunks
from pipeline.load.formats import UNPAIRED
from pipeline.model import FIELDS, LOAD_ERROR

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
HEADER = ["contactId", "amount", "definitionId", "source", "description"]
ROW = [GUID, "10", "3", "POS", "receipt"]


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def text(rows: list[list[str]], sep: str = ",", eol: str = "\n") -> str:
    return "".join(sep.join(row) + eol for row in rows)


def values(path: Path, *columns: str, **kwargs: object) -> list[tuple[object, ...]]:
    return load(path, **kwargs).frame.select(columns or HEADER).rows()  # type: ignore[arg-type]


def input_error(path: Path, **kwargs: object) -> str:
    """The message of the InputError loading ``path`` raises, checked to be one line naming it."""
    with pytest.raises(InputError) as caught:
        load(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_frame_has_the_api_fields_as_text_then_source_row_and_load_error(tmp_path: Path) -> None:
    """The frame's columns are FIELDS (String), sourceRow (Int64), _loadError (String) and
    _rowId (String: the id column's values, null without one)."""
    loaded = load(write(tmp_path / "in.csv", text([HEADER, ROW])))
    assert loaded.frame.columns == [*FIELDS, "sourceRow", "_loadError", "_rowId"]
    assert loaded.frame.schema == pl.Schema(
        {
            **dict.fromkeys(FIELDS, pl.String),
            "sourceRow": pl.Int64,
            "_loadError": pl.String,
            "_rowId": pl.String,
        }
    )
    row = (GUID, "10", "3", None, "POS", "receipt", None, None, 1, None, None)
    assert loaded.frame.row(0) == row
    assert loaded.format == "csv"


def test_sha256_is_of_the_file_as_stored(tmp_path: Path) -> None:
    """Loaded.sha256 fingerprints the bytes on disk (compressed, if they are)."""
    raw = gzip.compress(text([HEADER, ROW]).encode())
    assert load(write(tmp_path / "in.csv.gz", raw)).sha256 == hashlib.sha256(raw).hexdigest()


def test_csv_with_bom_crlf_quoted_newline_and_embedded_delimiter(tmp_path: Path) -> None:
    """UTF-8 BOM, CRLF, a quoted CRLF, a quoted comma and doubled quotes all read correctly."""
    data = (
        "\ufeffcontactId,amount,definitionId,source,description\r\n"
        f'{GUID},"1,5",3,"POS, store 7","two\r\nlines ""quoted"""\r\n'
        f"{GUID},2,3,web,plain\r\n"
    )
    assert values(write(tmp_path / "in.csv", data), *HEADER, "sourceRow") == [
        (GUID, "1,5", "3", "POS, store 7", 'two\r\nlines "quoted"', 1),
        (GUID, "2", "3", "web", "plain", 2),
    ]


@pytest.mark.parametrize("sep", [";", "\t", "|", ","])
def test_delimiter_is_sniffed_from_the_header(tmp_path: Path, sep: str) -> None:
    """A ; tab | or , delimited file is read without configuring the delimiter."""
    row = [GUID, "1,5", "3", "POS", "a, b; c"] if sep not in ",;" else ROW
    path = write(tmp_path / "in.csv", text([HEADER, row], sep))
    assert values(path) == [tuple(row)]


def test_configured_delimiter_wins_over_sniffing(tmp_path: Path) -> None:
    """With a delimiter given, the header is split on it even if another character is commoner."""
    path = write(tmp_path / "in.csv", text([[*HEADER, "note,a,b,c,d,e"], [*ROW, "n"]], ";"))
    assert values(path, delimiter=";") == [tuple(ROW)]
    assert "is the delimiter right?" in input_error(path)  # sniffed ',' splits it wrong


@pytest.mark.parametrize("delimiter", ["tab", "\\t"])
def test_tab_can_be_named(tmp_path: Path, delimiter: str) -> None:
    """'tab' and '\\t' in the config both mean a tab."""
    path = write(tmp_path / "in.txt", text([HEADER, ROW], "\t"))
    assert values(path, delimiter=delimiter) == [tuple(ROW)]


@pytest.mark.parametrize("delimiter", ["§", '"', "\n", ";;", ""])
def test_unusable_delimiter_is_a_config_error(tmp_path: Path, delimiter: str) -> None:
    """A delimiter polars can't use (non-ASCII, quote, newline, several chars) is a ConfigError."""
    with pytest.raises(ConfigError, match="delimiter must be"):
        load(write(tmp_path / "in.csv", text([HEADER, ROW])), delimiter=delimiter)


def test_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    """A format name load doesn't know is a ConfigError, not a KeyError."""
    with pytest.raises(ConfigError, match="input format"):
        load(write(tmp_path / "in.csv", text([HEADER, ROW])), fmt="xlsx")


@pytest.mark.parametrize("name", ["in.tsv", "in.tab"])
def test_tsv_is_tab_separated_even_with_commas_in_the_header(tmp_path: Path, name: str) -> None:
    """A .tsv file splits on tabs, whatever else its header holds."""
    header = [*HEADER[:4], "description (a, b, c)"]
    path = write(tmp_path / name, text([header, [*ROW[:4], "x, y"]], "\t"))
    loaded = load(path, columns={"description (a, b, c)": "description"})
    assert loaded.format == "tsv"
    assert loaded.frame.select(HEADER).rows() == [(*ROW[:4], "x, y")]


def test_parquet_typed_columns_become_text(tmp_path: Path) -> None:
    """Parquet ints, floats, dates and datetimes become text validate can read."""
    pl.DataFrame(
        {
            "contactId": [GUID],
            "amount": [1.5],
            "definitionId": [3],
            "timeStamp": [dt.datetime(2026, 1, 2, 3, 4, 5)],
            "source": ["POS"],
            "description": ["receipt"],
            "validFrom": [dt.date(2026, 1, 1)],
            "validTo": [dt.datetime(2026, 2, 1, tzinfo=dt.UTC)],
        }
    ).write_parquet(tmp_path / "in.parquet")
    loaded = load(tmp_path / "in.parquet")
    assert loaded.format == "parquet"
    assert loaded.frame.select(FIELDS).row(0) == (
        GUID,
        "1.5",
        "3",
        "2026-01-02 03:04:05.000000",
        "POS",
        "receipt",
        "2026-01-01",
        "2026-02-01 00:00:00.000000+00:00",
    )


def test_parquet_nested_value_becomes_its_json_text(tmp_path: Path) -> None:
    """A list or struct in Parquet becomes its JSON text, not a crash."""
    pl.DataFrame(
        {**dict(zip(HEADER[:4], [[v] for v in ROW[:4]], strict=True)), "description": [[1, 2]]}
    ).with_columns(validTo=pl.struct(a=pl.lit(1))).write_parquet(tmp_path / "in.parquet")
    assert values(tmp_path / "in.parquet", "description", "validTo") == [("[1,2]", '{"a":1}')]


def test_parquet_with_no_rows_is_an_empty_frame(tmp_path: Path) -> None:
    """A Parquet file with the columns and no rows is a valid empty import."""
    pl.DataFrame(schema=dict.fromkeys(HEADER, pl.String)).write_parquet(tmp_path / "in.parquet")
    assert load(tmp_path / "in.parquet").frame.height == 0


NDJSON_ROW = {"contactId": GUID, "definitionId": 3, "source": "POS", "description": "d"}


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("1.50", "1.5"),
        ("-7", "-7"),
        ("0.1", "0.1"),
        ("1e-7", "0.0000001"),
        ("1.5E3", "1500"),
        ('"12.5"', "12.5"),
        ("null", None),
        ("1.00000000000000001", "1.00000000000000001"),  # not rounded: validation rejects it
    ],
)
@pytest.mark.parametrize("blank_line", [False, True])  # polars reads it, or Python line by line
def test_ndjson_numbers_become_exact_text(
    tmp_path: Path, amount: str, expected: str | None, blank_line: bool
) -> None:
    """NDJSON numbers become plain decimal text of their exact value: no exponent, no rounding."""
    line = json.dumps(NDJSON_ROW)[:-1] + f', "amount": {amount}}}'
    data = f"{line}\n" + ("\n" if blank_line else "") + f"{line}\n"
    rows = values(write(tmp_path / "in.ndjson", data), "amount", "definitionId")
    assert [r[1] for r in rows] == ["3", "3"]
    for got, _ in rows:
        assert got is None if expected is None else Decimal(str(got)) == Decimal(expected)
        assert got is None or set(str(got)) <= set("-.0123456789")


def test_ndjson_other_json_values_become_text(tmp_path: Path) -> None:
    """Booleans, nested values and types mixed across lines become text, never a crash."""
    lines = [
        {**NDJSON_ROW, "amount": 1, "source": True, "description": {"k": [1, "x"]}},
        {**NDJSON_ROW, "amount": 2, "source": "POS", "description": "plain"},
    ]
    path = write(tmp_path / "in.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    rows = values(path, "source", "description")
    assert rows[0][0] == "true" and json.loads(str(rows[0][1])) == {"k": [1, "x"]}
    assert rows[1] == ("POS", "plain")


def test_ndjson_malformed_line_is_a_rejected_row_numbered_by_line(tmp_path: Path) -> None:
    """A line that isn't a JSON object becomes a row with _loadError (showing its text: its
    fields can't); blank lines keep numbering."""
    good = json.dumps({**NDJSON_ROW, "amount": 1})
    data = f"{good}\nnot json\n\n[1, 2]\n   \n{good}\n"
    assert values(write(tmp_path / "in.ndjson", data), "contactId", "sourceRow", "_loadError") == [
        (GUID, 1, None),
        (None, 2, "line is not a JSON object: not json"),
        (None, 4, "line is not a JSON object: [1, 2]"),
        (GUID, 6, None),
    ]


def test_ndjson_input_columns_named_like_ours_are_ignored(tmp_path: Path) -> None:
    """NDJSON keys sourceRow and _loadError don't override load's own."""
    line = json.dumps({**NDJSON_ROW, "amount": 1, "sourceRow": 99, "_loadError": "x"})
    assert values(write(tmp_path / "in.ndjson", line + "\n"), "sourceRow", "_loadError") == [
        (1, None)
    ]


def _as(fmt: str, tmp_path: Path) -> Path:
    """The same two rows as a file of ``fmt``."""
    rows = [dict(zip(HEADER, ROW, strict=True)), dict(zip(HEADER, ROW, strict=True))]
    rows[1]["amount"] = "-2.5"
    path = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif fmt == "ndjson":
        write(path, "".join(json.dumps(r) + "\n" for r in rows))
    else:
        write(
            path, text([HEADER, *[list(r.values()) for r in rows]], "\t" if fmt == "tsv" else ",")
        )
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "parquet"])
def test_gzip_of_each_format_reads_the_same(tmp_path: Path, fmt: str) -> None:
    """A gzipped file (name ending .gz) loads exactly like the plain one, as the same format."""
    plain = _as(fmt, tmp_path)
    packed = write(tmp_path / f"{plain.name}.gz", gzip.compress(plain.read_bytes()))
    expected, got = load(plain), load(packed)
    assert got.format == expected.format == fmt
    assert got.frame.equals(expected.frame)
    assert got.frame["amount"].to_list() == ["10", "-2.5"]


@pytest.mark.parametrize("padding", [b"", b"\0" * 512])
def test_every_member_of_a_gzip_file_is_read(tmp_path: Path, padding: bytes) -> None:
    """``cat a.gz b.gz`` (and pigz, bgzip) make a gzip of several members: all are read;
    zero bytes after a member are padding."""
    plain = _as("csv", tmp_path).read_bytes()
    cut = plain.index(b"\n", plain.index(b"\n") + 1) + 1  # the header and the first row
    packed = gzip.compress(plain[:cut]) + padding + gzip.compress(plain[cut:]) + padding
    loaded = load(write(tmp_path / "two.csv.gz", packed))
    assert loaded.frame.equals(load(write(tmp_path / "plain.csv", plain)).frame)
    assert loaded.frame.height == 2


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_format_is_detected_from_content_without_a_known_extension(
    tmp_path: Path, fmt: str
) -> None:
    """With no telling extension, Parquet magic bytes, a leading '{' or else CSV decide."""
    path = _as(fmt, tmp_path).rename(tmp_path / "export.dat")
    loaded = load(path)
    assert loaded.format == fmt
    assert loaded.frame["amount"].to_list() == ["10", "-2.5"]


@pytest.mark.parametrize(
    "names",
    [
        ["contact_id", "AMOUNT", "Definition Id", "source", "description"],
        ["Contact Id", "amount", "definition-id", "SOURCE", "Description "],
        ["CONTACTID", "Amount", "DEFINITION_ID", "Source", "DESCRIPTION"],
    ],
)
def test_headers_match_in_any_case_and_spacing(tmp_path: Path, names: list[str]) -> None:
    """camelCase, snake_case, spaced, hyphenated or upper-case headers map to the API's fields."""
    assert values(write(tmp_path / "in.csv", text([names, ROW]))) == [tuple(ROW)]


def test_optional_headers_match_too(tmp_path: Path) -> None:
    """timeStamp, validFrom and validTo are found in any spelling as well."""
    names = [*HEADER, "time_stamp", "Valid From", "VALIDTO"]
    path = write(tmp_path / "in.csv", text([names, [*ROW, "t", "f", "u"]]))
    assert values(path, "timeStamp", "validFrom", "validTo") == [("t", "f", "u")]


def test_columns_mapping_renames_other_headers_and_extras_are_ignored(tmp_path: Path) -> None:
    """[columns] maps any header to a field (also in any case); unmapped extras are dropped."""
    names = ["Kundnr", "Poäng", "definitionId", "source", "description", "Butik"]
    path = write(tmp_path / "in.csv", text([names, [*ROW, "Store 7"]]))
    loaded = load(path, columns={"Kundnr": "contactId", "poäng": "amount"})
    assert loaded.frame.columns == [*FIELDS, "sourceRow", "_loadError", "_rowId"]
    assert loaded.frame.select(HEADER).rows() == [tuple(ROW)]


def test_rejects_report_columns_are_ignored_on_reimport(tmp_path: Path) -> None:
    """A rejects report (sourceRow, stage, reason, idempotencyKey) loads as input again."""
    names = [*FIELDS, "sourceRow", "stage", "reason", "idempotencyKey"]
    row = [GUID, "10", "3", "", "POS", "receipt", "", "", "17", "validation", "bad", ""]
    loaded = load(write(tmp_path / "rejects.csv", text([names, row])))
    assert loaded.frame.select(*HEADER, "sourceRow", "_loadError").rows() == [(*ROW, 1, None)]
    assert loaded.frame["_rowId"].to_list() == [None]  # no id column named


@pytest.mark.parametrize("named", ["txn_id", "TXN ID", "txnId"])
def test_the_id_column_is_read_as_row_id_in_any_case_and_spacing(tmp_path: Path, named: str):
    """[input] id_column: its values as _rowId (never a field); named in any case and spacing."""
    path = write(tmp_path / "in.csv", text([[*HEADER, "txn_id"], [*ROW, " T-17 "]]))
    with open_source(path) as source:
        frame = next(read_chunks(source, id_column=named))
    assert frame["_rowId"].to_list() == [" T-17 "]
    assert frame.select(HEADER).rows() == [tuple(ROW)]


def test_a_whole_number_id_read_as_a_float_is_written_as_the_whole_number(tmp_path: Path):
    """A Parquet id column of floats (pandas writes integers with a null so): 100.0 is the
    id 100, as the CSV export of the same rows says."""
    path = tmp_path / "in.parquet"
    rows = pl.DataFrame([dict(zip(HEADER, ROW, strict=True))] * 3)
    rows.with_columns(txn=pl.Series([100.0, 101.5, None])).write_parquet(path)
    with open_source(path) as source:
        frame = next(read_chunks(source, id_column="txn"))
    assert frame["_rowId"].to_list() == ["100", "101.5", None]


def test_an_id_column_the_input_lacks_is_an_input_error(tmp_path: Path):
    """Named but not there: exit 2 before anything is read, naming the setting."""
    path = write(tmp_path / "in.csv", text([HEADER, ROW]))
    with open_source(path) as source, pytest.raises(InputError, match="no id column 'txn_id'"):
        next(read_chunks(source, id_column="txn_id"))


def test_empty_values_are_null_whether_quoted_or_not(tmp_path: Path) -> None:
    """An empty field is null, written as nothing or as "" (both paths agree)."""
    data = text([HEADER, [GUID, "", '""', "POS", ""]])
    assert values(write(tmp_path / "in.csv", data)) == [(GUID, None, None, "POS", None)]


def test_row_with_too_many_fields_gets_a_load_error_and_the_rest_still_loads(
    tmp_path: Path,
) -> None:
    """A row with more fields than the header is kept, marked in _loadError with the values
    the report can't hold in its columns; no crash."""
    data = text([HEADER, ROW, [*ROW, "extra"], ROW[:3]])
    assert values(write(tmp_path / "in.csv", data), "amount", "sourceRow", "_loadError") == [
        ("10", 1, None),
        ("10", 2, "row has 6 fields, the header has 5; the rest: extra"),
        ("10", 3, None),  # too few: the missing fields are null, validation names them
    ]


@pytest.mark.parametrize("fallback", [False, True])
def test_unclosed_quote_is_a_load_error_on_its_row(tmp_path: Path, fallback: bool) -> None:
    """A quote never closed swallows the rest of the file: that row says so, on both paths."""
    first = [*ROW, "extra"] if fallback else ROW
    data = text([HEADER, first, [*ROW[:4], '"never closed'], ROW])
    loaded = load(write(tmp_path / "in.csv", data))
    assert loaded.frame.select("description", "sourceRow").rows() == [
        ("receipt", 1),
        ("never closed\n" + ",".join(ROW) + "\n", 2),
    ]
    assert loaded.frame["_loadError"][1] == (
        "a quote opened in this row is never closed: the rest of the file was read into it"
    )


@pytest.mark.parametrize("fallback", [False, True])
def test_source_row_counts_blank_lines_and_rows_not_lines(tmp_path: Path, fallback: bool) -> None:
    """sourceRow counts data rows (blank lines too, embedded newlines not), on both paths."""
    lines = [
        ",".join(HEADER),
        f'{GUID},1,3,POS,"two\nlines"',
        "",
        f"{GUID},2,3,POS,d",
        " ",
        ",,,,",
        f"{GUID},3,3,POS,d",
    ]
    if fallback:  # a ragged row makes polars refuse the file: Python's csv reads it
        lines.append(f"{GUID},4,3,POS,d,extra")
    rows = values(write(tmp_path / "in.csv", "\n".join(lines) + "\n"), "amount", "sourceRow")
    assert rows[:3] == [("1", 1), ("2", 3), ("3", 6)]
    assert len(rows) == 3 + fallback


@pytest.mark.parametrize("fallback", [False, True])
def test_blank_lines_before_the_header_are_skipped(tmp_path: Path, fallback: bool) -> None:
    """Leading blank lines don't hide the header, on either path."""
    extra = text([[*ROW, "extra"]]) if fallback else ""
    path = write(tmp_path / "in.csv", "\n\n" + text([HEADER, ROW]) + extra)
    assert values(path, "amount", "sourceRow")[0] == ("10", 1)


def test_classic_mac_line_endings(tmp_path: Path) -> None:
    """A file with CR-only line ends (Excel's 'CSV (Macintosh)') reads as rows."""
    path = write(tmp_path / "in.csv", text([HEADER, ROW, ROW], ";", "\r"))
    assert values(path, "amount", "sourceRow") == [("10", 1), ("10", 2)]


@pytest.mark.parametrize(
    "data", [",".join(HEADER), ",".join(HEADER) + "\r\n", ",".join(HEADER) + "\n\n\n"]
)
def test_header_only_file_is_an_empty_frame(tmp_path: Path, data: str) -> None:
    """A header with no rows (a quiet night) loads as 0 rows with every column."""
    loaded = load(write(tmp_path / "in.csv", data))
    assert loaded.frame.height == 0
    assert loaded.frame.columns == [*FIELDS, "sourceRow", "_loadError", "_rowId"]


def test_ten_megabyte_field_loads(tmp_path: Path) -> None:
    """A 10 MB field loads whole (validation rejects it for length, not load)."""
    big = "x" * 10_000_000
    path = write(tmp_path / "in.csv", text([HEADER, [*ROW[:4], big], ROW]))
    rows = values(path, "description", "sourceRow")
    assert [(len(str(d)), n) for d, n in rows] == [(10_000_000, 1), (7, 2)]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b" \r\n\t\n", "is empty"),
        ("bom.csv", b"\xef\xbb\xbf\n", "is empty"),
        ("empty.ndjson", b"\n\n", "is empty"),
        ("empty.csv.gz", gzip.compress(b""), "is empty"),
        ("garbage.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        ("latin1.csv", (",".join(HEADER) + "\nK\xf6p,1,3,s,d\n").encode("latin-1"), "not UTF-8"),
        ("broken.csv.gz", gzip.compress(b"contactId,amount\n")[:-6], "broken gzip"),
        ("trailing.csv.gz", gzip.compress(b"contactId,amount\n1,2\n") + b"junk", "broken gzip"),
        ("in.parquet", b"contactId,amount\n", "not a readable Parquet file"),
        ("in.parquet", b"PAR1" + b"\x00" * 20 + b"PAR1", "not a readable Parquet file"),
    ],
)
def test_unreadable_files_raise_input_error(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    """Empty, blank, binary, non-UTF-8, broken gzip and not-Parquet files: one-line InputError."""
    assert expected in input_error(write(tmp_path / name, data))


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    """A file that doesn't exist is an InputError saying so."""
    assert "does not exist" in input_error(tmp_path / "nope.csv")


def test_directory_raises_input_error(tmp_path: Path) -> None:
    """A directory given as input is an InputError saying so."""
    assert "is a directory" in input_error(tmp_path)


def test_missing_required_column_names_what_was_found(tmp_path: Path) -> None:
    """The message names each missing field, the headers found and where to map them."""
    path = write(tmp_path / "in.csv", text([["contactId", "Poäng", "source"], ["a", "1", "s"]]))
    message = input_error(path)
    assert "no column 'amount', 'definitionId', 'description'" in message
    assert "found: contactId, Poäng, source" in message
    assert "[columns]" in message


def test_wrong_delimiter_hints_at_the_delimiter(tmp_path: Path) -> None:
    """A comma file read with ';' (which its header holds, in a name) finds two columns: the
    message suggests the delimiter."""
    path = write(tmp_path / "in.csv", text([[*HEADER, "note;x"], [*ROW, "n"]]))
    message = input_error(path, delimiter=";")
    assert "found: contactId,amount,definitionId,source,..." in message
    assert "is the delimiter right? set [input] delimiter in the config" in message


def test_a_delimiter_the_header_does_not_hold_gives_way_to_the_one_it_does(
    tmp_path: Path,
) -> None:
    """A rejects report (commas) fed back with a config for ';' files is read with ','."""
    path = write(tmp_path / "in.csv", text([HEADER, ROW]))
    frame = load(path, delimiter=";").frame
    assert frame["amount"].to_list() == ["10"] and frame["source"].to_list() == ["POS"]


def test_odd_header_is_shown_on_one_line(tmp_path: Path) -> None:
    """A header with a line break or a long name still gives a one-line message."""
    path = write(tmp_path / "in.csv", text([['"Contact\nId"', "y" * 200], ["a", "b"]]))
    message = input_error(path)
    assert "Contact\\nId" in message and "y" * 200 not in message


@pytest.mark.parametrize(
    ("names", "columns"),
    [
        (["contactId", "contact_id"], {}),
        (["contactId", "contactId"], {}),
        (["contactId", "Kundnr"], {"Kundnr": "contactId"}),
    ],
)
def test_two_columns_for_one_field_raise_input_error(
    tmp_path: Path, names: list[str], columns: dict[str, str]
) -> None:
    """Two headers (spellings, a repeat, or a mapping) for one field: InputError naming both."""
    path = write(tmp_path / "in.csv", text([[*names, *HEADER[1:]], [GUID, GUID, *ROW[1:]]]))
    message = input_error(path, columns=columns)
    assert f"two columns for contactId: {names[0]!r} and {names[1]!r}" in message


CELL = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=10)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(CELL, min_size=5, max_size=5), max_size=6),
    sep=st.sampled_from([",", ";", "\t", "|"]),
    quote_all=st.booleans(),
    ragged=st.booleans(),
)
def test_any_text_written_by_csv_round_trips(
    tmp_path: Path, rows: list[list[str]], sep: str, quote_all: bool, ragged: bool
) -> None:
    """Rows of any text (quotes, delimiters, CR/LF, Unicode) written by csv load back unchanged.

    Empty strings come back as null; rows with nothing but spaces and line breaks are blank
    lines and are dropped; the others keep their row number, on polars' path and Python's.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(
        out, delimiter=sep, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    )
    writer.writerows([HEADER, *rows, *([["x"] * 6] if ragged else [])])
    frame = load(write(tmp_path / "in.csv", out.getvalue())).frame
    got = {row[-1]: row[:-1] for row in frame.select(*HEADER, "sourceRow").rows()}
    expected = {
        n: tuple(v or None for v in row)
        for n, row in enumerate(rows, 1)
        if any(v.strip(" \t\r\n") for v in row)
    }
    assert {n: v for n, v in got.items() if n <= len(rows)} == expected
    assert frame.height == len(expected) + ragged


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.sampled_from(["\n", "  \n", "\r\n", " \t\r\n"]) | st.lists(CELL, min_size=5, max_size=5),
        max_size=12,
    ),
    chunk=st.integers(min_value=1, max_value=120),
    ndjson=st.booleans(),
)
def test_reading_in_small_pieces_gives_the_same_rows(
    tmp_path: Path, rows: list[list[str] | str], chunk: int, ndjson: bool
) -> None:
    """Streamed in pieces of a few bytes, a file gives the same rows and numbers as whole,
    blank lines (of spaces, CRLF) anywhere included."""
    lines = []
    for r in rows:
        if isinstance(r, str):
            lines.append(r)
        elif ndjson:
            lines.append(json.dumps(dict(zip(HEADER, r, strict=True))) + "\n")
        else:
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator="\n").writerow(r)
            lines.append(out.getvalue())
    if ndjson and all(isinstance(r, str) for r in rows):
        return  # no JSON object at all: refused whole, in pieces or not
    header = "" if ndjson else ",".join(HEADER) + "\n"
    path = write(tmp_path / ("in.ndjson" if ndjson else "in.csv"), header + "".join(lines))
    with open_source(path) as source:
        whole = pl.concat(read_chunks(source))
        pieces = pl.concat(read_chunks(source, chunk_bytes=chunk))
    assert pieces.rows() == whole.rows()


def test_a_piece_that_is_one_blank_line_keeps_the_numbering(tmp_path: Path) -> None:
    """A blank line then a record longer than the first piece: the blank line still counts."""
    long = ",".join([GUID, "1", "1", "s", "x" * 300_000])
    path = write(
        tmp_path / "in.csv", ",".join(HEADER) + "\n\n" + long + "\n" + GUID + ",bad,1,s,d\n"
    )
    with open_source(path) as source:
        for chunk in (8 << 20, 1 << 20, 1000):
            numbers = pl.concat(read_chunks(source, chunk_bytes=chunk))["sourceRow"].to_list()
            assert numbers == [2, 3]


@pytest.mark.parametrize("shift", range(4))
def test_utf8_is_checked_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shift: int
) -> None:
    """A character cut by the end of a read block is whole; a bad byte is found at its
    offset wherever it falls; a file ending inside a character is not UTF-8."""
    monkeypatch.setattr("pipeline.load.source.BLOCK", 16)
    head = ("\n" * shift + ",".join(HEADER) + "\n").encode()  # blank lines move the cuts
    row = (",".join([GUID, "10", "3", "Malmö 🛒", "ö" * 5]) + "\n").encode()
    good = write(tmp_path / "good.csv", head + row * 3)
    assert [r[3] for r in values(good)] == ["Malmö 🛒"] * 3
    bad = write(tmp_path / "bad.csv", head + row * 2 + b"K\xf6p" + row)
    with pytest.raises(InputError, match=f"byte 0xf6 at offset {len(head + row * 2) + 1}"):
        load(bad)
    with pytest.raises(InputError, match="not UTF-8"):
        load(write(tmp_path / "cut.csv", head + row + "ö".encode()[:1]))


def test_an_ndjson_object_with_no_values_is_a_rejected_row_not_a_blank_line(tmp_path: Path) -> None:
    """``{}`` or all-null values: a row that says so (rejected later), never dropped unseen."""
    good = json.dumps(dict(zip(HEADER, ROW, strict=True)))
    path = write(tmp_path / "in.ndjson", f'{good}\n{{}}\n\n{{"contactId": null}}\n{good}\n')
    frame = load(path).frame
    assert frame.select("sourceRow", "_loadError").rows() == [
        (1, None),
        (2, "the line is a JSON object with no values"),
        (4, "the line is a JSON object with no values"),
        (5, None),
    ]


@pytest.mark.parametrize("blank", ["", "\n"])  # without and with a blank line: both readers
def test_an_ndjson_key_given_twice_keeps_its_first_value(tmp_path: Path, blank: str) -> None:
    rest = '"definitionId": "3", "source": "s", "description": "d"'
    line = f'{{"contactId": "{GUID}", "amount": "1", "amount": "2", {rest}}}\n'
    path = write(tmp_path / "in.ndjson", line + blank + line)
    assert load(path).frame["amount"].to_list() == ["1", "1"]


def test_ndjson_lines_that_are_no_text_or_too_deep_are_rejected_rows(tmp_path: Path) -> None:
    """A lone surrogate escape (no character: polars would read a NUL) and an array nested
    100,000 deep are rejected rows, with their reasons; a surrogate pair is its character."""
    rest = '"definitionId": "3", "source": "s", "amount": "1"'
    lines = [
        f'{{"contactId": "{GUID}", {rest}, "description": "x\\ud83d"}}',
        f'{{"contactId": "{GUID}", {rest}, "description": "y\\ud83d\\ude00z"}}',
        "[" * 100_000 + "]" * 100_000,
        f'{{"contactId": "{GUID}", {rest}, "description": "\\ude00 alone"}}',
    ]
    frame = load(write(tmp_path / "in.ndjson", "\n".join(lines) + "\n")).frame
    assert frame["sourceRow"].to_list() == [1, 2, 3, 4]
    assert frame["description"].to_list() == [None, "y\U0001f600z", None, None]
    deep = "line is not a JSON object: " + "[" * 299 + "…"
    assert frame[LOAD_ERROR].to_list() == [UNPAIRED, None, deep, UNPAIRED]


@pytest.mark.parametrize("eol", ["\n", "\r"])
def test_rows_appended_after_the_hash_are_not_read(tmp_path: Path, eol: str) -> None:
    """An export still being written: what was hashed is what is read (the import's identity
    is of those bytes), and the source says the file changed."""
    header = ["contactId", "amount", "definitionId", "source", "description"]
    path = write(tmp_path / "in.csv", text([header, ["a", "1", "1", "POS", "one"]], eol=eol))
    with open_source(path) as source:
        assert not source.changed()
        with path.open("a", newline="") as handle:
            handle.write(f"b,2,1,POS,two{eol}c,3,1,POS,three{eol}")
        frames = list(read_chunks(source, chunk_bytes=16))
        assert source.changed()
    assert [v for f in frames for v in f["contactId"].to_list()] == ["a"]
    assert source.sha256 == hashlib.sha256(path.read_bytes()[: source.size]).hexdigest()


def test_a_stray_quote_that_swallows_rows_makes_its_row_malformed(tmp_path: Path) -> None:
    """The reviewer's lost rows: a quote opened in one row and closed lines later (RFC 4180
    reads them as one value) made one valid row of four. A line inside a value with a
    delimiter per column is a row read into another: the row is malformed, not sent."""
    header = "contactId,amount,definitionId,timeStamp,source,description,validFrom,validTo"
    data = "\n".join([
        header,
        f'{GUID},10,1,,shop,"Bonus 5,,',
        *[f"{GUID},{n},1,,shop,row {n},," for n in (20, 30)],
        f'{GUID},40,1,,shop,row 40 "gold",,',
        f"{GUID},50,1,,shop,ok,,",
    ])  # fmt: skip
    loaded = load(write(tmp_path / "in.csv", data + "\n"))
    frame = loaded.frame
    assert frame["amount"].to_list() == ["10", "50"]
    assert "stray quote" in str(frame[LOAD_ERROR][0]) and frame[LOAD_ERROR][1] is None


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_value_with_line_breaks_and_a_few_delimiters_is_a_value(tmp_path: Path, sep: str) -> None:
    """Text over lines, with commas (or tabs) in it, is not taken for swallowed rows."""
    value = "line 1, a, b\nline 2, c, d\r\nline 3"
    data = text([HEADER, [GUID, "10", "3", "POS", f'"{value}"'], ROW], sep=sep)
    frame = load(write(tmp_path / "in.csv", data), delimiter=sep).frame
    assert frame[LOAD_ERROR].to_list() == [None, None]
    assert frame["description"][0] == value


@pytest.mark.parametrize(
    ("name", "text", "cut", "says"),
    [
        ("day.csv", b"h\n1\n2\n", 4, True),  # "h\n1\n": rows appended after it
        ("day.csv", b"h\n12\n", 3, False),  # "h\n1": the row went on, as "12"
        ("day.csv", b"h\n1\n2\n", 6, False),  # the whole file: it did not grow
        ("day.csv", b'h\n"a\nb"\n', 4, True),  # a line break in a quoted value: its row was
        # malformed to the import that read only "a (an unclosed quote), and said so
        ("day.ndjson", b'{"a":"\\""}\n{"a":1}\n', 11, True),  # an escaped quote: lines are rows
    ],
    ids=["a-row-ends", "mid-row", "whole", "in-quotes", "ndjson"],
)
def test_an_earlier_part_of_a_file_is_known_only_ending_at_a_row_end(
    tmp_path: Path, name: str, text: bytes, cut: int, says: bool
):
    """What an earlier import read is known by its size and SHA-256, ending where a row ends."""
    path = tmp_path / name
    path.write_bytes(text)
    with open_source(path) as source:
        known = (cut, hashlib.sha256(text[:cut]).hexdigest())
        assert source.earlier_part([known]) == (known if says else None)
        assert source.earlier_part([(cut, hashlib.sha256(b"other").hexdigest())]) is None


def test_a_gzip_or_a_file_cut_at_a_line_break_after_the_cut(tmp_path: Path):
    """An earlier file without a last line break grew by a line break and rows: it starts
    it. A gzip never does (its bytes as stored are not the text read)."""
    plain = tmp_path / "day.csv"
    plain.write_bytes(b"h\n1\r\n2\r\n")
    with open_source(plain) as source:
        known = [(n, hashlib.sha256(b"h\n1\r\n2\r\n"[:n]).hexdigest()) for n in (2, 3, 4, 6)]
        assert source.earlier_part(known) == known[-1]  # the largest: "h\n1\r\n2", then "\r"
    packed = tmp_path / "day.csv.gz"
    packed.write_bytes(gzip.compress(b"h\n1\n2\n"))
    stored = packed.read_bytes()
    with open_source(packed) as source:
        assert source.earlier_part([(10, hashlib.sha256(stored[:10]).hexdigest())]) is None
