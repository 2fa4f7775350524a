"""The CLI: help for every command, exit codes, one-line errors, the key never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import app, cli
from pipeline.simulator.fixture import contact_id

COMMANDS = sorted(app.commands)


def test_the_commands_are_the_documented_ones():
    """run, validate, simulate and demo exist."""
    assert {"run", "validate", "simulate", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    """`points-import COMMAND --help` exits 0 and explains the command."""
    assert cli([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and len(out.splitlines()) > 3


def test_usage_errors_exit_2(capsys):
    """An unknown flag or a batch size over 1000 is a usage error: exit 2."""
    assert cli(["run", "x.csv", "--nope"]) == 2
    assert cli(["run", "x.csv", "--batch-size", "1001"]) == 2
    assert "1001" in capsys.readouterr().err
    assert cli(["simulate", "--port", "99999"]) == 2  # was an internal error, exit 1
    assert "99999" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-rps", "nan"), ("--max-rps", "inf"), ("--idempotency-window", "nan")],
)
def test_a_flag_that_is_no_finite_number_exits_2(flag, value, tmp_path, capsys):
    """NaN would make the limiter crawl at one request a second; infinity crash it."""
    path = tmp_path / "in.csv"
    path.write_text(f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\n")
    assert cli(["run", "--dry-run", str(path), flag, value]) == 2
    assert f"{flag}: Input should be a finite number, not {value}" in capsys.readouterr().err


def test_run_without_credentials_exits_2_before_sending(tmp_path, monkeypatch, capsys):
    """No ENGAGE_BASE_URL: exit 2 with the variable's name."""
    monkeypatch.delenv("ENGAGE_BASE_URL", raising=False)
    path = tmp_path / "in.csv"
    path.write_text(f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\n")
    assert cli(["run", str(path)]) == 2
    assert "ENGAGE_BASE_URL is not set" in capsys.readouterr().err


def test_validate_needs_no_network_and_reports_invalid_rows(tmp_path, monkeypatch, capsys):
    """validate: exit 3 with the bad row in the rejects, no credentials needed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENGAGE_BASE_URL", raising=False)
    (tmp_path / "in.csv").write_text(
        "contactId,amount,definitionId,source,description\n"
        f"{contact_id(1)},1,1,s,d\nnot-a-guid,1,1,s,d\n"
    )
    assert cli(["validate", "in.csv", "--summary", "out/s.json"]) == 3
    summary = json.loads((tmp_path / "out" / "s.json").read_text())
    assert (summary["rows_valid"], summary["rows_invalid"]) == (1, 1)
    assert (tmp_path / "out" / "in.rejects.csv").read_text().count("\n") == 2


def test_a_command_without_engage_imports_no_client_and_a_clean_one_no_pandera(tmp_path):
    """Start-up counts: validate (no network) loads no HTTP client; with every row valid, no
    pandera either (it only says why rows failed). Checked in a fresh interpreter."""
    from tests.conftest import ROOT

    rows = "".join(f"{contact_id(i)},{i},1,s,d\n" for i in range(1, 4))
    (tmp_path / "in.csv").write_text("contactId,amount,definitionId,source,description\n" + rows)
    probe = (
        "import sys; from pipeline.cli import cli; code = cli(sys.argv[1:]); "
        "print(sorted(m for m in ('httpx', 'pandera') if m in sys.modules)); sys.exit(code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "validate", str(tmp_path / "in.csv")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_api_key_is_never_printed_or_written(simulator, run_cli, tmp_path):
    """With a secret key, a run's output, summary and rejects never contain it."""
    sim = simulator(api_key="TopSecretKey-123")
    (tmp_path / "in.csv").write_text(
        f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\nbad,1,1,s,d\n"
    )
    result = run_cli(
        "--debug",
        "run",
        "in.csv",
        "--summary",
        "s.json",
        sim=sim,
        key="TopSecretKey-123",
        config="[logging]\nlevel = 'debug'\n",
    )
    assert result.code == 3, result.err
    written = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert "TopSecretKey-123" not in result.out + result.err + written


def test_python_dash_m_runs_the_demo_as_a_real_process(tmp_path):
    """`python -m pipeline demo` in a subprocess: exit 0, the summary written, no traceback."""
    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows_read"] == summary["rows_accepted"] + summary["rows_rejected"]
    assert "now holds 4000 transactions" in proc.stderr


@pytest.mark.parametrize("flag", ["--rejects", "--summary"])
def test_a_report_that_cant_be_written_exits_2_before_sending(flag, simulator, run_cli, tmp_path):
    sim = simulator()
    (tmp_path / "in.csv").write_text(
        f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\n"
    )
    (tmp_path / "a-file").write_text("")
    result = run_cli("run", "in.csv", flag, "a-file/report", sim=sim)
    assert result.code == 2, result.err
    assert "can't go to a-file/" in result.err
    assert not sim.store.requests


@pytest.mark.parametrize("flag", ["--rejects", "--summary"])
@pytest.mark.parametrize("target", ["in.csv", "./in.csv", "/dev/null"])
def test_a_report_never_replaces_the_input_or_a_device(flag, target, simulator, run_cli, tmp_path):
    """`--rejects in.csv in.csv` would overwrite the file being imported: exit 2, unsent."""
    sim = simulator()
    text = f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\n"
    (tmp_path / "in.csv").write_text(text)
    result = run_cli("run", "in.csv", flag, target, sim=sim)
    assert result.code == 2, result.err
    assert "which is the input or not a file" in result.err
    assert not sim.store.requests and (tmp_path / "in.csv").read_text() == text
    assert Path("/dev/null").is_char_device()


def test_rejects_and_summary_may_not_be_one_file(simulator, run_cli, tmp_path):
    sim = simulator()
    (tmp_path / "in.csv").write_text(
        f"contactId,amount,definitionId,source,description\n{contact_id(1)},1,1,s,d\n"
    )
    result = run_cli("run", "in.csv", "--rejects", "out.csv", "--summary", "./out.csv", sim=sim)
    assert (result.code, "are the same file" in result.err) == (2, True)
    assert not sim.store.requests


def test_a_missing_input_is_said_so_even_with_a_report_in_place(run_cli, tmp_path):
    """Not an internal error while checking whether the report would replace the input."""
    (tmp_path / "in.rejects.csv").write_text("old\n")
    result = run_cli("run", "--dry-run", "in.csv", "--rejects", "in.rejects.csv")
    assert result.code == 2 and "internal error" not in result.err, result.err
