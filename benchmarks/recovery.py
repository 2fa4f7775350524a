"""Recovery after a crash (issue #18): an import killed just after its third request reached
Engage, then run again, with Engage's memory of its keys gone or not.

The file: ``rows`` rows on ``contacts`` contacts and three point definitions drawn at random
(each row its own description). Engage: the simulator, served in this process with
``LATENCY_MS`` added to each request and keys kept ``KEY_WINDOW_S``, behind a middleware that
kills the import (SIGKILL) just after its third POST has arrived whole and notes the key of
every POST that arrived. The import runs at ``--max-rps rps`` with ``--concurrency`` enough
for that rate at that latency.

- ``recovery-expired``: the re-run starts once Engage has forgotten the keys, so what was in
  flight is settled by GETs. Its GETs are counted against the accounts that the POSTs which
  reached Engage touch (whole or in part: one being written when the process died may have
  been applied as far as the client can tell), and its wall time against what those GETs and
  its own POSTs need at the rate limit, plus start-up (a dry run of the same file: reading,
  checking, planning).
- ``recovery-window``: the re-run starts at once: the keys are still known, so it sends
  again under them and reads nothing.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from benchmarks import simulator as sim
from benchmarks.runs import (
    Measurement,
    Settings,
    _imported,
    _join,
    _reports,
    _run,
    dry_run,
    environment,
)
from pipeline.simulator import SimulatorConfig, SimulatorServer

KEY_WINDOW_S = 2.0  # Engage's memory of a key here; the import is told 1 s
KILL_AT = 3  # the POST whose arrival (whole) kills the import
LATENCY_MS = 100.0  # the Engage stand-in


class Killer:
    """ASGI middleware: SIGKILL ``pid`` just after the ``at``-th POST has reached Engage whole;
    the key of every POST that reached it, whole or not, kept."""

    def __init__(self) -> None:
        self.app: Any = None
        self.pid, self.at, self.whole = 0, 0, 0
        self.keys: list[str] = []

    def wrapping(self, app: Any) -> Killer:
        self.app = app
        return self

    def arm(self, pid: int, at: int) -> None:
        self.pid, self.at, self.whole = pid, at, 0
        self.keys.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.keys += [v.decode() for k, v in scope["headers"] if k == b"idempotency-key"]

        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body"):
                self.whole += 1
                if self.pid and self.whole == self.at:
                    os.kill(self.pid, signal.SIGKILL)
            return message

        await self.app(scope, counted, send)


def input_file(path: Path, rows: int, contacts: int) -> Path:
    """Each row on a contact and a definition drawn at random (seeded): batches share
    accounts, as a night's receipts do."""
    draw = random.Random(18)
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"bench/recovery/{n}") for n in range(contacts)]
    with path.open("w", encoding="utf-8") as out:
        out.write("contactId,amount,definitionId,source,description\n")
        for n in range(rows):
            contact, definition = draw.choice(ids), draw.randint(1, 3)
            out.write(f"{contact},{n % 50 + 1},{definition},POS,receipt {n}\n")
    return path


def recovery(settings: Settings, rows: int, contacts: int, rps: int, expired: bool) -> Measurement:
    """One case against a fresh simulator; start-up measured as a dry run of the same file."""
    workdir = settings.scratch / "recovery"
    workdir.mkdir(parents=True, exist_ok=True)
    path = input_file(workdir / f"in-{rows}-{contacts}.csv", rows, contacts)
    return _case(path, rows, rps, settings, expired, dry_run(path, rows, settings))


def _case(
    path: Path, rows: int, rps: int, settings: Settings, expired: bool,
    startup: Measurement,
) -> Measurement:  # fmt: skip
    name = "recovery-expired" if expired else "recovery-window"
    workdir = settings.scratch / name
    workdir.mkdir(parents=True, exist_ok=True)
    in_flight = max(16, int(rps * LATENCY_MS / 1000 * 2))
    config = workdir / "config.toml"
    window = "[journal]\nidempotency_window = 1\n" if expired else ""  # ours: 1 s, not 23 h
    config.write_text(
        f"[engage]\nmax_requests_per_second = {rps}\nconcurrency = {in_flight}\n{window}"
    )
    command = [sim.points_import(), "run", str(path), "--config", str(config),
               *_reports(workdir), "--state-dir", str(workdir / "state")]  # fmt: skip
    killer = Killer()
    engage = SimulatorConfig.model_validate({
        "api_key": sim.API_KEY, "auto_create_contacts": True,
        "idempotency_window_seconds": KEY_WINDOW_S, "rate_limit_rps": rps,
        "faults": {"latency_ms": LATENCY_MS},
    })  # fmt: skip
    quiet = logging.getLogger("uvicorn.error")  # the killed import's cut-off request
    level, _ = quiet.level, quiet.setLevel(logging.CRITICAL)
    with SimulatorServer(engage, wrap=killer.wrapping) as server:
        env = environment({"ENGAGE_BASE_URL": server.url, "ENGAGE_API_KEY": sim.API_KEY})
        killed = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        killer.arm(killed.pid, KILL_AT)
        killed.wait(120)
        time.sleep(LATENCY_MS / 1000 + 0.5)  # every request it sent answered
        reached = len(killer.keys)
        touched = _accounts(path, workdir / "state" / "journal.sqlite", killer.keys)
        if expired:
            time.sleep(KEY_WINDOW_S)
        server.store.requests.clear()
        result = _run(command, workdir, settings, env)
        log = [r.record() for r in server.store.requests]
    quiet.setLevel(level)
    what = f"re-run after a crash, keys {'expired' if expired else 'known'}"
    measured = _imported(name, what, path, rows, result, workdir)
    gets = sum(r["method"] == "GET" for r in log)
    posts = sum(r["method"] == "POST" for r in log)
    needed = (startup.seconds or 0) + (gets + posts) / rps
    summary = measured.extra.get("summary", {})
    measured.extra |= {"killed_exit": killed.returncode, "gets": gets, "posts": posts,
                       "accounts_touched": len(touched), "needed_s": needed,
                       "startup_s": startup.seconds, "max_rps": rps,
                       "concurrency": in_flight}  # fmt: skip
    measured.note = _join(
        measured.note,
        f"{gets:,} GETs for {len(touched):,} accounts the {reached} POSTs that"
        f" reached Engage touch; {posts} POSTs; {summary.get('batches_settled', 0)} batches"
        f" settled; needed {needed:.1f} s",
    )
    return measured


def _accounts(path: Path, journal: Path, keys: list[str]) -> set[tuple[str, int]]:
    """The accounts that the batches sent under ``keys`` touch (their rows, from the file)."""
    with closing(sqlite3.connect(journal)) as db:
        spans = db.execute(
            f"SELECT first_row, last_row FROM batches WHERE key IN ({','.join('?' * len(keys))})",
            keys,
        ).fetchall()
    with path.open(encoding="utf-8") as file:
        rows = file.read().splitlines()[1:]  # sourceRow n is the n-th line after the header
    touched: set[tuple[str, int]] = set()
    for first, last in spans:
        for line in rows[first - 1 : last]:
            contact, _, definition = line.split(",")[:3]
            touched.add((contact.lower(), int(definition)))
    return touched
