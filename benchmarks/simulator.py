"""The Engage simulator as a separate process (``points-import simulate``), for one measurement.

``with simulator(workdir, latency_ms=50) as sim:`` starts it on a free loopback port (it
announces the port it got), and stops it (SIGTERM to the process it started, then SIGKILL) on
the way out. ``requests(sim)`` reads its request log; ``summarize`` turns that log into the
numbers the table shows: requests by status, the sustained rate, the busiest 1-second window.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

API_KEY = "bench-key"
STARTUP_SECONDS = 20.0
_ANNOUNCE = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True)
class Simulator:
    """A running simulator process."""

    url: str
    api_key: str
    process: subprocess.Popen[str]


@dataclass(frozen=True)
class Traffic:
    """What the simulator saw of one run, from its request log."""

    posts: int
    statuses: dict[int, int]
    rows_posted: int  # rows in the POSTs the simulator applied (answered 202, not replayed)
    sustained_rps: float
    sustained_rows_per_second: float
    busiest_second: int
    steady_rps: float = 0.0  # after the first second: the limiter's rate, without the ramp-up

    def describe(self) -> str:
        statuses = sorted(self.statuses.items())
        by_status = ", ".join(f"{count} x {status}" for status, count in statuses)
        return (
            f"{by_status}; sending {self.sustained_rps:.0f} req/s "
            f"({self.steady_rps:.0f} after the first second); "
            f"busiest 1 s: {self.busiest_second} req"
        )

    def record(self) -> dict[str, Any]:
        return asdict(self)


def write_config(path: Path, latency_ms: float, rate_limit_rps: float | None) -> Path:
    """A config file with just the ``[simulator]`` tables the benchmark needs."""
    limit = f"rate_limit_rps = {rate_limit_rps}\n" if rate_limit_rps else ""
    path.write_text(
        f'[simulator]\napi_key = "{API_KEY}"\nauto_create_contacts = true\n{limit}'
        f"\n[simulator.faults]\nlatency_ms = {latency_ms}\n",
        encoding="utf-8",
    )
    return path


@contextmanager
def simulator(
    workdir: Path, latency_ms: float, rate_limit_rps: float | None = None
) -> Iterator[Simulator]:
    """A fresh simulator process, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "simulator.toml", latency_ms, rate_limit_rps)
    command = [points_import(), "simulate", "--port", "0", "--config", str(config)]
    with _serving(command, workdir / "simulator.log") as started:
        yield started


@contextmanager
def sink(workdir: Path, latency_ms: float, rate_limit_rps: float) -> Iterator[Simulator]:
    """A fresh benchmark sink process (``sink.py``: next to nothing per request), stopped on
    exit; its request log reads like the simulator's."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve().parent / "sink.py"
    command = [sys.executable, str(script), "--port", "0", "--latency-ms", str(latency_ms)]
    command += ["--rate", str(rate_limit_rps)]
    with _serving(command, workdir / "sink.log") as started:
        yield started


@contextmanager
def _serving(command: list[str], log_path: Path) -> Iterator[Simulator]:
    """``command`` started, serving at the URL it announces; stopped on exit."""
    log = open(log_path, "w+", encoding="utf-8")  # noqa: SIM115
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
    )
    try:
        yield Simulator(_announced_url(process, log), API_KEY, process)
    finally:
        _stop(process)
        log.close()


def requests(sim: Simulator) -> list[dict[str, Any]]:
    """The simulator's request log (admin requests are not in it)."""
    response = httpx.get(f"{sim.url}/_sim/requests", timeout=60)
    response.raise_for_status()
    log: list[dict[str, Any]] = response.json()
    return log


def summarize(log: list[dict[str, Any]], method: str = "POST") -> Traffic:
    """Requests by status, the rate between the first and the last request of ``method``
    (POSTs: the import), the busiest second."""
    posts = [entry for entry in log if entry["method"] == method]
    arrivals = sorted(entry["monotonic"] for entry in posts)
    accepted = [entry for entry in posts if entry["status"] in (200, 202)]
    applied = [entry for entry in accepted if entry["note"] != "replayed"]
    rows = sum(entry["rows"] or 0 for entry in applied)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    rate = (len(accepted) - 1) / span if span > 0 else 0.0
    per_request = rows / len(accepted) if accepted else 0.0
    return Traffic(
        posts=len(posts),
        statuses=dict(Counter(entry["status"] for entry in posts)),
        rows_posted=rows,
        sustained_rps=rate,
        sustained_rows_per_second=rate * per_request,
        busiest_second=_busiest_second(arrivals),
        steady_rps=_rate([moment for moment in arrivals if moment >= arrivals[0] + 1.0]),
    )


def _rate(arrivals: list[float]) -> float:
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return (len(arrivals) - 1) / span if span > 0 else 0.0


def _busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any 1-second sliding window (the limit the simulator enforces)."""
    busiest, first = 0, 0
    for last, moment in enumerate(arrivals):
        while moment - arrivals[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


def points_import() -> str:
    """The points-import script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("points-import")
    return str(script) if script.exists() else "points-import"


def _announced_url(process: subprocess.Popen[str], log: Any) -> str:
    """The URL from the simulator's first line on stdout (read by a thread that drains it)."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        if found := _ANNOUNCE.search(line):
            return found.group(1)
    log.seek(0)
    raise RuntimeError(f"the simulator did not start: {log.read()[-2000:]}")


def _drain(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
