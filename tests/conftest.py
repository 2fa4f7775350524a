"""Shared fixtures: the simulator as a real server on loopback, and the CLI run in-process."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import cli
from pipeline.model import FIELDS
from pipeline.simulator import SimulatorConfig, SimulatorServer

csv.field_size_limit(2**31 - 1)  # the rejects of a 10 MB field hold it

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions.csv"
FAST_RETRY = """
[retry]
max_attempts = 30
initial_wait = 0.01
max_wait = 0.05
max_retry_after = 0.05
"""


@dataclass
class Result:
    code: int
    out: str
    err: str
    workdir: Path

    def summary(self, name: str = "summary.json") -> dict[str, Any]:
        return json.loads((self.workdir / name).read_text())

    def rejects(self, name: str) -> list[dict[str, str]]:
        with (self.workdir / name).open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators on loopback with the given settings; all are stopped afterwards."""
    started: list[SimulatorServer] = []

    def start(**settings: Any) -> SimulatorServer:
        server = SimulatorServer(SimulatorConfig.model_validate(settings))
        started.append(server.__enter__())
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """Run ``points-import ARGS`` in-process in tmp_path, against ``sim`` when given."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENGAGE_BASE_URL", raising=False)
    monkeypatch.delenv("ENGAGE_API_KEY", raising=False)

    def run(
        *args: str, sim: SimulatorServer | None = None, key: str = "sim-key", config: str = ""
    ) -> Result:
        argv = list(args)
        if sim is not None:
            monkeypatch.setenv("ENGAGE_BASE_URL", sim.url)
            monkeypatch.setenv("ENGAGE_API_KEY", key)
        if config:
            path = tmp_path / "test-config.toml"
            path.write_text(config)
            command = next(i for i, a in enumerate(argv) if not a.startswith("-"))
            argv[command + 1 : command + 1] = ["--config", str(path)]
        code = cli(argv)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, tmp_path)

    return run


def stored(sim: SimulatorServer) -> list[dict[str, Any]]:
    """Every transaction the simulator holds, as records."""
    return [t.record() for t in sim.store.transactions]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    header = list(FIELDS)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{**dict.fromkeys(header, ""), **r} for r in rows])
    return path
