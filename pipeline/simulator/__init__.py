"""The Engage simulator: a second, independent implementation of Voyado Engage's point-account
API, for integration tests and ``points-import demo``. It imports nothing from the rest of
``pipeline``."""

from __future__ import annotations

from pipeline.simulator.app import create_app
from pipeline.simulator.config import FaultConfig, SimulatorConfig
from pipeline.simulator.server import SimulatorServer, serve

__all__ = ["FaultConfig", "SimulatorConfig", "SimulatorServer", "create_app", "serve"]
