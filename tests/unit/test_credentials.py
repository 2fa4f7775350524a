"""Credentials: from the environment only, the key never shown, the base URL checked."""

from __future__ import annotations

import pytest

from pipeline.config import Config
from pipeline.credentials import check_base_url, credentials_from_env
from pipeline.errors import ConfigError


def test_credentials_come_from_the_named_variables_and_hide_the_key():
    """The key is read from the environment and masked in repr."""
    cfg = Config().engage
    creds = credentials_from_env(
        cfg, {"ENGAGE_BASE_URL": "https://t.voyado.com/", "ENGAGE_API_KEY": "s3cret"}
    )
    assert creds.base_url == "https://t.voyado.com"
    assert creds.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)


@pytest.mark.parametrize("env", [{}, {"ENGAGE_BASE_URL": "https://t.voyado.com"}])
def test_missing_credentials_say_which_variable(env):
    """An unset variable is named in the error."""
    with pytest.raises(ConfigError, match="ENGAGE_"):
        credentials_from_env(Config().engage, env)


@pytest.mark.parametrize("key", ["kéy", "line\nbreak", "tab\tin"])
def test_a_key_no_header_can_carry_is_a_config_error_naming_the_variable(key):
    """Was an internal error (non-ASCII) or minutes of retries (a line break); never shown."""
    env = {"ENGAGE_BASE_URL": "https://t.voyado.com", "ENGAGE_API_KEY": key}
    with pytest.raises(ConfigError, match="ENGAGE_API_KEY holds a character") as caught:
        credentials_from_env(Config().engage, env)
    assert key not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "https://t.voyado.com"]
)
def test_https_or_loopback_is_allowed(url):
    """HTTPS anywhere, plain HTTP on loopback only."""
    check_base_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "https://exa mple.com", "https://t.voyado.com:99999", "https://t\x00.com"],
)
def test_a_malformed_base_url_is_a_config_error(url):
    """Not an internal error at the first request: exit 2 before anything is read."""
    with pytest.raises(ConfigError, match="not a valid URL"):
        check_base_url(url)


@pytest.mark.parametrize("url", ["http://t.voyado.com", "ftp://x", "t.voyado.com"])
def test_plain_http_elsewhere_is_refused(url):
    """No API key goes over plain HTTP to another machine."""
    with pytest.raises(ConfigError):
        check_base_url(url)
