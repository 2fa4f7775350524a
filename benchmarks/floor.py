"""The floor: polars reads the file with every column as text and writes it back out as NDJSON.

Every byte is read and every row serialized, in polars' streaming engine (bounded memory);
nothing is checked. ``python benchmarks/floor.py FILE [OUT]`` (OUT defaults to /dev/null). Run as
a script in a fresh interpreter, so its time includes start-up and importing polars, as a
points-import command's does.
"""

from __future__ import annotations

import os
import sys

import polars as pl


def main(arguments: list[str]) -> None:
    source = arguments[0]
    target = arguments[1] if len(arguments) > 1 else os.devnull
    pl.scan_csv(source, infer_schema=False).sink_ndjson(target)


if __name__ == "__main__":
    main(sys.argv[1:])
