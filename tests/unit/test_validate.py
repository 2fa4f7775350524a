"""Validate: every field rule, every reason a row fails, duplicates, time zones, exact amounts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import FIELDS, IDENTITY, JSON, RAW, ROW_ID
from pipeline.validate import Rules, Seen, Validated, validate
from pipeline.validate.identity import identity, with_cr
from pipeline.validate.parse import DATE_FIELDS, prepare
from pipeline.validate.schema import passes, passing
from tests.unit.test_validate_parse import frames

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
GOOD: dict[str, str | None] = {
    "contactId": GUID,
    "amount": "10",
    "definitionId": "3",
    "timeStamp": None,
    "source": "POS",
    "description": "receipt 1",
    "validFrom": None,
    "validTo": None,
}
DATE = "must be an ISO 8601 date or date-time"


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    """A frame shaped like load's output: GOOD values overridden by each row's."""
    records = [{**GOOD, "_loadError": None, "_rowId": None, **row} for row in rows]
    return pl.DataFrame(
        {name: [r[name] for r in records] for name in (*FIELDS, "_loadError", "_rowId")},
        schema=dict.fromkeys((*FIELDS, "_loadError", "_rowId"), pl.String),
    ).with_columns(sourceRow=pl.int_range(1, len(records) + 1, dtype=pl.Int64))


def check(*rows: dict[str, Any], **rules: Any) -> Validated:
    return validate(frame(*rows), Rules(**rules))


def sent(row: dict[str, Any], field: str, **rules: Any) -> object:
    """The value of ``field`` a valid row is sent with (fails if the row is invalid)."""
    result = check(row, **rules)
    assert result.invalid.height == 0, result.invalid["reason"].to_list()
    return result.valid[field][0]


def reason(row: dict[str, Any], **rules: Any) -> str:
    """The reason a single invalid row is rejected with (fails if it is valid)."""
    result = check(row, **rules)
    assert result.valid.height == 0
    return str(result.invalid["reason"][0])


def test_a_good_row_is_valid_and_shaped_for_sending() -> None:
    """A valid row comes out with sourceRow and the eight fields, definitionId as Int64."""
    result = check({})
    assert result.invalid.height == 0
    assert result.valid.columns == ["sourceRow", *FIELDS, *RAW.values(), IDENTITY, JSON]
    assert result.valid.schema["definitionId"] == pl.Int64
    assert result.valid.row(0)[:9] == (1, GUID, "10", 3, None, "POS", "receipt 1", None, None)


def test_empty_frame_gives_empty_results_with_their_columns() -> None:
    """A header-only import validates to two empty frames with the usual columns."""
    result = validate(frame().clear(), Rules())
    assert (result.valid.height, result.invalid.height) == (0, 0)
    assert result.valid.columns == ["sourceRow", *FIELDS, *RAW.values(), IDENTITY, JSON]
    assert result.invalid.columns == ["sourceRow", *FIELDS, ROW_ID, "reason"]


@pytest.mark.parametrize(
    "given",
    [GUID, GUID.upper(), "{" + GUID + "}", "{" + GUID.upper() + "}", f"  {GUID} "],
)
def test_contact_id_guid_is_normalised(given: str) -> None:
    """A GUID in any case, with braces or spaces around it, is sent lower-case and bare."""
    assert sent({"contactId": given}, "contactId") == GUID


@pytest.mark.parametrize(
    "given",
    ["42", "not-a-guid", GUID.replace("-", ""), "{" + GUID, GUID + "0", GUID.replace("3", "g")],
)
def test_contact_id_not_a_guid_is_rejected(given: str) -> None:
    """Anything but a hyphenated GUID (in matched braces or none) is rejected."""
    assert reason({"contactId": given}).startswith("contactId must be a GUID")


@pytest.mark.parametrize("field", ["contactId", "amount", "definitionId", "source", "description"])
@pytest.mark.parametrize("given", [None, "", "   "])
def test_required_fields_missing_or_blank_are_rejected(field: str, given: str | None) -> None:
    """Each required field, missing or blank, gives exactly '<field> is required'."""
    assert reason({field: given}) == f"{field} is required"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("10", "10"),
        ("+007.50", "7.5"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("+0", "0"),
        ("-3.25", "-3.25"),
        (".5", "0.5"),
        ("-.5", "-0.5"),
        ("5.", "5"),
        (" 12 ", "12"),
        ("0.000001", "0.000001"),
        ("0.1", "0.1"),
        ("1234567890.12345", "1234567890.12345"),
        ("123456789012345", "123456789012345"),
        ("0.000000000000001", "0.000000000000001"),
    ],
)
def test_amount_is_canonicalised_exactly(given: str, canonical: str) -> None:
    """A plain decimal is sent as its canonical text: no sign '+', no padding zeros, no -0."""
    assert sent({"amount": given}, "amount") == canonical


@pytest.mark.parametrize(
    "given",
    ["1e5", "1E5", "1,5", "1 000", "NaN", "inf", "+", "-", ".", "--1", "1.2.3", "١٢", "0x10"],
)
def test_amount_not_a_plain_decimal_is_rejected(given: str) -> None:
    """Exponents, commas, spaces, words and non-ASCII digits are not amounts."""
    assert reason({"amount": given}).startswith("amount must be a number")


@pytest.mark.parametrize(
    "given",
    ["1234567890.123456", "0.30000000000000004", "100000000000000.1", "1" * 16, "1" + "0" * 15],
)
def test_amount_with_more_than_15_significant_digits_is_rejected(given: str) -> None:
    """An amount a double can't hold exactly, or of 1e15 and more, is rejected, not rounded."""
    assert reason({"amount": given}) == "amount has more than 15 significant digits"


def _renderings(draw: st.DrawFn, value: Decimal) -> str:
    text = format(value, "f")
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    if not sign and draw(st.booleans()):
        sign = "+"
    digits = "0" * draw(st.integers(0, 3)) + digits
    if draw(st.booleans()):
        digits += ("" if "." in digits else ".") + "0" * draw(st.integers(0, 3))
    if digits.startswith("0.") and len(digits) > 2 and draw(st.booleans()):
        digits = digits[1:]
    return sign + digits


@st.composite
def amounts(draw: st.DrawFn) -> tuple[Decimal, str]:
    """A Decimal of at most 15 significant digits, under 1e15, and one way a file may write it."""
    value = Decimal(draw(st.integers(-(10**15) + 1, 10**15 - 1))).scaleb(draw(st.integers(-20, 0)))
    return value, _renderings(draw, value)


@settings(max_examples=40, deadline=None)
@given(st.lists(amounts(), min_size=1, max_size=20))
def test_amount_canonical_text_is_the_exact_decimal(cases: list[tuple[Decimal, str]]) -> None:
    """Any rendering of a <=15-digit Decimal becomes its exact canonical text (never a float)."""
    result = check(*({"amount": text} for _, text in cases), allow_duplicates=True)
    assert result.invalid.height == 0, result.invalid.rows()
    for (value, _), canonical in zip(cases, result.valid["amount"], strict=True):
        assert Decimal(canonical) == value
        expected = "0" if value == 0 else format(value.normalize(), "f")
        assert canonical == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("3", 3), ("+3", 3), ("007", 7), ("3.0", 3), (" 3 ", 3)]
)
def test_definition_id_positive_whole_number_is_sent_as_int(given: str, expected: int) -> None:
    """A positive whole number, however written, is sent as an Int64."""
    assert sent({"definitionId": given}, "definitionId") == expected


@pytest.mark.parametrize("given", ["0", "-1", "1.5", "abc", "1e3", "٣", "9" * 19])
def test_definition_id_not_a_positive_whole_number_is_rejected(given: str) -> None:
    """Zero, negatives, fractions, words, non-ASCII digits and overflow are rejected."""
    assert reason({"definitionId": given}) == "definitionId must be a positive whole number"


def test_definition_id_known_to_the_tenant_is_valid() -> None:
    """With the tenant's definitions given, a known id passes."""
    assert sent({"definitionId": "3"}, "definitionId", definition_ids=frozenset({1, 3})) == 3


def test_definition_id_unknown_to_the_tenant_is_rejected_naming_the_known_ones() -> None:
    """An id the tenant has no definition for is rejected; the reason lists the known ids."""
    got = reason({"definitionId": "4"}, definition_ids=frozenset({3, 1}))
    assert got == "definitionId is not a point definition of this Engage tenant (known: 1, 3)"


def test_definition_id_malformed_is_not_also_called_unknown() -> None:
    """A malformed id gets one reason, not also 'not a point definition'."""
    got = reason({"definitionId": "abc"}, definition_ids=frozenset({3}))
    assert got == "definitionId must be a positive whole number"


@pytest.mark.parametrize("field", ["source", "description"])
@pytest.mark.parametrize("given", ["a\tb", "line 1\r\nline 2", "line 1\nline 2", "Köp på nätet ✓"])
def test_text_with_tab_cr_lf_and_unicode_is_valid_and_unchanged(field: str, given: str) -> None:
    """Tab, CR, LF and any printable Unicode are allowed and sent as they are."""
    assert sent({field: given}, field) == given


@pytest.mark.parametrize("field", ["source", "description"])
@pytest.mark.parametrize("given", ["a\x00b", "a\x01b", "a\x1bb", "a\x7fb", "a\x85b", "a\x0bb"])
def test_text_with_other_control_characters_is_rejected(field: str, given: str) -> None:
    """C0 controls other than tab/CR/LF, DEL and C1 controls are rejected."""
    assert reason({field: given}) == f"{field} holds a control character"


@pytest.mark.parametrize(("field", "limit"), [("source", 255), ("description", 1000)])
def test_text_length_limits_default(field: str, limit: int) -> None:
    """Exactly the default limit passes; one character more is rejected."""
    assert sent({field: "é" * limit}, field) == "é" * limit
    assert reason({field: "é" * (limit + 1)}) == f"{field} is longer than {limit} characters"


def test_text_length_limits_come_from_the_rules() -> None:
    """Rules' max lengths are the limits used."""
    rules = {"max_source_length": 3, "max_description_length": 5}
    assert reason({"source": "abcd", "description": "abcdef"}, **rules) == (
        "source is longer than 3 characters; description is longer than 5 characters"
    )
    assert check({"source": "abc", "description": "abcde"}, **rules).valid.height == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-15T10:00:00", "2026-01-15T10:00:00+01:00"),  # winter: CET
        ("2026-07-15T10:00:00", "2026-07-15T10:00:00+02:00"),  # summer: CEST
        ("2026-01-15 10:00", "2026-01-15T10:00:00+01:00"),
        ("2026-01-15", "2026-01-15T00:00:00+01:00"),
        ("2026-01-15T10:00:00.5", "2026-01-15T10:00:00.500+01:00"),
        ("2026-01-15T10:00:00.123456", "2026-01-15T10:00:00.123456+01:00"),
        ("2026-10-25T02:30:00", "2026-10-25T02:30:00+02:00"),  # ambiguous: the earliest
        ("2026-01-15T10:00:00Z", "2026-01-15T11:00:00+01:00"),
        ("2026-01-15T10:00:00z", "2026-01-15T11:00:00+01:00"),
        ("2026-01-15T10:00:00+02", "2026-01-15T09:00:00+01:00"),
        ("2026-01-15T10:00:00+0200", "2026-01-15T09:00:00+01:00"),
        ("2026-01-15T10:00:00+02:00", "2026-01-15T09:00:00+01:00"),
        ("2026-01-15 10:00+02:00", "2026-01-15T09:00:00+01:00"),
        ("2026-07-15T10:00:00-05:30", "2026-07-15T17:30:00+02:00"),
        ("2026-01-15 03:04:05.000000", "2026-01-15T03:04:05+01:00"),  # Parquet datetime text
    ],
)
def test_dates_are_read_in_the_zone_and_sent_with_an_offset(given: str, expected: str) -> None:
    """Naive values are read in Rules.timezone, offsets converted to it; output has the offset."""
    assert sent({"timeStamp": given}, "timeStamp", timezone="Europe/Stockholm") == expected


def test_valid_from_and_valid_to_are_read_like_time_stamp() -> None:
    """validFrom and validTo are parsed and converted the same way as timeStamp."""
    row = {"validFrom": "2026-01-15T10:00:00Z", "validTo": "2026-07-15 10:00"}
    result = check(row, timezone="Europe/Stockholm")
    assert result.valid.select("validFrom", "validTo").row(0) == (
        "2026-01-15T11:00:00+01:00",
        "2026-07-15T10:00:00+02:00",
    )


def test_dates_default_to_utc() -> None:
    """Without a configured zone, naive values are UTC and sent as +00:00."""
    assert sent({"timeStamp": "2026-07-15T10:00"}, "timeStamp") == "2026-07-15T10:00:00+00:00"


def test_date_in_the_dst_gap_is_rejected() -> None:
    """02:30 on the spring-forward night does not exist in Stockholm: rejected, not shifted."""
    got = reason({"timeStamp": "2026-03-29T02:30:00"}, timezone="Europe/Stockholm")
    assert got.startswith(f"timeStamp {DATE}")
    assert "existing in the configured time zone" in got


@pytest.mark.parametrize(
    ("given", "zone", "expected"),
    [
        ("1960-05-01T10:00:00", "Africa/Monrovia", "1960-05-01T10:44:30+00:00"),  # -00:44:30
        ("1970-06-10T12:00:00-00:45", "Africa/Monrovia", "1970-06-10T12:45:00+00:00"),
        ("1980-01-01T12:00:00", "Africa/Monrovia", "1980-01-01T12:00:00+00:00"),  # whole again
    ],
)
def test_a_zone_offset_of_seconds_is_sent_in_utc(given: str, zone: str, expected: str) -> None:
    """Local mean time (an offset with seconds) can't be written as +-HH:MM without moving
    the instant: such dates go in UTC, the same instant."""
    assert sent({"timeStamp": given}, "timeStamp", timezone=zone) == expected


@pytest.mark.parametrize(
    "given", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "0001-01-01"]
)
def test_dates_beyond_the_years_1_to_9999_are_rejected(given: str) -> None:
    """At the calendar's ends a date in another offset falls outside what can be written
    (+10000-01-01, 0000-12-31): rejected, not sent malformed."""
    got = reason({"validTo": given}, timezone="Europe/Stockholm")
    assert got == "validTo must lie between the years 1 and 9999"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("9999-12-31", "9999-12-31T00:00:00+01:00"),  # "never expires", in legacy exports
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
    ],
)
def test_dates_at_the_calendar_s_ends_that_can_be_written_are_sent(given, expected) -> None:
    zone = "UTC" if given.endswith("Z") else "Europe/Stockholm"
    assert sent({"validTo": given}, "validTo", timezone=zone) == expected


def test_dst_gap_is_fine_with_an_explicit_offset() -> None:
    """The same wall time with an offset is an instant, so it is valid."""
    got = sent({"timeStamp": "2026-03-29T02:30:00+01:00"}, "timeStamp", timezone="Europe/Stockholm")
    assert got == "2026-03-29T03:30:00+02:00"


@pytest.mark.parametrize(
    "given",
    [
        "15/01/2026",
        "2026-02-30",
        "2026-1-15",
        "20260115",
        "2026-01-15T10",
        "2026-01-15T1:00",
        "2026-01-15T25:00",
        "2026-01-15T10:00:60",
        "2026-01-15T10:00:00+2",
        "2026-01-15T10:00:00+25:00",
        "2026-01-15T10:00:00+02:00:00",
        "2026-01-15Z",
        "yesterday",
    ],
)
def test_malformed_dates_are_rejected(given: str) -> None:
    """Anything but an ISO 8601 date or date-time (with two-digit parts) is rejected."""
    assert reason({"validFrom": given}).startswith(f"validFrom {DATE}")


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "ok"),
    [
        ("2026-01-01", "2026-01-02", True),
        ("2026-01-01", "2026-01-01", False),
        ("2026-01-02", "2026-01-01", False),
        ("2026-01-01T10:00:00+01:00", "2026-01-01T09:30:00Z", True),  # 10:30 local
        ("2026-01-01T10:00:00+01:00", "2026-01-01T09:00:00Z", False),  # the same instant
    ],
)
def test_valid_to_must_be_after_valid_from(valid_from: str, valid_to: str, ok: bool) -> None:
    """validTo must be a later instant than validFrom, offsets taken into account."""
    result = check({"validFrom": valid_from, "validTo": valid_to})
    assert result.valid.height == ok
    if not ok:
        assert result.invalid["reason"].to_list() == ["validTo must be after validFrom"]


def test_every_reason_is_given_in_field_order() -> None:
    """A row wrong everywhere carries every reason, '; '-joined, in the API's field order."""
    row = {
        "contactId": "x",
        "amount": "1,5",
        "definitionId": "0",
        "timeStamp": "soon",
        "source": "",
        "description": "a\x01",
        "validFrom": "2026-01-02",
        "validTo": "2026-01-01",
    }
    assert reason(row).split("; ") == [
        "contactId must be a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "amount must be a number like 12 or -3.5 (a '.' for decimals)",
        "definitionId must be a positive whole number",
        "timeStamp must be an ISO 8601 date or date-time, e.g. 2026-11-26 or "
        "2026-11-26T10:00:00+01:00, existing in the configured time zone",
        "source is required",
        "description holds a control character",
        "validTo must be after validFrom",
    ]


def test_two_reasons_of_one_field_come_in_check_order() -> None:
    """A text field too long and with a control character gets both reasons, length first."""
    assert reason({"source": "\x01" * 300}) == (
        "source is longer than 255 characters; source holds a control character"
    )


def test_load_error_is_the_reason() -> None:
    """A row load found malformed is rejected with load's reason."""
    assert reason({"_loadError": "row has 6 fields, the header has 5"}) == (
        "row has 6 fields, the header has 5"
    )


def test_load_error_comes_before_the_field_reasons() -> None:
    """A malformed row's load error is its first reason, then what its fields break."""
    got = reason(
        {"_loadError": "row has 6 fields, the header has 5", "amount": "x", "source": None}
    )
    assert got.split("; ") == [
        "row has 6 fields, the header has 5",
        "amount must be a number like 12 or -3.5 (a '.' for decimals)",
        "source is required",
    ]


def test_invalid_rows_keep_their_source_rows_in_input_order() -> None:
    """Invalid rows come out in input order with their own sourceRow; valid ones likewise."""
    result = check({"amount": "x"}, {}, {"contactId": "y"}, {"amount": "2"})
    assert result.invalid["sourceRow"].to_list() == [1, 3]
    assert result.valid["sourceRow"].to_list() == [2, 4]


def test_exact_duplicate_is_rejected_naming_the_first_row() -> None:
    """The second and third copies of a row are rejected as duplicates of the first."""
    result = check({}, {"amount": "5"}, {}, {})
    assert result.valid["sourceRow"].to_list() == [1, 2]
    assert result.invalid.select("sourceRow", "reason").rows() == [
        (3, "duplicate of row 1 (set allow_duplicates to send both)"),
        (4, "duplicate of row 1 (set allow_duplicates to send both)"),
    ]


def test_duplicates_are_found_after_normalising() -> None:
    """Upper-case/braced GUID, '+10.0' vs '10', '3.0' vs '3' and Z vs +01:00 are the same row."""
    first = {"timeStamp": "2026-01-15T11:00:00+01:00"}
    same = {
        "contactId": "{" + GUID.upper() + "}",
        "amount": "+10.0",
        "definitionId": "3.0",
        "timeStamp": "2026-01-15T10:00:00Z",
    }
    result = check(first, same)
    assert result.invalid.select("sourceRow", "reason").rows() == [
        (2, "duplicate of row 1 (set allow_duplicates to send both)")
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "11"},
        {"source": "POS "},
        {"description": "receipt 2"},
        {"timeStamp": "2026-01-15"},
        {"validTo": "2027-01-01"},
    ],
)
def test_rows_differing_in_any_field_are_not_duplicates(change: dict[str, str]) -> None:
    """One differing field (even a trailing space in a text) makes a different row."""
    assert check({}, change).valid.height == 2


def test_an_invalid_row_is_nobodys_original() -> None:
    """Duplicates are counted among valid rows: the first valid copy is the original."""
    result = check({"_loadError": "row has 6 fields, the header has 5"}, {}, {})
    assert result.invalid.select("sourceRow", "reason").rows() == [
        (1, "row has 6 fields, the header has 5"),
        (3, "duplicate of row 2 (set allow_duplicates to send both)"),
    ]


def test_allow_duplicates_sends_every_copy() -> None:
    """With allow_duplicates, exact duplicates are all valid."""
    result = check({}, {}, allow_duplicates=True)
    assert (result.valid.height, result.invalid.height) == (2, 0)


def test_duplicates_are_found_across_pieces_with_one_index():
    """A row equal to one of an earlier piece is its duplicate; the index holds hashes only."""
    rows = frame(*[{"description": f"receipt {i % 7}"} for i in range(1, 30)])
    whole = validate(rows, Rules())
    seen = Seen()
    parts = [validate(rows[i : i + 4], Rules(), seen) for i in range(0, rows.height, 4)]
    assert pl.concat([p.invalid for p in parts]).rows() == whole.invalid.rows()
    assert pl.concat([p.valid for p in parts]).rows() == whole.valid.rows()
    assert sum(run.height for run in seen.runs) == 7
    assert {tuple(run.columns) for run in seen.runs} == {("_h", "first")}


TEXTS = ["POS", "Köp ✓", 'say "hi"', "", "   ", None, "a\x01b", "a\x85b", "x" * 300]


@st.composite
def pieces(draw: st.DrawFn) -> tuple[pl.DataFrame, Rules]:
    """Pieces whose columns are each all valid, or mixed: the aggregates then show, or don't."""
    parsed, zone = draw(frames())
    columns: dict[str, list[str | None]] = {}
    for name in (*FIELDS, "_loadError"):
        good = [GOOD.get(name)] * parsed.height
        mixed = parsed[name].to_list() if name in parsed.columns else None
        if name in ("source", "description"):
            mixed = [draw(st.sampled_from(TEXTS)) for _ in range(parsed.height)]
        elif name == "_loadError":
            mixed = [draw(st.sampled_from([None, None, "a stray quote"])) for _ in good]
        columns[name] = good if mixed is None or draw(st.booleans()) else mixed
    piece = pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))
    known = draw(st.sampled_from([None, frozenset({1, 2, 3}), frozenset()]))
    return prepare(piece, zone), Rules(timezone=zone, definition_ids=known)


@settings(max_examples=60, deadline=None)
@given(pieces())
def test_the_aggregates_skip_only_checks_every_row_passes(case: tuple[pl.DataFrame, Rules]) -> None:
    """``passing`` (row by row only where an aggregate can't vouch for the whole piece) says
    of every row what every check run row by row says."""
    prepared, rules = case
    assert (
        passing(prepared, rules).to_list() == prepared.select(passes(rules)).to_series().to_list()
    )


def identities(*rows: dict[str, Any], **rules: Any) -> list[int]:
    return check(*rows, allow_duplicates=True, **rules).valid[IDENTITY].to_list()


def test_a_rows_identity_is_its_normalised_content():
    """The same transaction however written (GUID case and braces, +007.50 and 7.5, an offset
    or Z for one instant) is one identity; any field changed is another."""
    first = {"amount": "7.5", "timeStamp": "2026-01-15T10:15:00+01:00"}
    same = {
        "contactId": "{" + GUID.upper() + "}",
        "amount": "+007.50",
        "definitionId": "3.0",
        "timeStamp": "2026-01-15T09:15:00Z",
    }
    changed = [
        {**first, "validTo": "2027-01-02"},
        {**first, "description": "receipt 2"},
        {**first, "timeStamp": "2026-01-15T10:15:01+01:00"},
        {**first, "amount": "7.6"},
    ]
    ids = identities(first, same, *changed)
    assert ids[0] == ids[1]
    assert len(set(ids)) == 1 + len(changed)


def test_an_identity_is_the_same_on_every_machine_and_version():
    """A stable hash (xxHash64 of the normalised fields), not polars' own: a row imported
    before an upgrade is known after it. The value is pinned: changing how identities are
    made would send every row of a re-exported file again."""
    assert identities({"timeStamp": "2026-01-15T10:15:00+01:00"}) == [IDENTITY_PINNED]


# xxHash64 of the GUID, "10", "3", "POS", "receipt 1", 2026-01-15T09:15Z in epoch µs, "", ""
# joined by \x1f
IDENTITY_PINNED = 14969218811761357171


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Stockholm"])
def test_with_an_id_column_the_identity_is_the_id_alone(timezone: str):
    """The source's transaction id (trimmed) is the identity: the same id with other content
    is the same row, other ids with the same content are not."""
    rows = [{"_rowId": "T-1"}, {"_rowId": " T-1 ", "amount": "99"}, {"_rowId": "T-2"}]
    ids = identities(*rows, id_column="txn", timezone=timezone)
    assert ids[0] == ids[1] != ids[2]
    assert identities({"_rowId": "T-1"}, id_column="txn") != identities({})


def test_with_an_id_column_a_row_without_an_id_is_rejected():
    """No id, no identity: the row is rejected (the column named), not sent under its content."""
    assert "txn (the id column) is empty" in reason({"_rowId": "  "}, id_column="txn")


def test_with_an_id_column_duplicates_are_rows_of_the_same_id():
    """Two rows with one id are one transaction: the second is a duplicate of the first."""
    result = check({"_rowId": "T-1"}, {"_rowId": "T-1", "amount": "5"}, id_column="txn")
    assert result.invalid.select("sourceRow", "reason").rows() == [
        (2, "duplicate of row 1 (set allow_duplicates to send both)")
    ]


def test_line_breaks_in_a_text_do_not_change_the_identity():
    """An export with CRLF line ends holds the same rows: a description over two lines is
    the same row with CRLF, CR or LF between them."""
    texts = ["two\r\nlines", "two\nlines", "two\rlines"]
    assert len(set(identities(*[{"description": text} for text in texts]))) == 1


def test_texts_without_a_carriage_return_skip_the_line_break_pass():
    """The identity of rows whose texts hold no CR is the same with or without making their
    line breaks LF (the pass is skipped for them), and a CRLF text is its LF twin."""
    frame = pl.DataFrame({
        "_contactId": ["a", "a", "a"], "_amount": ["1", "1", "1"], "_definitionId": [1, 1, 1],
        "source": ["s", "s", "s"], "description": ["one\ntwo", "one\r\ntwo", "x"],
        **{f"_{d}": pl.Series([None] * 3, dtype=pl.Datetime("us", "UTC")) for d in DATE_FIELDS},
    })  # fmt: skip
    assert with_cr(frame) == ["description"]
    full = frame.select(identity(""))[IDENTITY]
    assert full[0] == full[1] != full[2]
    lf_only = frame.slice(2).select(identity("", with_cr(frame.slice(2))))[IDENTITY]
    assert lf_only[0] == full[2]
