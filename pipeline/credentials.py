"""Where Engage is and the key to it: read from the environment, never from a file or a flag,
and the base URL checked as the client will read it (so a bad one is exit 2 before anything
is read, not an error at the first request)."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from pipeline.config import EngageConfig
from pipeline.errors import ConfigError


class Credentials(BaseModel):
    """Where Engage is and the key to it, read from the environment."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    api_key: SecretStr


def credentials_from_env(cfg: EngageConfig, env: dict[str, str] | None = None) -> Credentials:
    """Read the base URL and API key from the variables the config names."""
    env = dict(os.environ) if env is None else env
    base_url = env.get(cfg.base_url_env, "").strip().rstrip("/")
    api_key = env.get(cfg.api_key_env, "").strip()
    if not base_url:
        raise ConfigError(
            f"{cfg.base_url_env} is not set; export the Engage base URL, e.g. "
            "https://mytenant.voyado.com"
        )
    if not api_key:
        raise ConfigError(f"{cfg.api_key_env} is not set; export the Engage API key")
    if not (api_key.isascii() and api_key.isprintable()):  # a header can't carry it
        raise ConfigError(
            f"{cfg.api_key_env} holds a character an HTTP header can't carry (not printable"
            " ASCII); check how it was exported"
        )
    check_base_url(base_url, cfg.base_url_env)
    return Credentials(base_url=base_url, api_key=SecretStr(api_key))


def check_base_url(url: str, name: str = "the base URL") -> None:
    """HTTPS is required, except on the loopback interface (the simulator)."""
    import httpx  # here: a validation without network does not need it

    try:
        parts = urlsplit(url)
        _ = parts.port  # in range
        httpx.URL(url)  # what the client will make of it
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError("it holds a space or a control character")
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigError(f"{name} is not a valid URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} is not an http(s) URL: {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"{name} must use https (plain http is allowed only on loopback): {url}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
