"""``make bench``: points-import's speed and memory, side by side with a floor and a baseline.

``python -m benchmarks`` generates synthetic input files of 1M and 10M rows (CSV, about 150
bytes a row, cached in ``benchmarks/data/``), then measures, each in a fresh child process
(wall time from fork to exit, so start-up counts; peak RSS from the kernel's ``ru_maxrss`` of
that child):

- the floor: polars reads the file with every column as text and writes NDJSON;
- ``points-import validate`` and ``points-import run --dry-run`` (no Engage variables set);
- planning the 1M file as a new import (its rows sorted against the journal's landed rows and
  claimed) with an empty journal and with one holding 10M landed rows (``--landed-rows``);
- ``points-import run`` on the 1M file against a fresh simulator process (50 ms latency, 429
  above 200 requests/s, as Engage) at ``--max-rps`` 50 and 200, each with its own journal;
- a sequential baseline: the first 100k rows as Python dicts, one ``json.dumps`` + POST of
  1000 rows at a time, as a script with the generated SDK does, against the same simulator;
- the simulator's own capacity without latency, to show it is not the bottleneck.

It prints one table with the issue's goals next to the values they are about, and writes the
same as JSON to ``benchmarks/results/latest.json``. Options: ``--quick`` (100k and 1M rows),
``--sizes``, ``--only floor,validate,dry-run,journal,landed,run,baseline,simulator``,
``--help`` for the rest.
"""
