"""The Python API against the simulator: the same summary as the command, errors raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.api import ImportAborted, Summary, run_import
from pipeline.config import load_config
from pipeline.errors import ConfigError, InputError
from tests.conftest import FAST_RETRY, SAMPLE, stored

VOLATILE = ("started_at", "duration_s", "import_id", "input", "rejects_path")


def _same(a: dict, b: dict) -> dict:
    return {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }


def test_run_import_returns_the_summary_the_command_writes(simulator, run_cli, tmp_path):
    """The same file through ``run_import`` and through ``points-import run``, each into its
    own simulator: the same counts, points and exit code; the rejects report written."""
    by_cli, by_api = simulator(), simulator()
    cli = run_cli("run", str(SAMPLE), "--summary", "cli/summary.json", sim=by_cli)
    env = {"ENGAGE_BASE_URL": by_api.url, "ENGAGE_API_KEY": "sim-key"}
    summary = run_import(
        SAMPLE, summary=tmp_path / "api/summary.json", state_dir=tmp_path / "api-state", env=env
    )
    assert isinstance(summary, Summary) and summary.exit_code == cli.code == 3
    assert _same(summary.data, cli.summary("cli/summary.json"))
    assert json.loads((tmp_path / "api/summary.json").read_text()) == summary.data
    assert summary.rejects_path == tmp_path / "api" / "transactions.rejects.csv"
    assert summary.rejects_path.is_file() and summary.rows_rejected > 0
    assert len(stored(by_api)) == len(stored(by_cli)) == summary.rows_accepted


def test_an_unreachable_engage_raises_import_aborted_with_the_summary(tmp_path):
    """Exit 1 of the command is ``ImportAborted``; its summary and reports are there."""
    config = tmp_path / "c.toml"
    retry = FAST_RETRY.replace("max_attempts = 30", "max_attempts = 2")
    config.write_text("[engage]\ncheck_definitions = false\n" + retry)
    env = {"ENGAGE_BASE_URL": "http://127.0.0.1:9", "ENGAGE_API_KEY": "k"}
    cfg = load_config(config)
    with pytest.raises(ImportAborted) as caught:
        run_import(SAMPLE, cfg, state_dir=tmp_path / "s", rejects=tmp_path / "r.csv", env=env)
    assert caught.value.exit_code == 1 and caught.value.summary.status == "aborted"
    assert caught.value.summary.rows_accepted == 0 and (tmp_path / "r.csv").is_file()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"input": "missing.csv"}, InputError), ({"max_rps": 0}, ConfigError)],
)
def test_what_the_command_exits_2_for_is_raised(tmp_path, monkeypatch, kwargs, error):
    """A missing file, a bad setting: the documented error, nothing sent, no exit."""
    monkeypatch.chdir(tmp_path)
    args = {"input": SAMPLE, "offline": True, **kwargs}
    with pytest.raises(error):
        run_import(**args)


def test_offline_validates_without_network(tmp_path):
    """``offline=True`` is ``points-import validate``: no key needed, rows checked."""
    summary = run_import(SAMPLE, offline=True, rejects=tmp_path / "r.csv")
    assert summary.status == "dry run" and summary.rows_read > 0
    assert summary.exit_code == 3 and Path(tmp_path / "r.csv").is_file()


def test_an_engage_down_before_any_row_is_import_aborted_too(tmp_path):
    """Engage unreachable when the point definitions are read: ImportAborted (exit 1), with
    no summary, not a bare EngageError."""
    config = tmp_path / "c.toml"
    config.write_text(FAST_RETRY.replace("max_attempts = 30", "max_attempts = 2"))
    env = {"ENGAGE_BASE_URL": "http://127.0.0.1:9", "ENGAGE_API_KEY": "k"}
    with pytest.raises(ImportAborted) as caught:
        run_import(SAMPLE, config, state_dir=tmp_path / "s", env=env)
    assert caught.value.summary is None and caught.value.exit_code == 1


@pytest.mark.parametrize("size", [5000, 0, -5])
def test_a_bad_batch_size_is_a_config_error_that_leaves_the_journal_usable(
    simulator, tmp_path, size
):
    sim = simulator()
    env = {"ENGAGE_BASE_URL": sim.url, "ENGAGE_API_KEY": "sim-key"}
    with pytest.raises(ConfigError, match="batch-size"):
        run_import(SAMPLE, batch_size=size, state_dir=tmp_path / "s", env=env)
    done = run_import(SAMPLE, state_dir=tmp_path / "s", rejects=tmp_path / "r.csv", env=env)
    assert done.rows_accepted == len(stored(sim)) > 0
