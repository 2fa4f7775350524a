"""What a run prints: -v a line per batch, -q errors and the one-line outcome, the console's
level and colours."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from pipeline import logs
from tests.conftest import SAMPLE


def _events(err: str) -> list[str]:
    return [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]


def test_verbose_shows_a_line_per_batch_and_default_does_not(simulator, run_cli):
    """Each run into a simulator and a journal of its own: every batch sent is a line with -v,
    none without."""
    default = run_cli("run", str(SAMPLE), "--batch-size", "5", "--state-dir", "a",
                      "--summary", "a.json", sim=simulator())  # fmt: skip
    verbose = run_cli("run", str(SAMPLE), "--batch-size", "5", "--state-dir", "b",
                      "--summary", "b.json", "-v", sim=simulator())  # fmt: skip
    assert "batch posted" not in _events(default.err)
    posted = _events(verbose.err).count("batch posted")
    assert posted == verbose.summary("b.json")["batches_sent"] > 2
    assert "points-import completed" in default.err  # the table


def test_quiet_prints_the_outcome_line_only(simulator, run_cli):
    sim = simulator()
    quiet = run_cli("run", str(SAMPLE), "-q", sim=sim)
    lines = quiet.err.strip().splitlines()
    assert quiet.code == 3 and len(lines) == 1, quiet.err
    assert lines[0].startswith("points-import: ") and "rejected" in lines[0]
    assert "rejects.csv" in lines[0]


def test_quiet_still_prints_errors(run_cli):
    missing = run_cli("run", "missing.csv", "-q")
    assert missing.code == 2 and "error" in missing.err and len(missing.err.splitlines()) == 1


def test_verbose_and_quiet_together_are_a_usage_error(run_cli):
    assert run_cli("run", str(SAMPLE), "-v", "-q").code == 2


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [(0, ["warned", "failed"]), (1, ["debugged", "told", "warned", "failed"]), (-1, ["failed"])],
)
def test_a_console_shows_warnings_by_default(verbosity, shown, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    logs.configure("info", "auto", out, verbosity=verbosity)
    log = structlog.get_logger("t")
    log.debug("debugged")
    log.info("told")
    log.warning("warned")
    log.error("failed")
    text = out.getvalue()
    assert [e for e in ("debugged", "told", "warned", "failed") if e in text] == shown
    assert "\x1b[" not in text  # NO_COLOR: no escape codes
    logs.configure("info", "json")
    assert logging.getLevelName("INFO") == logging.INFO
