"""Frames kept for long: polars' string columns are views into the buffers of the frame they
were filtered from, so a few rows kept from each piece would keep every piece's text alive.
``detached`` copies the text out, so memory holds only the rows kept."""

from __future__ import annotations

import polars as pl


def detached(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its text in buffers of its own."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if frame.is_empty() or not text:
        return frame
    return frame.with_columns(pl.concat_str(pl.col(name), pl.lit("")).alias(name) for name in text)
