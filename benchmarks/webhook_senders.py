"""Webhook traffic for the receiver: signed notification batches from concurrent senders.

The benchmark's receiver figures and the receiver's load tests drive it; the product never
imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any
from urllib.parse import urlsplit

from sync_pipeline.intake.signature import sign


def _batch(sequence: int, items_per_batch: int) -> bytes:
    """A realistic, distinct batch (distinct bodies: the receiver must not dedup them)."""
    items = [
        {
            "humanId": f"{(sequence * items_per_batch + i) % 997:032x}",
            "updatedAt": "2024-05-01T11:59:58.250Z",
            "endpoint": "https://api.humanapi.co/v1/human/medical/test_results",
            "type": "medical",
            "model": "testResult",
            "action": "updated",
            "objectId": f"{sequence:012x}{i:012x}",
        }
        for i in range(items_per_batch)
    ]
    return json.dumps(items, separators=(",", ":")).encode()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough to POST and read the answer.

    httpx costs about a millisecond of CPU per request; on a 2-core machine shared with the
    receiver that would measure the client, not the receiver.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        await self.writer.drain()
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def drive_receiver(
    base_url: str,
    secret: str,
    *,
    senders: int = 8,
    deliveries: int = 2000,
    items_per_batch: int = 50,
) -> dict[str, Any]:
    """Post `deliveries` signed batches from `senders` concurrent senders; measure the answers.

    Bodies are built before the clock starts, signing happens per request (the timestamp must
    be fresh), so the numbers are the receiver's plus one loopback HTTP client's.
    """
    bodies = [_batch(n, items_per_batch) for n in range(deliveries)]
    next_index = itertools.count()
    latencies_ms: list[float] = []
    statuses: dict[int, int] = {}

    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("drive_receiver speaks plain HTTP to a loopback receiver")
    path = parts.path.rstrip("/") + "/notifications"

    async def sender() -> None:
        connection = _Connection(parts.hostname or "", parts.port or 80)
        try:
            while (index := next(next_index)) < deliveries:
                body = bodies[index]
                timestamp, nonce = str(int(time.time() * 1000)), str(index)
                headers = {
                    "X-HumanAPI-Signature": sign(body, timestamp, nonce, secret),
                    "X-HumanAPI-Timestamp": timestamp,
                    "X-HumanAPI-Nonce": nonce,
                    "Content-Type": "application/json",
                }
                started = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.post(path, body, headers), 10)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    status = 0  # no usable answer; reconnect for the next one
                    await connection.close()
                latencies_ms.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - started
    latencies_ms.sort()
    return {
        "deliveries": deliveries,
        "acknowledged": statuses.get(200, 0),
        "statuses": statuses,
        "senders": senders,
        "items_per_batch": items_per_batch,
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(deliveries / elapsed, 1) if elapsed else float("nan"),
        "p50_ms": round(_percentile(latencies_ms, 0.50), 2),
        "p99_ms": round(_percentile(latencies_ms, 0.99), 2),
    }
