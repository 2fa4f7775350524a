"""A benchmark sink: a minimal Engage stand-in that costs almost nothing, so that a run's
rate is the client's, not a simulator's sharing the same two cores.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies; stdlib asyncio, nothing
of ``pipeline``): a POST is read whole, its rows counted, its arrival stamped, and after
``--latency-ms`` it is answered 202 with an empty result, or 429 (``Retry-After: 1``) when
more than ``--rate`` requests arrived in the second before it. ``GET
/api/v2/point-accounts?contactId=...`` answers one account (definition 1, balance 10) after
the same latency, under the same limit (``balances verify``). Any other GET gives the log (one
entry a request: method, monotonic arrival, status, rows, note) in the shape the simulator's
request log has, for ``benchmarks.simulator.summarize``.

    python benchmarks/sink.py --port 0 --latency-ms 50 --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOO_MANY = b'{"message":"Too many requests"}'
ACCOUNTS = b"/api/v2/point-accounts?"
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
                method, target, headers = _parse(head)
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                if method == b"POST":
                    status, answer = await self.post(body)
                elif target.startswith(ACCOUNTS):
                    status, answer = await self.accounts(target)
                else:
                    status, answer = 200, json.dumps(self.log).encode()
                writer.write(_response(status, answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        status = self._arrived("POST", 202, body.count(ROW))
        await asyncio.sleep(self.latency_s)
        return status, TOO_MANY if status == 429 else EMPTY

    async def accounts(self, target: bytes) -> tuple[int, bytes]:
        """A contact's one account: definition 1, balance 10 (a verify of balances of 10)."""
        status = self._arrived("GET", 200, 0)
        contact = parse_qs(urlsplit(target.decode()).query).get("contactId", [""])[0]
        account = {"id": 1, "contactId": contact, "definitionId": 1, "balance": 10,
                   "pendingPoints": 0, "balanceExpires": None, "links": []}  # fmt: skip
        page = {"items": [account], "totalCount": 1, "offset": 0, "count": 100, "links": []}
        await asyncio.sleep(self.latency_s)
        return status, TOO_MANY if status == 429 else json.dumps(page).encode()

    def _arrived(self, method: str, ok: int, rows: int) -> int:
        """Stamp a request; 429 above the rate in the second before it."""
        now = time.monotonic()
        while self.window and now - self.window[0] >= 1.0:
            self.window.popleft()
        limited = len(self.window) >= self.rate
        if not limited:
            self.window.append(now)
        status = 429 if limited else ok
        self.log.append({"method": method, "monotonic": now, "status": status, "rows": rows,
                         "note": ""})  # fmt: skip
        return status


def _parse(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    method, target = [*lines[0].split(b" "), b"", b""][:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


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
