"""The Engage simulator: a second, independent implementation of Voyado Engage's point-account
API, for integration tests and ``points-import demo``. It imports nothing from the rest of
``pipeline``. The server parts (starlette, uvicorn) load on first use, so a command that only
needs the config does not pay for them."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipeline.simulator.config import FaultConfig, SimulatorConfig

if TYPE_CHECKING:
    from pipeline.simulator.app import create_app
    from pipeline.simulator.server import SimulatorServer, serve

__all__ = ["FaultConfig", "SimulatorConfig", "SimulatorServer", "create_app", "serve"]
_LAZY = {
    "create_app": "pipeline.simulator.app",
    "SimulatorServer": "pipeline.simulator.server",
    "serve": "pipeline.simulator.server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
