"""The limiter, as the server sees it: requests sent by the client's threads through one
keep-alive pool to the benchmark sink (a real server on loopback that stamps arrivals) never
number more than the limit in any one-second window."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.simulator import _busiest_second
from benchmarks.sink import Sink
from pipeline.engage import EngageClient, RetryPolicy
from pipeline.limits import RateLimiter

BODY = b'[{"contactId":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}]'


@pytest.fixture
def sink() -> Iterator[tuple[str, Sink]]:
    """The sink on a free loopback port, 5 ms latency, 429 above 100 requests/s."""
    served = Sink(latency_s=0.005, rate=100)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[str] = []

    async def serve() -> None:
        server = await asyncio.start_server(served.serve, "127.0.0.1", 0)
        address.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        ready.set()
        async with server:
            await server.serve_forever()

    task = loop.create_task(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield address[0], served
    loop.call_soon_threadsafe(task.cancel)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()


def test_the_limiter_holds_at_the_servers_stamps(sink):
    """300 requests from 16 threads at --max-rps 100: the sink's busiest second holds at
    most 100, and none is refused with a 429."""
    url, served = sink
    client = EngageClient.connect(
        url, "key", retry=RetryPolicy(max_attempts=1), limiter=RateLimiter(100), connections=16
    )
    with client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: client.post_transactions(BODY, f"k{n}"), range(300)))
    assert {r.status for r in results} == {202}
    arrivals = sorted(entry["monotonic"] for entry in served.log)
    assert len(arrivals) == 300
    assert _busiest_second(arrivals) <= 100
