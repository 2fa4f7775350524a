"""Running the simulator on a real socket: ``SimulatorServer`` (a thread, for tests and the demo)
and ``serve`` (blocking, for ``points-import simulate``)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from pipeline.simulator.app import create_app
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.store import Store

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 5.0
_DROP_MESSAGE = "ASGI callable returned without completing response."


class SimulatorServer:
    """The simulator served by uvicorn in a daemon thread, as a context manager.

    ``with SimulatorServer(config) as sim: httpx.get(f"{sim.url}/...")``. With ``port=0`` the
    system picks a free port; ``url`` has the real one once the server has started.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self.app: Starlette = create_app(config)
        self.store: Store = self.app.state.store
        self.url = ""
        served: ASGIApp = wrap(self.app) if wrap else self.app  # e.g. a test's middleware
        self._server = uvicorn.Server(_uvicorn_config(served, host, port))
        self._thread = threading.Thread(
            target=self._server.run, name="engage-simulator", daemon=True
        )

    def __enter__(self) -> SimulatorServer:
        self._thread.start()
        self._wait_until_started()
        self.url = _url(self._server)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)

    def _wait_until_started(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                where = f"{self._server.config.host}:{self._server.config.port}"
                raise RuntimeError(f"the Engage simulator did not start on {where}; see the log")
            time.sleep(0.01)


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the simulator in this thread; returns after Ctrl-C. On SIGTERM uvicorn shuts down
    gracefully, then re-raises the signal, so the process ends as killed by SIGTERM."""
    server = _AnnouncingServer(_uvicorn_config(create_app(config), host, port))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints one line once it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"Engage simulator listening on {_url(self)} (api key from config)", flush=True)


def _url(server: uvicorn.Server) -> str:
    """The address the server really listens on (the bound port when 0 was asked)."""
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    config = uvicorn.Config(app, host, port, http="h11", lifespan="off", log_level="warning")
    _quiet_dropped_responses()
    return config


def _quiet_dropped_responses() -> None:
    """Hide uvicorn's error line for the responses the simulator drops on purpose."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(known, _DropFilter) for known in logger.filters):
        logger.addFilter(_DropFilter())


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROP_MESSAGE
