"""Injected faults and the rate limit: the simulator's ways of saying no."""

from __future__ import annotations

import random
from collections import deque
from decimal import Decimal
from typing import Literal

from pipeline.simulator.config import FaultConfig

FailMode = Literal["500", "drop"]


class FaultInjector:
    """Draws, per POST, whether to fail it and how; reproducible when the config has a seed."""

    def __init__(self, config: FaultConfig) -> None:
        self.replace(config)

    def replace(self, config: FaultConfig) -> None:
        """Switch to ``config`` and restart its random sequence."""
        self.config = config
        self._random = random.Random(config.seed)

    def draw_error(self) -> int | None:
        """The status to answer without applying anything, or None to go on."""
        roll = self._random.random()
        for status, rate in sorted(self.config.error_rates.items()):
            roll -= rate
            if roll < 0:
                return status
        return None

    def draw_apply_then_fail(self) -> FailMode | None:
        """How to fail a POST that was just committed, or None to answer normally."""
        if self._random.random() >= self.config.apply_then_fail_rate:
            return None
        mode = self.config.apply_then_fail_mode
        return self._random.choice(("500", "drop")) if mode == "mixed" else mode

    def retry_after(self) -> str:
        """The Retry-After value: whole seconds as an integer, else a decimal."""
        seconds = self.config.retry_after_seconds
        return str(int(seconds)) if seconds.is_integer() else format(Decimal(str(seconds)), "f")

    def latency_seconds(self) -> float:
        return self.config.latency_ms / 1000


class RateLimiter:
    """Admits at most ``rps`` requests in any 1-second sliding window (None = no limit)."""

    def __init__(self, rps: float | None) -> None:
        self.rps = rps
        self._admitted: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Count a request arriving at monotonic time ``now``; False means 429."""
        if self.rps is None:
            return True
        while self._admitted and now - self._admitted[0] >= 1.0:
            self._admitted.popleft()
        if len(self._admitted) + 1 > self.rps:
            return False
        self._admitted.append(now)
        return True

    def reset(self) -> None:
        self._admitted.clear()
