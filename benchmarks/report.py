"""The goals of issue 4 checked against the measurements, one table, and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from benchmarks.generate import label
from benchmarks.runs import Measurement

GIB_MIB = 1024.0
TIMES = "\N{MULTIPLICATION SIGN}"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Goal:
    """One goal of the issue with the value measured for it."""

    attached_to: tuple[str, int | None]  # (measurement key, rows of its file): where it shows
    text: str
    measured: float | None
    target: float
    unit: str
    at_least: bool  # True: measured >= target passes; False: measured <= target passes

    @property
    def passed(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    def describe(self) -> str:
        mark = {True: "✓", False: "✗", None: "?"}[self.passed]
        sign = "≥" if self.at_least else "≤"
        value = "not measured" if self.measured is None else _number(self.measured, self.unit)
        return f"{mark} {self.text}: {value} (goal {sign} {_number(self.target, self.unit)})"


def goals(measurements: Sequence[Measurement], sizes: Sequence[int]) -> list[Goal]:
    """Every goal the measurements allow to check."""
    find = _Find(measurements)
    big, small = max(sizes), min(sizes)
    return [
        *_dry_run_goals(find, big, small),
        *_journal_goals(find, sizes),
        *_end_to_end_goals(find),
        *_landed_goals(find),
        *_sink_goals(find),
        *_verify_goals(find),
        *_recovery_goals(find),
    ]


def _sink_goals(find: _Find) -> list[Goal]:
    """Against the sink (issue #13): the rate while sending and over the whole run, the
    busiest second at the sink, and the client's CPU per million rows."""
    listed = []
    for measured in find.all_of_prefix("sink-"):
        rps = float(measured.extra["max_rps"])
        at, traffic = (measured.key, measured.size), measured.extra.get("traffic", {})
        sending = _ratio(traffic.get("sustained_rows_per_second"), rps * 1000)
        listed.append(Goal(at, "while sending, of limit", sending, 0.95, "%", True))
        if rps >= 200:
            whole = _ratio(measured.rows_per_second, rps * 1000)
            listed.append(Goal(at, "whole run (wall), of limit", whole, 0.85, "%", True))
            cpu = _ratio(measured.cpu_seconds, (measured.rows or 0) / 1e6)
            listed.append(Goal(at, "client CPU per 1M rows", cpu, 5.0, "s", False))
        busiest = traffic.get("busiest_second")
        listed.append(Goal(at, "busiest 1-s window at the sink", busiest, rps, "requests", False))
    return listed


def _verify_goals(find: _Find) -> list[Goal]:
    """Balances verify (issue #15): at the rate limit while it runs, in bounded memory."""
    listed = []
    for measured in find.all_of_prefix("verify-"):
        rps = float(measured.extra["max_rps"])
        at, traffic = (measured.key, measured.size), measured.extra.get("traffic", {})
        rate = _ratio(traffic.get("sustained_rps"), rps)
        listed.append(Goal(at, "while running, of --max-rps", rate, 0.95, "%", True))
        listed.append(Goal(at, "peak RSS", _rss(measured), GIB_MIB, "MiB", False))
    return listed


def _recovery_goals(find: _Find) -> list[Goal]:
    """A re-run after a crash (issue #18): GETs only for the accounts the requests that
    reached Engage touch, in little more time than its requests need at the rate limit; none
    while Engage still knows the keys."""
    listed = []
    expired, window = find("recovery-expired", None), find("recovery-window", None)
    if expired is not None:
        at, extra = (expired.key, expired.size), expired.extra
        touched = extra.get("accounts_touched")
        listed.append(Goal(at, "GETs (accounts touched)", extra.get("gets"), touched or 0,
                           "requests", False))  # fmt: skip
        ratio = _ratio(_seconds(expired), extra.get("needed_s"))
        listed.append(Goal(at, "re-run ÷ needed at the limit", ratio, 1.5, "times", False))
    if window is not None:
        gets = window.extra.get("gets")
        listed.append(Goal((window.key, window.size), "GETs", gets, 0, "requests", False))
    return listed


def _landed_goals(find: _Find) -> list[Goal]:
    """Planning against many landed rows, beside an empty journal; claiming, beside a run."""
    landed = [m for m in find.all_of_prefix("landed") if m.extra.get("landed")]
    empty = next((m for m in find.all_of_prefix("landed") if m.extra.get("landed") == 0), None)
    listed = []
    for measured in landed:
        at = (measured.key, measured.size)
        ratio = _ratio(_seconds(measured), _seconds(empty))
        listed.append(Goal(at, "planning ÷ empty journal's", ratio, 1.2, "times", False))
        listed.append(Goal(at, "peak RSS", _rss(measured), GIB_MIB, "MiB", False))
    run = find("run-200", None)
    if empty is not None and run is not None:
        share = _ratio(empty.extra.get("claim_seconds"), _seconds(run))
        at = (empty.key, empty.size)
        listed.append(Goal(at, "claiming ÷ run at 200/s", share, 0.05, "%", False))
    return listed


def _journal_goals(find: _Find, sizes: Sequence[int]) -> list[Goal]:
    """The journal's writes for an import, as a share of the dry run of the same rows."""
    listed = []
    for rows in sizes:
        journal, dry = find("journal", rows), find("dry-run", rows)
        if journal is not None and dry is not None:
            share = _ratio(_seconds(journal), _seconds(dry))
            listed.append(Goal(("journal", rows), "÷ dry run", share, 0.05, "%", False))
    return listed


def _dry_run_goals(find: _Find, big: int, small: int) -> list[Goal]:
    dry, floor, dry_small = find("dry-run", big), find("floor", big), find("dry-run", small)
    at = ("dry-run", big)
    listed = [
        Goal(at, "rows/s", _rate(dry), 1_000_000, "rows/s", True),
        Goal(at, "time ÷ floor", _ratio(_seconds(dry), _seconds(floor)), 2.5, "times", False),
        Goal(at, "peak RSS", _rss(dry), GIB_MIB, "MiB", False),
    ]
    if big != small:
        ratio = _ratio(_rss(dry), _rss(dry_small))
        listed.append(Goal(at, f"RSS ÷ {label(small)} run's", ratio, 1.5, "times", False))
    return listed


def _end_to_end_goals(find: _Find) -> list[Goal]:
    listed = []
    for measured in find.all_of_prefix("run-"):
        limit = float(measured.extra["max_rps"]) * 1000
        at = (measured.key, measured.size)
        sending = measured.extra.get("traffic", {}).get("sustained_rows_per_second")
        listed.append(Goal(at, "while sending, of limit", _ratio(sending, limit), 0.95, "%", True))
        whole = _ratio(measured.rows_per_second, limit)
        listed.append(Goal(at, "whole run (wall), of limit", whole, 0.95, "%", True))
        busiest = measured.extra.get("traffic", {}).get("busiest_second")
        rps = float(measured.extra["max_rps"])
        listed.append(Goal(at, "limiter: busiest 1-s window", busiest, rps, "requests", False))
    fast, base = find("run-200", None), find("baseline", None)
    if fast is not None:
        ratio = _ratio(fast.rows_per_second, base.rows_per_second if base else None)
        listed.append(
            Goal(("run-200", fast.size), "÷ sequential baseline", ratio, 10, "times", True)
        )
    return listed


class _Find:
    """Look measurements up by key and file size (None: any size)."""

    def __init__(self, measurements: Sequence[Measurement]) -> None:
        self._all = list(measurements)

    def __call__(self, key: str, rows: int | None) -> Measurement | None:
        for measured in self._all:
            if measured.key == key and rows in (None, measured.size):
                return measured
        return None

    def all_of_prefix(self, prefix: str) -> list[Measurement]:
        return [measured for measured in self._all if measured.key.startswith(prefix)]


def _rate(measured: Measurement | None) -> float | None:
    return measured.rows_per_second if measured else None


def _seconds(measured: Measurement | None) -> float | None:
    return measured.seconds if measured and measured.ok else None


def _rss(measured: Measurement | None) -> float | None:
    return measured.peak_rss_mib if measured and measured.ok else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _number(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0%}"
    if unit == "times":
        return f"{value:.2f}{TIMES}"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:,.0f} {unit}"


def table(measurements: Sequence[Measurement], checked: Sequence[Goal]) -> Table:
    """One row per measurement; the goals next to the measurement they are about."""
    grid = Table(title="points-import benchmark", title_justify="left", show_lines=True)
    for column, justify in _COLUMNS:
        grid.add_column(column, justify=justify, overflow="fold")
    for measured in measurements:
        goals_here = [g for g in checked if g.attached_to == (measured.key, measured.size)]
        grid.add_row(*_cells(measured), _notes(measured, goals_here))
    return grid


_COLUMNS: list[tuple[str, Any]] = [
    ("measurement", "left"),
    ("file", "left"),
    ("rows", "right"),
    ("seconds", "right"),
    ("rows/s", "right"),
    ("peak RSS MiB", "right"),
    ("CPU s", "right"),
    ("goals and notes", "left"),
]


def _cells(measured: Measurement) -> list[str]:
    def shown(value: float | None, style: str) -> str:
        return "—" if value is None else format(value, style)

    return [
        measured.name if measured.ok else f"[red]{measured.name} (failed)[/red]",
        measured.file,
        shown(measured.rows, ","),
        shown(measured.seconds, ".2f"),
        shown(measured.rows_per_second, ",.0f"),
        shown(measured.peak_rss_mib, ",.0f"),
        shown(measured.cpu_seconds, ".1f"),
    ]


def _notes(measured: Measurement, goals_here: Sequence[Goal]) -> str:
    lines = [goal.describe() for goal in goals_here]
    return "\n".join([*lines, measured.note] if measured.note else lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import polars

    import pipeline

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_kib() / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "polars": polars.__version__,
        "points_import": pipeline.__version__,
        "commit": _commit(),
    }


def _cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name", str) or platform.processor()


def _memory_kib() -> float:
    return _proc_field("/proc/meminfo", "MemTotal", lambda text: float(text.split()[0])) or 0.0


def _proc_field(path: str, name: str, parse: Callable[[str], _T]) -> _T | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return parse(value.strip())
    return None


def _commit() -> str:
    """The checked-out commit, '+changes' when the work tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_json(
    path: Path,
    measurements: Sequence[Measurement],
    checked: Sequence[Goal],
    context: dict[str, Any],
) -> None:
    """The same as the table, as JSON."""
    record = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **context,
        "measurements": [asdict(m) | {"rows_per_second": m.rows_per_second} for m in measurements],
        "goals": [asdict(goal) | {"passed": goal.passed} for goal in checked],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def show(grid: Table) -> None:
    Console(width=max(Console().width, 160)).print(grid)
