"""Integration fixtures: a simulator that kills the client process at a chosen request."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from pipeline.simulator import SimulatorConfig, SimulatorServer


class Killer:
    """ASGI middleware: signal the client process at the k-th POST, before the simulator
    handles it (the request is in flight) or after it answered."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pid = 0
        self.at = 0
        self.when = "before"
        self.sig = signal.SIGKILL
        self.posts = 0

    def arm(self, pid: int, at: int, when: str, sig: int = signal.SIGKILL) -> None:
        self.pid, self.at, self.when, self.sig, self.posts = pid, at, when, sig, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        post = scope["type"] == "http" and scope["method"] == "POST"
        self.posts += post
        hit = post and self.pid and self.posts == self.at
        if hit and self.when == "before":
            os.kill(self.pid, self.sig)
        await self.app(scope, receive, send)
        if hit and self.when == "after":
            os.kill(self.pid, self.sig)


@pytest.fixture
def killable(request):
    """A simulator behind a Killer; settings via indirect parametrization or defaults."""
    settings = getattr(request, "param", {})
    killers: list[Killer] = []

    def wrap(app: Any) -> Any:
        killers.append(Killer(app))
        return killers[-1]

    server = SimulatorServer(SimulatorConfig.model_validate(settings), wrap=wrap)
    with server:
        yield server, killers[0]
