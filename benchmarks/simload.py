"""How many 1000-row POSTs a second the simulator sustains, so that it is known not to be the
bottleneck of the end-to-end runs: ``python -m benchmarks.simload [--seconds S] [--clients N]``.

A fresh simulator process (no latency, no rate limit) takes ``clients`` concurrent POSTs of
1000 valid rows each, every one under its own Idempotency-Key, for ``seconds`` seconds. The
answer: requests/s, and the simulator's CPU seconds per request (from /proc), whose inverse is
what one core of it could do if the load generator (on the same 2 cores) took nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import orjson

from benchmarks.simulator import Simulator, cpu_seconds, simulator
from pipeline.simulator.fixture import contact_ids

TRANSACTIONS = "/api/v2/point-accounts/transactions"
BODIES = 8  # distinct bodies, each sent under new keys


@dataclass(frozen=True)
class Capacity:
    """The outcome of one load test."""

    requests: int
    failures: int
    seconds: float
    simulator_cpu_seconds: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.simulator_cpu_seconds / max(self.requests, 1)

    def describe(self) -> str:
        return (
            f"{self.requests_per_second:.0f} req/s of 1000 rows, {self.failures} failed; "
            f"simulator CPU {self.cpu_ms_per_request:.1f} ms/request"
        )


def body(seed: int, rows: int = 1000) -> bytes:
    """A JSON array of ``rows`` valid transactions, like points-import's bodies."""
    contacts = contact_ids()
    return orjson.dumps(
        [
            {
                "contactId": contacts[(seed * rows + i) % len(contacts)],
                "amount": 100 + i % 400 if i % 4 else i % 400 + 0.25,
                "definitionId": 1 + i % 5,
                "timeStamp": f"2026-11-{1 + i % 28:02}T{i % 24:02}:{i % 60:02}:{seed:02}+01:00",
                "source": "Store 012 Stockholm Drottninggatan",
                "description": f"Purchase, receipt {seed * rows + i}",
                "validTo": "2027-12-31T00:00:00+01:00",
            }
            for i in range(rows)
        ]
    )


def measure_capacity(workdir: Path, seconds: float = 10.0, clients: int = 20) -> Capacity:
    """Start a simulator without latency and load it for ``seconds`` seconds."""
    with simulator(workdir, latency_ms=0) as sim:
        cpu_before = cpu_seconds(sim.process.pid)
        sent, failed, elapsed = asyncio.run(_load(sim, seconds, clients))
        cpu = cpu_seconds(sim.process.pid) - cpu_before
    return Capacity(sent, failed, elapsed, cpu)


async def _load(sim: Simulator, seconds: float, clients: int) -> tuple[int, int, float]:
    bodies = [body(seed) for seed in range(BODIES)]
    headers = {"apikey": sim.api_key, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=sim.url, headers=headers, limits=limits) as client:
        started = time.perf_counter()
        deadline = started + seconds
        counts = await asyncio.gather(
            *(_worker(client, bodies, worker, deadline) for worker in range(clients))
        )
        elapsed = time.perf_counter() - started
    return sum(ok for ok, _ in counts), sum(bad for _, bad in counts), elapsed


async def _worker(
    client: httpx.AsyncClient, bodies: list[bytes], worker: int, deadline: float
) -> tuple[int, int]:
    ok = failed = 0
    while time.perf_counter() < deadline:
        payload = bodies[(worker + ok + failed) % len(bodies)]
        key = {"idempotency-key": uuid.uuid4().hex}
        response = await client.post(TRANSACTIONS, content=payload, headers=key, timeout=60)
        if response.status_code == 202:
            ok += 1
        else:
            failed += 1
    return ok, failed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simload", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    with TemporaryDirectory(prefix="simload-") as workdir:
        print(measure_capacity(Path(workdir), args.seconds, args.clients).describe())


if __name__ == "__main__":
    main()
