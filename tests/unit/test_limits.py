"""The rate limiter, on a fake clock: never more than the rate in any second, evenly spaced,
slower after a 429, and back up after successes."""

from __future__ import annotations

import itertools

import pytest

from pipeline.limits import MARGIN_S, RateLimiter


class Clock:
    """A clock the limiter's waits move forward (its Condition.wait is replaced)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    lim = RateLimiter(rate, clock=clock)

    def wait(timeout: float | None = None) -> bool:
        clock.now += timeout or 0.0
        return True

    lim._cond.wait = wait  # type: ignore[method-assign]
    return lim, clock


def run(lim: RateLimiter, clock: Clock, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        lim.acquire()
        starts.append(clock.now)
    return starts


def busiest(starts: list[float]) -> int:
    return max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)


def test_never_more_than_the_rate_in_any_second_and_evenly_spaced():
    """300 requests at 50/s: at most 50 in any second, about (1 + margin)/50 apart."""
    lim, clock = limiter(50)
    starts = run(lim, clock, 300)
    assert busiest(starts) <= 50
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= (1 + MARGIN_S) / 50 - 1e-9
    assert 300 / (starts[-1] - starts[0] + (1 + MARGIN_S) / 50) >= 0.95 * 50


def test_threads_waking_late_do_not_slow_the_rate():
    """Each wait overshoots by 2 ms (a busy machine): the rate holds, and so does the limit."""
    lim, clock = limiter(50)

    def late(timeout: float | None = None) -> bool:
        clock.now += (timeout or 0.0) + 0.002
        return True

    lim._cond.wait = late  # type: ignore[method-assign]
    starts = run(lim, clock, 500)
    assert busiest(starts) <= 50
    assert 500 / (starts[-1] - starts[0]) >= 0.95 * 50


def test_a_429_halves_the_rate_and_pauses_for_retry_after():
    """After a 429 with Retry-After 2: nothing for 2 s, then half the rate."""
    lim, clock = limiter(40)
    run(lim, clock, 5)
    lim.throttled(2.0)
    paused_at = clock.now
    starts = run(lim, clock, 60)
    assert starts[0] >= paused_at + 2.0
    assert lim.rate == 20
    assert busiest(starts) <= 20


def test_successes_climb_back_to_the_maximum():
    """After a halving, successes add back a twentieth of the maximum per second of them."""
    lim = limiter(40)[0]
    lim.throttled(None)
    for _ in range(2000):
        lim.succeeded()
    assert lim.rate == 40


def test_a_request_written_late_counts_from_when_it_was_written():
    """Granted at 0 but written at 0.9 (a busy CPU): the request after the next one waits
    for a second after it left, so the server never sees three in one second."""
    lim, clock = limiter(2)
    first = lim.acquire()
    second = lim.acquire()
    assert first is not None and second is not None
    clock.now = 0.9
    lim.sent(first)
    third = lim.acquire()
    assert third == pytest.approx(second + 1 + MARGIN_S)
    assert lim.acquire() >= 0.9 + 1 + MARGIN_S  # a second after the first left


def test_a_request_stopped_while_it_waits_gets_no_slot():
    """A stop while waiting for a slot: None, and nothing is counted."""
    lim = limiter(1)[0]
    assert lim.acquire() is not None
    assert lim.acquire(stopping=lambda: True) is None
    assert len(lim._starts) == 1


def test_a_request_held_up_past_the_window_still_counts_when_written():
    """Granted, then held 1.5 s (its grant left the window): written now, it counts now."""
    lim, clock = limiter(2)
    held = lim.acquire()
    assert held is not None
    clock.now = 1.5
    lim.acquire()
    lim.sent(held)
    assert len(lim._starts) == 2 and lim._starts[-1] == 1.5
    assert lim.acquire() >= 1.5 + 1 + MARGIN_S  # two in the window: the third waits
