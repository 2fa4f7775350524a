"""A benchmark sink: a minimal Engage stand-in that costs almost nothing, so that a run's
rate is the client's, not a simulator's sharing the same two cores.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies; stdlib asyncio, nothing
of ``pipeline``): a POST is read whole, its rows counted, its arrival stamped, and after
``--latency-ms`` it is answered 202 with an empty result, or 429 (``Retry-After: 1``) when
more than ``--rate`` requests arrived in the second before it. ``GET /_sink/requests`` gives
the log (one entry a POST: method, monotonic arrival, status, rows, note) in the shape the
simulator's request log has, for ``benchmarks.simulator.summarize``.

    python benchmarks/sink.py --port 0 --latency-ms 50 --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from typing import Any

EMPTY = b'{"notAccepted":[],"errorMessages":[],"missingDefinitionIds":[],"missingContactIds":[]}'
ROW = b'"contactId"'


class Sink:
    def __init__(self, latency_s: float, rate: float) -> None:
        self.latency_s, self.rate = latency_s, rate
        self.window: deque[float] = deque()  # arrivals in the last second
        self.log: list[dict[str, Any]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, headers = _parse(head)
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                if method == b"POST":
                    status, answer = await self.post(body)
                else:
                    status, answer = 200, json.dumps(self.log).encode()
                writer.write(_response(status, answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        now = time.monotonic()
        while self.window and now - self.window[0] >= 1.0:
            self.window.popleft()
        limited = len(self.window) >= self.rate
        if not limited:
            self.window.append(now)
        status = 429 if limited else 202
        rows = body.count(ROW)
        self.log.append({"method": "POST", "monotonic": now, "status": status, "rows": rows,
                         "note": ""})  # fmt: skip
        await asyncio.sleep(self.latency_s)
        return status, b'{"message":"Too many requests"}' if limited else EMPTY


def _parse(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return method, headers


def _response(status: int, body: bytes) -> bytes:
    reason = {200: b"OK", 202: b"Accepted", 429: b"Too Many Requests"}[status]
    retry = b"Retry-After: 1\r\n" if status == 429 else b""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (status, reason, len(body), retry)
    ) + body


async def main(port: int, latency_ms: float, rate: float) -> None:
    sink = Sink(latency_ms / 1000, rate)
    server = await asyncio.start_server(sink.serve, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rate", type=float, default=200.0, help="429 above this many a second")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.latency_ms, options.rate))
