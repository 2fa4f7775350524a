"""Parse: the fast path reads the common shapes exactly as the full parser does.

The full parser defines every helper column; the fast path must give the same value for
each row it reads (and leave the rest to the full parser), in any time zone."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.validate.parse import PARSED, _full, prepare

ZONES = ["UTC", "Europe/Stockholm", "America/Santiago", "Asia/Kolkata", "Africa/Monrovia"]
HEX = "0123456789abcdef"


def _guid(draw: st.DrawFn) -> str:
    parts = [
        "".join(draw(st.lists(st.sampled_from(HEX), min_size=n, max_size=n)))
        for n in (8, 4, 4, 4, 12)
    ]
    text = "-".join(parts)
    shape = draw(st.sampled_from(["plain", "upper", "braced", "padded", "short"]))
    return {
        "plain": text,
        "upper": text.upper(),
        "braced": "{" + text + "}",
        "padded": f" {text} ",
        "short": text[:-1],
    }[shape]


def _amount(draw: st.DrawFn) -> str:
    whole = draw(st.integers(0, 10**9))
    frac = draw(st.sampled_from(["", ".", ".0", ".00", ".5", ".50", ".25", ".125", ".1000"]))
    sign = draw(st.sampled_from(["", "-", "+"]))
    lead = draw(st.sampled_from(["", "0", "00"]))
    return draw(
        st.sampled_from(
            [f"{sign}{lead}{whole}{frac}", f"{sign}{frac or '.5'}", "-0", "-0.00", "0", "ten"]
        )
    )


def _definition(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 10**19))
    return draw(st.sampled_from([str(n), f"0{n}", f"+{n}", f"{n}.0", f"{n}.5", f" {n}", "x"]))


def _date(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from([datetime(2020, 1, 1), datetime(1970, 1, 1)]))  # then: odd offsets
    at = base + timedelta(seconds=draw(st.integers(0, 10 * 365 * 86400)))
    micro = draw(st.sampled_from([0, 500000, 123456]))
    at = at.replace(microsecond=micro)
    offset = draw(
        st.sampled_from(
            [
                *["", "Z", "z", "+01:00", "+02:00", "-05:30", "+05:30", "-03:00", "-04:00"],
                *["+00:00", "-00:00", "-00:45", "+0200", "+02", "+14:00", "+19:00", "+25:00"],
            ]
        )
    )
    day, clock = at.strftime("%Y-%m-%d"), at.strftime("%H:%M:%S")
    fraction = f".{micro:06d}" if micro else ""
    return draw(
        st.sampled_from(
            [
                f"{day}T{clock}{offset}",
                f"{day}T{clock}{fraction}{offset}",
                f"{day} {clock[:5]}{offset}",
                day,
                f"{day[:8]}30",  # the 30th: not every month has one
                f"{day}T24:00:00{offset}",
                f"{day}T{clock[:6]}60{offset}",  # a leap second: polars alone would roll it over
                f"{day}T{clock}+01:00",
            ]
        )
    )


@st.composite
def frames(draw: st.DrawFn) -> tuple[pl.DataFrame, str]:
    makers = {"contactId": _guid, "amount": _amount, "definitionId": _definition}
    makers.update(dict.fromkeys(("timeStamp", "validFrom", "validTo"), _date))
    rows = draw(st.integers(1, 40))
    columns = {}
    for name in PARSED:
        pool = [makers[name](draw) for _ in range(draw(st.integers(1, 6)))] + [None]
        repeated = draw(st.booleans())  # few distinct values, or each its own
        columns[name] = [
            draw(st.sampled_from(pool)) if repeated else makers[name](draw) for _ in range(rows)
        ]
    frame = pl.DataFrame(columns, schema=dict.fromkeys(PARSED, pl.String))
    return frame, draw(st.sampled_from(ZONES))


@settings(max_examples=50, deadline=None)
@given(frames())
def test_fast_path_equals_the_full_parser(case: tuple[pl.DataFrame, str]) -> None:
    """Every helper column, row by row, is what the full parser makes of the same text."""
    frame, zone = case
    fast = prepare(frame, zone)
    full = _full(frame, zone)
    assert_frame_equal(fast.select(full.columns), full)
    for (
        name
    ) in PARSED:  # one field at a time: no other field's odd shape sends the row to the full parser
        alone = frame.select(
            pl.col(c) if c == name else pl.lit(None, pl.String).alias(c) for c in PARSED
        )
        assert_frame_equal(prepare(alone, zone).select(full.columns), _full(alone, zone))


def test_common_shapes_need_no_full_parse() -> None:
    """A file of the usual shapes is read by the fast path alone (this is where speed is)."""
    frame = pl.DataFrame(
        {
            "contactId": ["3f2504e0-4f89-11d3-9a0c-0305e82c3301"] * 3,
            "amount": ["10", "12.50", "-3"],
            "definitionId": ["1", "2", "3"],
            "timeStamp": ["2026-01-01T10:00:00+01:00", "2026-01-01T10:00:01Z", None],
            "validFrom": [None, None, None],
            "validTo": ["2026-12-31", "2027-12-31", "2026-12-31"],
        },
        schema=dict.fromkeys(PARSED, pl.String),
    )
    unread = pl.any_horizontal(pl.col(f).is_not_null() & pl.col(f"_{f}").is_null() for f in PARSED)
    assert prepare(frame, "Europe/Stockholm").filter(unread).is_empty()


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("2026-01-10T10:00:00+01:00", "Europe/Stockholm"),  # the zone's offset: sent as written
        ("2026-07-10T10:00:00+01:00", "Europe/Stockholm"),  # summer: +02:00 is sent
        ("2026-07-10T10:00:00Z", "UTC"),  # Z is sent as +00:00
        ("2026-07-10T10:00:00-00:00", "UTC"),
        ("1970-06-10T12:00:00-00:45", "Africa/Monrovia"),  # then -00:44:30, not -00:45
    ],
)
def test_a_date_time_is_sent_as_written_only_if_that_is_how_it_is_formatted(
    text: str, zone: str
) -> None:
    frame = pl.DataFrame({name: [text if name == "timeStamp" else None] for name in PARSED})
    frame = frame.cast(pl.String)
    assert_frame_equal(prepare(frame, zone).select(_full(frame, zone).columns), _full(frame, zone))
