"""The request rate: at most ``rate`` requests in any window of a second, adaptive.

A sliding-window log: a request may start when fewer than ``rate`` started in the last
second (plus a margin for the network's and the scheduler's jitter), so the limit holds in
every window, not just on average; and requests are spaced evenly, never sent in a burst, so
that a late one cannot crowd the next second at the server. On a 429 the rate halves and
requests pause for the Retry-After; each success then adds a step back up to the configured
maximum (additive increase, multiplicative decrease, as in TCP and Vector's adaptive request
concurrency).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 1.0
MARGIN_S = (
    0.05  # 5 %: the busiest second Engage sees stays at the limit (measured: 0.02 was too little)
)
FLOOR_RPS = 1.0


class RateLimiter:
    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = MARGIN_S,
    ) -> None:
        self.max_rps = max(FLOOR_RPS, max_rps)
        self.rate = self.max_rps
        self._clock = clock
        self._margin = margin_s
        self._starts: deque[float] = deque()
        self._next = 0.0  # the earliest the next request may start: even spacing
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def acquire(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Wait for a slot, then take it."""
        with self._cond:
            while True:
                now = self._clock()
                wait = self._wait(now)
                if wait <= 0:
                    self._starts.append(now)
                    spacing = (WINDOW_S + self._margin) / self.rate
                    # a thread that woke up a little late keeps to the schedule (up to a
                    # quarter of the spacing), or the delays add up and the rate falls behind
                    self._next = max(self._next, now - spacing / 4) + spacing
                    return
                if stopping():
                    return
                self._cond.wait(min(wait, 0.5))

    def _wait(self, now: float) -> float:
        allowed = max(1, int(self.rate))
        while self._starts and now - self._starts[0] >= WINDOW_S + self._margin:
            self._starts.popleft()
        pause = max(self._paused_until, self._next) - now
        if len(self._starts) < allowed:
            return pause
        return max(pause, self._starts[-allowed] + WINDOW_S + self._margin - now)

    def throttled(self, retry_after: float | None) -> None:
        """A 429: halve the rate; pause everyone for the Retry-After, if given."""
        with self._cond:
            self.rate = max(FLOOR_RPS, self.rate / 2)
            if retry_after:
                self._paused_until = max(self._paused_until, self._clock() + retry_after)

    def succeeded(self) -> None:
        """A success: climb back towards the maximum, a twentieth of it at a time per second."""
        with self._cond:
            if self.rate < self.max_rps:
                self.rate = min(self.max_rps, self.rate + self.max_rps / (20 * max(self.rate, 1)))
                self._cond.notify_all()
