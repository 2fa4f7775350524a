"""The measurements, one function each; every one runs its command as a fresh child process.

Each points-import run gets its own working folder (rejects, summary, journal) under the
benchmark's scratch folder, and an environment without the Engage variables unless it is an
end-to-end run, which gets a fresh simulator of its own.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import simulator as sim
from benchmarks.generate import label
from benchmarks.measure import Limits, Run, run
from benchmarks.simload import measure_capacity

HERE = Path(__file__).resolve().parent
ENGAGE_VARIABLES = ("ENGAGE_BASE_URL", "ENGAGE_API_KEY")
OK_EXIT_CODES = (0, 3)  # 3: finished, the generated file's few invalid rows are in the rejects


@dataclass(frozen=True)
class Settings:
    """What every measurement needs to know."""

    scratch: Path
    limits: Limits
    latency_ms: float
    sim_rate_limit: float | None
    concurrency: int | None


@dataclass
class Measurement:
    """One row of the table."""

    key: str  # floor, validate, dry-run, run-50, run-200, baseline, simulator
    name: str
    file: str
    size: int | None  # rows in the file (or slice) measured
    rows: int | None  # rows the command handled
    seconds: float | None
    peak_rss_mib: float | None
    cpu_seconds: float | None
    ok: bool
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float | None:
        if not self.ok or not self.rows or not self.seconds:
            return None
        return self.rows / self.seconds


def environment(engage: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the Engage variables (and with .pyc caching), plus ``engage``.

    Bytecode caching is switched back on: an installed points-import has its .pyc files, and
    a measurement should not include compiling its own source.
    """
    env = {k: v for k, v in os.environ.items() if k not in ENGAGE_VARIABLES}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env | (engage or {})


def floor(path: Path, rows: int, settings: Settings) -> Measurement:
    workdir = _workdir(settings, f"floor-{rows}")
    command = [sys.executable, str(HERE / "floor.py"), str(path)]
    result = _run(command, workdir, settings)
    return _measured("floor", "floor (polars → NDJSON)", path, rows, result, result.exit_code == 0)


def validate(path: Path, rows: int, settings: Settings) -> Measurement:
    workdir = _workdir(settings, f"validate-{rows}")
    command = [sim.points_import(), "validate", str(path), *_reports(workdir)]
    result = _run(command, workdir, settings)
    return _imported("validate", "validate", path, rows, result, workdir)


def dry_run(path: Path, rows: int, settings: Settings) -> Measurement:
    workdir = _workdir(settings, f"dry-run-{rows}")
    command = [sim.points_import(), "run", "--dry-run", str(path), *_reports(workdir)]
    command += ["--state-dir", str(workdir / "state")]
    result = _run(command, workdir, settings)
    return _imported("dry-run", "run --dry-run", path, rows, result, workdir)


def end_to_end(path: Path, rows: int, rps: int, settings: Settings) -> Measurement:
    """``points-import run`` against a fresh simulator with added latency, at ``rps``."""
    workdir = _workdir(settings, f"run-{rps}-{rows}")
    command = [sim.points_import(), "run", str(path), *_reports(workdir), "--max-rps", str(rps)]
    command += ["--state-dir", str(workdir / "state")]
    if settings.concurrency is not None:
        command += ["--concurrency", str(settings.concurrency)]
    with sim.simulator(workdir / "sim", settings.latency_ms, settings.sim_rate_limit) as engage:
        env = environment({"ENGAGE_BASE_URL": engage.url, "ENGAGE_API_KEY": engage.api_key})
        cpu_before = sim.cpu_seconds(engage.process.pid)
        result = _run(command, workdir, settings, env)
        sim_cpu = sim.cpu_seconds(engage.process.pid) - cpu_before
        traffic = sim.summarize(sim.requests(engage))
    measured = _imported(f"run-{rps}", f"run at {rps} req/s", path, rows, result, workdir)
    measured.extra |= {
        "max_rps": rps,
        "concurrency": settings.concurrency or "default",
        "traffic": traffic.record(),
        "simulator_cpu_share": sim_cpu / result.seconds if result.seconds else None,
    }
    concurrency = f"--concurrency {settings.concurrency}" if settings.concurrency else ""
    measured.note = _join(measured.note, traffic.describe(), concurrency)
    _check_accounting(measured, _summary(workdir / "summary.json"), traffic.rows_posted)
    return measured


def against_sink(path: Path, rows: int, rps: int, settings: Settings) -> Measurement:
    """``points-import run`` against the benchmark sink (50 ms latency, 429 above 200/s):
    the client's own rate and CPU, with nothing else on the two cores."""
    workdir = _workdir(settings, f"sink-{rps}-{rows}")
    config = workdir / "config.toml"
    config.write_text("[engage]\ncheck_definitions = false\n", encoding="utf-8")
    command = [sim.points_import(), "run", str(path), *_reports(workdir), "--max-rps", str(rps)]
    command += ["--state-dir", str(workdir / "state"), "--config", str(config)]
    with sim.sink(workdir / "sink", settings.latency_ms, settings.sim_rate_limit or 200) as engage:
        env = environment({"ENGAGE_BASE_URL": engage.url, "ENGAGE_API_KEY": engage.api_key})
        result = _run(command, workdir, settings, env)
        traffic = sim.summarize(sim.requests(engage))
    measured = _imported(f"sink-{rps}", f"run at {rps} req/s, sink", path, rows, result, workdir)
    measured.extra |= {"max_rps": rps, "traffic": traffic.record()}
    measured.note = _join(measured.note, traffic.describe())
    _check_accounting(measured, _summary(workdir / "summary.json"), traffic.rows_posted)
    return measured


def verify_at_sink(contacts: int, rps: int, settings: Settings) -> Measurement:
    """``points-import balances verify`` of ``contacts`` contacts' balances against the sink:
    one GET a contact, side by side, at ``--max-rps`` (issue #15)."""
    import uuid

    workdir = _workdir(settings, f"verify-{rps}-{contacts}")
    expected = workdir / "expected.csv"
    with expected.open("w", encoding="utf-8") as out:
        out.write("contactId,definitionId,balance\n")
        for n in range(contacts):
            out.write(f"{uuid.uuid5(uuid.NAMESPACE_URL, f'bench/{n}')},1,10\n")
    config = workdir / "config.toml"
    in_flight = max(16, int(rps * settings.latency_ms / 1000 * 2.5))
    config.write_text(f"[engage]\nmax_requests_per_second = {rps}\nconcurrency = {in_flight}\n")
    command = [sim.points_import(), "balances", "verify", str(expected), "--config", str(config),
               "--report", str(workdir / "mismatches.csv")]  # fmt: skip
    with sim.sink(workdir / "sink", settings.latency_ms, rps) as engage:
        env = environment({"ENGAGE_BASE_URL": engage.url, "ENGAGE_API_KEY": engage.api_key})
        result = _run(command, workdir, settings, env)
        traffic = sim.summarize(sim.requests(engage), method="GET")
    name = f"balances verify at {rps} req/s, sink"
    measured = _measured(f"verify-{rps}", name, expected, contacts, result, result.exit_code == 0,
                         f"{contacts:,} contacts")  # fmt: skip
    measured.extra |= {"max_rps": rps, "traffic": traffic.record()}
    measured.note = _join(measured.note, traffic.describe())
    return measured


def _check_accounting(measured: Measurement, summary: dict[str, Any] | None, posted: int) -> None:
    """Every row the simulator applied is accepted or rejected by the server in the summary."""
    if summary is None:
        return
    server = summary.get("rejected_by_stage", {}).get("server", 0)
    reported = summary.get("rows_accepted", 0) + server
    if posted != reported:
        measured.ok = False
        problem = f"the simulator applied {posted:,} rows, the summary accounts for {reported:,}"
        measured.note = _join(measured.note, problem)


def baseline(path: Path, rows: int, settings: Settings, of_rows: int | None = None) -> Measurement:
    """The sequential SDK-style script on the first ``rows`` rows, same simulator set-up."""
    workdir = _workdir(settings, f"baseline-{rows}")
    command = [sys.executable, str(HERE / "baseline.py"), str(path), "--rows", str(rows)]
    with sim.simulator(workdir / "sim", settings.latency_ms, settings.sim_rate_limit) as engage:
        env = environment({"ENGAGE_API_KEY": engage.api_key})
        command += ["--url", engage.url]
        result = _run(command, workdir, settings, env)
    outcome = _last_json_line(result.log)
    ok = result.exit_code == 0 and outcome is not None
    file = f"first {label(rows)} of {label(of_rows) + ' file' if of_rows else path.name}"
    measured = _measured("baseline", "sequential SDK-style", path, rows, result, ok, file)
    if outcome:
        measured.rows = outcome["rows"]
        measured.extra |= outcome
        measured.note = f"{outcome['requests']} requests, {outcome['accepted']:,} rows accepted"
    return measured


def capacity(settings: Settings, seconds: float = 10.0, clients: int = 20) -> Measurement:
    """How many 1000-row POSTs a second the simulator takes, without latency."""
    found = measure_capacity(_workdir(settings, "simulator"), seconds, clients)
    return Measurement(
        key="simulator",
        name="simulator capacity",
        file="1000-row bodies",
        size=None,
        rows=found.requests * 1000,
        seconds=found.seconds,
        peak_rss_mib=None,
        cpu_seconds=found.simulator_cpu_seconds,
        ok=found.failures == 0,
        note=found.describe(),
        extra={"requests_per_second": found.requests_per_second, "clients": clients},
    )


def _workdir(settings: Settings, name: str) -> Path:
    workdir = settings.scratch / name
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _run(
    command: list[str], workdir: Path, settings: Settings, env: dict[str, str] | None = None
) -> Run:
    log, limits = workdir / "log", settings.limits
    return run(command, cwd=workdir, env=env or environment(), log=log, limits=limits)


def _reports(workdir: Path) -> list[str]:
    return ["--summary", str(workdir / "summary.json"), "--rejects", str(workdir / "rejects.csv")]


def _measured(
    key: str, name: str, path: Path, rows: int, result: Run, ok: bool, file: str = ""
) -> Measurement:
    note = result.stopped or ("" if ok else f"exit {result.exit_code}: {result.tail(3)}")
    return Measurement(
        key=key,
        name=name,
        file=file or f"{label(rows)} file",
        size=rows,
        rows=rows,
        seconds=result.seconds,
        peak_rss_mib=result.peak_rss_mib,
        cpu_seconds=result.cpu_seconds,
        ok=ok,
        note=note,
        extra={"path": str(path), "exit_code": result.exit_code},
    )


def _imported(
    key: str, name: str, path: Path, rows: int, result: Run, workdir: Path
) -> Measurement:
    """A points-import run: rows from its summary, which must account for the whole file."""
    ok = result.exit_code in OK_EXIT_CODES
    measured = _measured(key, name, path, rows, result, ok)
    summary = _summary(workdir / "summary.json")
    if summary is None:
        return measured
    read = summary.get("rows_read")
    measured.extra["summary"] = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    if read != rows:
        measured.ok = False
        measured.note = _join(measured.note, f"read {read} rows of {rows}")
    counts = [f"{summary[k]:,} {k.removeprefix('rows_')}" for k in _COUNTS if summary.get(k)]
    measured.note = _join(measured.note, ", ".join(counts))
    return measured


_COUNTS = ("rows_accepted", "rows_rejected", "rows_invalid")


def _summary(path: Path) -> dict[str, Any] | None:
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary


def _last_json_line(log: Path) -> dict[str, Any] | None:
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)
