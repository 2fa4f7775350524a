"""``python -m benchmarks`` (``make bench``): see ``benchmarks/__init__.py``."""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

import benchmarks
from benchmarks import generate, recovery, report, runs
from benchmarks.journal import journal_cost
from benchmarks.landed import landed_planning
from benchmarks.measure import Limits
from benchmarks.runs import Measurement, Settings

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
KINDS = (
    "floor",
    "validate",
    "dry-run",
    "journal",
    "landed",
    "sink",
    "verify",
    "recovery",
    "run",
    "baseline",
    "simulator",
)
DEFAULT_SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (100_000, 1_000_000)
_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _started:6.1f} s] {message}", flush=True)


def parse(arguments: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=benchmarks.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=_sizes, help="file sizes in rows [1000000,10000000]")
    parser.add_argument("--quick", action="store_true", help="100k and 1M rows: a smoke run")
    parser.add_argument("--only", type=_kinds, default=KINDS, help=f"some of {','.join(KINDS)}")
    parser.add_argument("--e2e-size", type=int, default=1_000_000, help="rows, end-to-end runs")
    parser.add_argument("--rates", type=_sizes, default=(50, 200), help="--max-rps values")
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--sink-size", type=int, default=2_000_000, help="rows, runs at the sink")
    parser.add_argument(
        "--verify-contacts", type=int, default=100_000, help="contacts, balances verify"
    )
    parser.add_argument("--verify-rps", type=int, default=500, help="--max-rps of the verify")
    parser.add_argument("--recovery-rows", type=int, default=20_000, help="rows, recovery")
    parser.add_argument("--recovery-contacts", type=int, default=1_000, help="contacts, recovery")
    parser.add_argument(
        "--landed-rows", type=int, default=10_000_000, help="rows landed before, for 'landed'"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulator latency")
    parser.add_argument(
        "--sim-rate-limit", type=float, default=200.0, help="simulator's 429 limit (0: none)"
    )
    parser.add_argument("--concurrency", type=int, help="--concurrency [the tool's default]")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per measurement")
    parser.add_argument("--max-rss-mib", type=float, default=8192.0, help="memory per command")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON record")
    options = parser.parse_args(arguments)
    options.sizes = options.sizes or (QUICK_SIZES if options.quick else DEFAULT_SIZES)
    return options


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part.replace("_", "")) for part in text.split(",") if part}))


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(KINDS)}")
    return kinds


def main(arguments: Sequence[str] | None = None) -> int:
    options = parse(arguments)
    _warn_if_busy()
    files = _inputs(options)
    _warm_up()
    with TemporaryDirectory(prefix="points-bench-") as scratch:
        settings = Settings(
            scratch=Path(scratch),
            limits=Limits(options.timeout, options.max_rss_mib),
            latency_ms=options.latency_ms,
            sim_rate_limit=options.sim_rate_limit or None,
            concurrency=options.concurrency,
        )
        measurements = [_step(step) for step in _plan(options, files, settings)]
    checked = report.goals(measurements, options.sizes)
    report.show(report.table(measurements, checked))
    report.write_json(options.output, measurements, checked, _context(options))
    progress(f"written to {options.output}")
    return 0 if all(measured.ok for measured in measurements) else 1


def _inputs(options: argparse.Namespace) -> dict[int, Path]:
    """The generated files, made now if they are not cached yet."""
    wanted = set(options.sizes) | ({options.e2e_size} if _needs_e2e_file(options) else set())
    wanted |= {options.sink_size} if "sink" in options.only else set()
    files = {}
    for rows in sorted(wanted):
        path = generate.DATA_DIR / generate.file_name(rows)
        if not path.exists():
            progress(f"generating {path.name} ({rows:,} rows, about {rows * 150 / 1e6:,.0f} MB)")
        files[rows] = generate.input_file(rows)
        _read_through(files[rows])
    progress("inputs ready: " + ", ".join(f"{generate.label(n)} = {p}" for n, p in files.items()))
    return files


def _needs_e2e_file(options: argparse.Namespace) -> bool:
    return bool({"run", "baseline", "landed"} & set(options.only))


def _read_through(path: Path) -> None:
    """Read the file once, so that every measurement finds it in the page cache."""
    with open(path, "rb") as file:
        while file.read(16 << 20):
            pass


def _warm_up() -> None:
    """Compile points-import's modules once, as an installed package has them compiled."""
    import pipeline

    compileall.compile_dir(Path(pipeline.__file__).parent, quiet=1)


@dataclass(frozen=True)
class Step:
    """One measurement to make."""

    kind: str
    what: str
    measure: Callable[[], Measurement]


def _plan(options: argparse.Namespace, files: dict[int, Path], settings: Settings) -> list[Step]:
    steps = [
        *_per_size(options, files, settings),
        *_at_the_sink(options, files, settings),
        Step(
            "verify",
            f"balances verify of {options.verify_contacts:,} contacts at {options.verify_rps}"
            " req/s against the sink",
            partial(runs.verify_at_sink, options.verify_contacts, options.verify_rps, settings),
        ),
        *(
            Step(
                "recovery",
                f"re-run after a crash, keys {'expired' if expired else 'known'}:"
                f" {options.recovery_rows:,} rows, {options.recovery_contacts:,} contacts,"
                f" 200 req/s, {recovery.LATENCY_MS:g} ms latency",
                partial(
                    recovery.recovery,
                    settings,
                    options.recovery_rows,
                    options.recovery_contacts,
                    200,
                    expired,
                ),
            )
            for expired in (True, False)
        ),
        *_with_simulator(options, files, settings),
    ]
    return [step for step in steps if step.kind in options.only]


def _per_size(
    options: argparse.Namespace, files: dict[int, Path], settings: Settings
) -> list[Step]:
    kinds = (
        ("floor", "floor (polars reads as text, writes NDJSON)", runs.floor),
        ("validate", "points-import validate", runs.validate),
        ("dry-run", "points-import run --dry-run", runs.dry_run),
        (
            "journal",
            "run journal writes",
            lambda path, rows, settings: journal_cost(rows, settings),
        ),
    )
    return [
        Step(
            kind,
            f"{what}, {generate.label(rows)} rows",
            partial(measure, files[rows], rows, settings),
        )
        for kind, what, measure in kinds
        for rows in options.sizes
    ]


def _at_the_sink(
    options: argparse.Namespace, files: dict[int, Path], settings: Settings
) -> list[Step]:
    rows = options.sink_size
    if rows not in files:
        return []
    what = f"{options.latency_ms:g} ms latency, {generate.label(rows)} rows"
    return [
        Step(
            "sink",
            f"run at {rps} req/s against the sink, {what}",
            partial(runs.against_sink, files[rows], rows, rps, settings),
        )
        for rps in options.rates
    ]


def _with_simulator(
    options: argparse.Namespace, files: dict[int, Path], settings: Settings
) -> list[Step]:
    capacity = Step(
        "simulator", "simulator capacity (no latency)", partial(runs.capacity, settings)
    )
    rows = options.e2e_size
    path = files.get(rows)
    if path is None:
        return [capacity]
    label, latency = generate.label(rows), f"{options.latency_ms:g} ms latency"
    landed = [
        Step(
            "landed",
            f"planning {label} rows, {before:,} landed before",
            partial(landed_planning, path, rows, before, settings),
        )
        for before in (0, options.landed_rows)
    ]
    steps = [
        *landed,
        *(
            Step(
                "run",
                f"run at {rps} req/s, {latency}, {label} rows",
                partial(runs.end_to_end, path, rows, rps, settings),
            )
            for rps in options.rates
        ),
    ]
    first = options.baseline_rows
    what = f"sequential baseline, {latency}, first {first:,} rows of the {label} file"
    return [
        *steps,
        Step("baseline", what, partial(runs.baseline, path, first, settings, rows)),
        capacity,
    ]


def _step(step: Step) -> Measurement:
    progress(f"{step.what} ...")
    measured = step.measure()
    rate = measured.rows_per_second
    shown = f"{rate:,.0f} rows/s" if rate else "failed" if not measured.ok else "done"
    rss = f", peak {measured.peak_rss_mib:,.0f} MiB" if measured.peak_rss_mib else ""
    seconds = f"{measured.seconds:.2f} s, " if measured.seconds else ""
    progress(f"  {seconds}{shown}{rss}" + (f" — {measured.note}" if measured.note else ""))
    return measured


def _warn_if_busy() -> None:
    busy = os.getloadavg()[0]
    if busy > 0.5:
        progress(f"warning: load average {busy:.2f}; other work on this machine skews the numbers")


def _context(options: argparse.Namespace) -> dict[str, object]:
    return {
        "machine": report.machine(),
        "load_average_at_end": os.getloadavg()[0],
        "options": {k: v for k, v in vars(options).items() if k != "output"},
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
    }


if __name__ == "__main__":
    sys.exit(main())
