"""Config: the documented defaults, clear errors, and credentials from the environment only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_toml_shows_exactly_the_defaults():
    """configs/default.toml documents every option with its real default."""
    assert load_config(ROOT / "configs" / "default.toml") == Config()


def test_demo_toml_is_valid():
    """configs/demo.toml loads."""
    assert load_config(ROOT / "configs" / "demo.toml").batching.batch_size == 250


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[batching]\nbatch_size = 1001\n", "batching.batch_size"),
        ("[engage]\napi_key = 'secret'\n", "engage.api_key"),
        ("[columns]\nKundnr = 'customer'\n", "unknown field"),
        ("not toml = = 1", "can't be read"),
    ],
)
def test_bad_config_is_a_one_line_config_error(tmp_path, text, says):
    """Over-large batches, unknown keys (a key in the file too), bad mappings, bad TOML."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    """--config naming no file: ConfigError."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
