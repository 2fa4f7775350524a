"""The request rate: at most ``rate`` requests in any window of a second, adaptive.

A sliding-window log: a request may start when fewer than ``rate`` started in the last
second (plus a margin for the network's jitter), so the limit holds in every window, not just
on average; and requests are spaced evenly, never sent in a burst. A request is logged when
its slot is granted, and again when it has been written (``sent``): one held up between the
two (a busy CPU, a journal write) counts from when it left, so that it cannot crowd the next
second at the server with the ones granted after it. On a 429 the rate halves and
requests pause for the Retry-After; each success then adds a step back up to the configured
maximum (additive increase, multiplicative decrease, as in TCP and Vector's adaptive request
concurrency).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

WINDOW_S = 1.0
MARGIN_S = 0.05  # 5 % for the server's jitter (at 3-4 %, the simulator saw 51-53 a second at 50/s)
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
        self._starts: list[float] = []  # when each request of the last window left, sorted
        self._next = 0.0  # the earliest the next request may start: even spacing
        self._paused_until = 0.0
        self._cond = threading.Condition()
        self._turn = threading.Lock()  # held by the one thread waiting for the next slot

    def acquire(self, stopping: Callable[[], bool] = lambda: False) -> float | None:
        """Wait for a slot, then take it: its stamp, for ``sent``; None if ``stopping`` said
        so first. One thread at a time waits for the next slot; the others wait their turn
        without waking up for each slot (on a small machine, a herd of waking threads costs
        more than the requests)."""
        while not self._turn.acquire(timeout=0.5):
            if stopping():
                return None
        try:
            return self._take(stopping)
        finally:
            self._turn.release()

    def _take(self, stopping: Callable[[], bool]) -> float | None:
        with self._cond:
            while True:
                now = self._clock()
                wait = self._wait(now)
                if wait <= 0:
                    self._starts.append(now)  # the latest: no stamp is later than now
                    spacing = (WINDOW_S + self._margin) / self.rate
                    # a thread that woke up a little late keeps to the schedule (up to a quarter
                    # of the spacing: more sends pairs back to back), or the delays add up
                    self._next = max(self._next, now - spacing / 4) + spacing
                    return now
                if stopping():
                    return None
                self._cond.wait(min(wait, 0.5))

    def sent(self, stamp: float) -> None:
        """The request granted at ``stamp`` has been written: it counts from now on."""
        with self._cond:
            at = bisect.bisect_left(self._starts, stamp)
            if at < len(self._starts) and self._starts[at] == stamp:
                del self._starts[at]
            # held up past the window, its grant was dropped: it counts from now all the same
            bisect.insort(self._starts, max(stamp, self._clock()))

    def _wait(self, now: float) -> float:
        allowed = max(1, int(self.rate))
        del self._starts[: bisect.bisect_right(self._starts, now - WINDOW_S - self._margin)]
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
