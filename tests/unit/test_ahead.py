"""Ahead: a producer thread's items in order, a pool's results in order, errors in place."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.ahead import mapped, prefetched


def test_prefetched_keeps_order_and_raises_the_producers_error_in_place():
    """Items come in order from the producer thread; its error is raised after them."""

    def produce():
        yield from range(100)
        raise ValueError("piece 3 is broken")

    got: list[int] = []
    with pytest.raises(ValueError, match="piece 3"):
        for item in prefetched(produce(), 8):
            got.append(item)
    assert got == list(range(100))


def test_mapped_keeps_order_whatever_finishes_first():
    """Later items may finish first (they sleep less): the results still come in order, from
    more than one thread."""
    threads: set[str] = set()

    def slow_then_fast(i: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.02 * (i % 3 == 0))
        return i * i

    assert list(mapped(slow_then_fast, range(30), 2, "t")) == [i * i for i in range(30)]
    assert len(threads) == 2


def test_mapped_raises_a_workers_error_and_stops():
    """A worker's error comes out at its item, after the results before it."""

    def broken_at_5(i: int) -> int:
        if i == 5:
            raise RuntimeError("item 5")
        return i

    got: list[int] = []
    with pytest.raises(RuntimeError, match="item 5"):
        for value in mapped(broken_at_5, range(100), 2, "t"):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]
