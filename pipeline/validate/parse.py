"""Parse: each text field read once into the helper columns the checks and the batches use.

``_<field>`` holds the normalised value (a lower-case GUID, the amount as canonical decimal
text, the definition id as an integer, dates as instants in the configured zone) and
``_<date>_out`` a date as it is sent, with the zone's offset (in UTC before the zone's
offsets were whole minutes); null where the text is not one (so a non-null ``_contactId``
is a GUID, a non-null ``_amount`` a plain decimal). Most files hold one shape per
column (a plain GUID, ``12.5``, ``2026-11-26T10:00:00+01:00``), so those shapes are read by
a fast path; the rows it can't read go through the full parser, which accepts every
documented form and defines the result (tests hold them equal).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import polars as pl

DATE_FIELDS = ("timeStamp", "validFrom", "validTo")
PARSED = ("contactId", "amount", "definitionId", *DATE_FIELDS)
GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# [0-9], not \d: polars' \d also matches other scripts' digits, which no parser downstream reads
DECIMAL = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"
WHOLE = r"^\+?[0-9]{1,18}(\.0*)?$"
CANONICAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"  # already as sent: no sign +, no padding
PLAIN = r"^-?(0|[1-9][0-9]*)(\.[0-9]*)?$"  # canonical but maybe for trailing zeros
ISO_8601 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-5][0-9](\.[0-9]+)?)?([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
# the fast path's shape: a date-time to the second with Z or a ±HH:MM offset (no leap
# second: polars would roll :60 into the next minute, the full parser rejects it)
FAST_DATE_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-5][0-9]:[0-5][0-9](Z|[+-][01][0-9]:[0-5][0-9])$"
)
OUT_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"
SAMPLE = 1000  # rows looked at to tell a column of few distinct dates


def prepare(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    """``frame`` with the helper columns added."""
    helpers, offsets = _fast(frame, tz)
    fast = (  # lazy: columns in parallel
        frame.lazy()
        .with_columns(helpers)
        .with_columns(_as_written(name) for name in offsets)
        .drop(offsets.values())
        .collect()
    )
    fast = _in_utc_before_whole_minutes(_formatted(fast), tz)
    unread = pl.any_horizontal(pl.col(f).is_not_null() & pl.col(f"_{f}").is_null() for f in PARSED)
    redo = fast.select(pl.arg_where(unread)).to_series()
    if redo.is_empty():
        return fast
    full = _full(frame[redo], tz)
    return fast.with_columns(fast[name].scatter(redo, full[name]) for name in full.columns)


def _fast(frame: pl.DataFrame, tz: str) -> tuple[list[pl.Expr], dict[str, str]]:
    """The fast path's helper columns, and for the dates read row by row the column of each
    one's offset in seconds (null for Z and -00:00, never written so) by field."""
    contact, amount, definition = (pl.col(f) for f in ("contactId", "amount", "definitionId"))
    has_point = amount.str.contains(".", literal=True)
    trimmed = (  # 12.50 -> 12.5, 3.00 -> 3
        pl.when(has_point)
        .then(amount.str.strip_chars_end("0").str.strip_chars_end("."))
        .otherwise(amount)
    )
    exprs = [
        pl.when(contact.str.contains(GUID)).then(contact).alias("_contactId"),
        pl.when(amount.str.contains(PLAIN) & (trimmed != "-0")).then(trimmed).alias("_amount"),
        pl.when(definition.str.contains(r"^[0-9]{1,18}$"))
        .then(definition.cast(pl.Int64, strict=False))
        .alias("_definitionId"),
    ]
    offsets = {}
    for field in DATE_FIELDS:
        if _repeats(frame[field]):
            exprs += _distinct_dates(frame, field, tz)
            continue
        at, offsets[field] = _fast_instant(pl.col(field), tz), f"_{field}_offset"
        exprs += [at.alias(f"_{field}"), _written_offset(pl.col(field)).alias(offsets[field])]
    return exprs, offsets


def _as_written(field: str) -> pl.Expr:
    """``_<field>_out``: the text itself where it is what would be sent (its offset is the
    zone's then), else null (``_formatted`` formats those)."""
    at = pl.col(f"_{field}")
    zone = (at.dt.base_utc_offset() + at.dt.dst_offset()).dt.total_seconds()
    return pl.when(zone == pl.col(f"_{field}_offset")).then(pl.col(field)).alias(f"_{field}_out")


def _formatted(fast: pl.DataFrame) -> pl.DataFrame:
    """The fast path's dates not sent as written (another offset than the zone's) formatted:
    those few rows, or the whole column if most need it (a file of Z times, say)."""
    for field in DATE_FIELDS:
        at, out = fast[f"_{field}"], fast[f"_{field}_out"]
        rows = (at.is_not_null() & out.is_null()).arg_true()
        if 2 * len(rows) > fast.height:
            formatted = pl.col(f"_{field}").dt.strftime(OUT_FORMAT)
            fast = fast.with_columns(pl.coalesce(f"_{field}_out", formatted).alias(out.name))
        elif len(rows):
            formatted_rows = at.gather(rows).dt.strftime(OUT_FORMAT)
            fast = fast.with_columns(out.scatter(rows, formatted_rows))
    return fast


def _in_utc_before_whole_minutes(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Dates from before the zone's offsets were whole minutes (local mean time, -00:44:30
    say) sent in UTC: ``±HH:MM`` can't write such an offset without moving the instant."""
    since = _whole_minutes_since(tz)
    for field in DATE_FIELDS if since is not None else ():
        at = frame[f"_{field}"]
        rows = (at.dt.epoch("s") < since).arg_true()
        if len(rows):
            in_utc = at.gather(rows).dt.convert_time_zone("UTC").dt.strftime(OUT_FORMAT)
            frame = frame.with_columns(frame[f"_{field}_out"].scatter(rows, in_utc))
    return frame


@cache
def _whole_minutes_since(tz: str) -> int | None:
    """The instant (epoch seconds) from which ``tz``'s offsets are whole minutes, as polars
    knows the zone; None if always. Probed a day at a time from 1800 (local mean time is
    older) to 2100."""
    days = pl.datetime_range(
        datetime(1800, 1, 1), datetime(2100, 1, 1), "1d", time_zone="UTC", eager=True
    )
    local = days.dt.convert_time_zone(tz)
    odd = (local.dt.base_utc_offset() + local.dt.dst_offset()).dt.total_seconds() % 60 != 0
    last = days.filter(odd).dt.epoch("s").max()
    return None if last is None else int(last) + 86400  # type: ignore[arg-type]


def _full(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Every helper column by the full parser (every documented form)."""
    contact = pl.col("contactId").str.strip_chars()
    guid = contact.str.replace(r"^\{(.*)\}$", "$1").str.to_lowercase()
    full = (
        frame.lazy()
        .select(
            pl.when(guid.str.contains(GUID)).then(guid).alias("_contactId"),
            _canonical_amount(pl.col("amount").str.strip_chars()).alias("_amount"),
            _whole_number(pl.col("definitionId").str.strip_chars()).alias("_definitionId"),
            *[
                expr
                for f in DATE_FIELDS
                for expr in _dates(frame, f, tz, _instant(pl.col(f).str.strip_chars(), tz))
            ],
        )
        .collect()
    )
    return _in_utc_before_whole_minutes(full, tz)


def _repeats(column: pl.Series) -> bool:
    """Whether a column holds few distinct values (a validity end, a night's dates)."""
    head = column.head(SAMPLE)
    return head.null_count() == head.len() or head.n_unique() <= head.len() // 4


def _dates(frame: pl.DataFrame, field: str, tz: str, at: pl.Expr) -> list[pl.Expr]:
    """``_<field>`` and ``_<field>_out``: by distinct value (full parser), or row by row by
    ``at`` if few repeat."""
    if _repeats(frame[field]):
        return _distinct_dates(frame, field, tz)
    return [at.alias(f"_{field}"), at.dt.strftime(OUT_FORMAT).alias(f"_{field}_out")]


def _distinct_dates(frame: pl.DataFrame, field: str, tz: str) -> list[pl.Expr]:
    """``_<field>`` and ``_<field>_out``, each distinct value parsed once."""
    key = pl.col(field).str.strip_chars()
    distinct = frame.select(key.unique().drop_nulls().alias("text"))
    parsed = distinct.select("text", _instant(pl.col("text"), tz).alias("at")).with_columns(
        pl.col("at").dt.strftime(OUT_FORMAT).alias("out")
    )
    dtype = parsed.schema["at"]
    return [
        key.replace_strict(parsed["text"], parsed["at"], default=None, return_dtype=dtype).alias(
            f"_{field}"
        ),
        key.replace_strict(
            parsed["text"], parsed["out"], default=None, return_dtype=pl.String
        ).alias(f"_{field}_out"),
    ]


def _fast_instant(s: pl.Expr, tz: str) -> pl.Expr:
    """A date-time to the second with Z or ±HH:MM as an instant in ``tz``, null for any other
    text (the full parser reads it; a column of dates goes by its few distinct values)."""
    naive = s.str.slice(0, 19).str.strptime(  # no cache: most values are distinct
        pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False, cache=False
    )
    minutes = pl.when(s.str.ends_with("Z")).then(0).otherwise(_offset_seconds(s) // 60)
    utc = (naive - pl.duration(minutes=minutes)).dt.replace_time_zone("UTC")
    return pl.when(s.str.contains(FAST_DATE_TIME)).then(utc.dt.convert_time_zone(tz))


def _offset_seconds(s: pl.Expr) -> pl.Expr:
    """Of a fast-path date-time's ±HH:MM offset (null for Z)."""
    offset = s.str.slice(19)
    hours, minutes = (offset.str.slice(at, 2).cast(pl.Int64, strict=False) for at in (1, 4))
    seconds = (hours * 60 + minutes) * 60
    return pl.when(offset.str.starts_with("-")).then(-seconds).otherwise(seconds)


def _written_offset(s: pl.Expr) -> pl.Expr:
    """The offset's seconds where ``%:z`` would write it as it is: not for Z or -00:00."""
    return pl.when(s.str.slice(19) != "-00:00").then(_offset_seconds(s))


def _canonical_amount(s: pl.Expr) -> pl.Expr:
    """``+007.50`` -> ``7.5``; null unless a plain decimal number."""
    parts = s.str.strip_chars_start("+-").str.split_exact(".", 1)
    whole = parts.struct.field("field_0").str.strip_chars_start("0")
    frac = parts.struct.field("field_1").fill_null("").str.strip_chars_end("0")
    zero = (whole == "") & (frac == "")
    text = pl.concat_str(
        pl.when(s.str.starts_with("-") & ~zero).then(pl.lit("-")).otherwise(pl.lit("")),
        pl.when(whole == "").then(pl.lit("0")).otherwise(whole),
        pl.when(frac == "").then(pl.lit("")).otherwise(pl.lit(".") + frac),
    )
    canonical = s.str.contains(CANONICAL) & (s != "-0")  # most are: skip the work for them
    return pl.when(canonical).then(s).when(s.str.contains(DECIMAL)).then(text)


def _whole_number(s: pl.Expr) -> pl.Expr:
    return pl.when(s.str.contains(WHOLE)).then(
        s.str.replace(r"\..*$", "").cast(pl.Int64, strict=False)
    )


def _instant(s: pl.Expr, tz: str) -> pl.Expr:
    """An ISO 8601 date or date-time as an instant in ``tz``; null when it isn't one."""
    iso = pl.when(s.str.contains(ISO_8601)).then(s.str.replace(r"^(.{10}) ", "${1}T"))
    offset = iso.str.slice(10).str.extract(r"([zZ]|[+-][0-9]{2}(?::?[0-9]{2})?)$")
    local = iso.str.slice(0, iso.str.len_chars() - offset.str.len_chars().fill_null(0))
    # one shape, one format: the date, T, hours, minutes, seconds (a fraction if given)
    local = local.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})$", "${1}T00:00:00").str.replace(
        r"^(.{10}T[0-9]{2}:[0-9]{2})$", "${1}:00"
    )
    naive = local.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
    aware = (local + _offset(offset)).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us"
    )
    in_zone = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    return pl.when(offset.is_null()).then(in_zone).otherwise(aware.dt.convert_time_zone(tz))


def _offset(offset: pl.Expr) -> pl.Expr:
    """``Z``, ``+02``, ``+0230``, ``-02:30`` all as ``±HH:MM``."""
    return (
        offset.str.replace(r"^[zZ]$", "+00:00")
        .str.replace(r"^([+-][0-9]{2})$", "${1}:00")
        .str.replace(r"^([+-][0-9]{2})([0-9]{2})$", "${1}:${2}")
    )
