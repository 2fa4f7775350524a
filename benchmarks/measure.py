"""Run one command as a measured child process: wall time, CPU time and peak RSS.

The command runs under ``rusage.py``, a small launcher that forks it, waits for it with
``os.wait4`` and reports that child's own ``ru_maxrss`` (the kernel's high-water mark of its
resident memory, exact and without polling) and its wall time from fork to exit, so that
interpreter start-up counts. A watchdog here kills the launcher's process group when the
command runs past the time limit or its resident memory (read from /proc) passes the memory
limit, so one bad measurement can neither stall nor swap the whole benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent / "rusage.py"
WATCH_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class Limits:
    """When the watchdog stops a command."""

    seconds: float
    rss_mib: float


@dataclass(frozen=True)
class Run:
    """One finished command."""

    exit_code: int | None  # None: stopped by the watchdog, or it could not be measured
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    stopped: str | None
    log: Path

    def tail(self, lines: int = 6) -> str:
        """The last lines of the command's output, for an error message."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])


def run(
    command: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path, limits: Limits
) -> Run:
    """Run ``command`` to its end (or the watchdog's), its stdout and stderr going to ``log``."""
    report = log.with_name(log.name + ".rusage.json")
    launcher = [sys.executable, "-S", str(LAUNCHER), str(report), "--", *command]
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            launcher, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        stopped = _watch(process, started, limits)
    return _result(report, log, stopped, time.perf_counter() - started)


def _watch(process: subprocess.Popen[bytes], started: float, limits: Limits) -> str | None:
    """Wait for the launcher; kill its process group when it passes a limit, and say why."""
    while True:
        try:
            process.wait(WATCH_INTERVAL_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        reason = None
        if time.perf_counter() - started > limits.seconds:
            reason = f"stopped after {limits.seconds:.0f} s (the time limit)"
        elif resident_mib(process.pid) > limits.rss_mib:
            reason = f"stopped above {limits.rss_mib:.0f} MiB resident (the memory limit)"
        if reason is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return reason


def _result(report: Path, log: Path, stopped: str | None, elapsed: float) -> Run:
    try:
        measured = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        reason = stopped or "the launcher reported nothing"
        return Run(None, elapsed, 0.0, 0.0, reason, log)
    return Run(
        exit_code=measured["exit_code"],
        seconds=measured["seconds"],
        cpu_seconds=measured["cpu_seconds"],
        peak_rss_mib=measured["peak_rss_kib"] / 1024,  # Linux reports KiB
        stopped=stopped,
        log=log,
    )


def resident_mib(pid: int) -> float:
    """Resident memory of process ``pid`` and its children, in MiB (0 once gone)."""
    return sum(_vm_rss_kib(each) for each in (pid, *_children(pid))) / 1024


def _children(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in listed.split()]


def _vm_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
