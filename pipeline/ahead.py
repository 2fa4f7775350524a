"""Ahead: an iterator's items produced by a thread of their own, so that the stages overlap
(reading the next piece while this one is checked; planning while sending)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], ahead: int, name: str = "ahead") -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``ahead`` in advance; an error in
    producing them is raised here, in order."""
    queue: Queue[tuple[bool, object]] = Queue(maxsize=ahead)
    quit_ = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not quit_.is_set():
                    try:
                        queue.put((True, item), timeout=0.1)
                        break
                    except Full:
                        continue
                if quit_.is_set():
                    return
            queue.put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put((False, exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if isinstance(item, BaseException):
                    raise item
                return
            yield item  # type: ignore[misc]
    finally:
        quit_.set()
        thread.join(timeout=5)


def mapped(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` threads, the results in order, at most ``workers``
    items ahead of the consumer (memory stays bounded)."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
