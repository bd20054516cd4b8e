"""A minimal keep-alive HTTP/1.1 client for bursts of POSTs, when wrk's summary is not enough (each answer is
needed) and httpx's pool would be the bottleneck (it slows down with thousands of queued requests).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    body: bytes


async def post_all(
    host: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str], connections: int
) -> list[Answer]:
    """POST every body over `connections` keep-alive connections; bodies are taken in order, so adjacent
    bodies are in flight at the same time. Answers come back in the order of `bodies`."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    answers: list[Answer | None] = [None] * len(bodies)
    cursor = iter(range(len(bodies)))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in cursor:
                body = bodies[index]
                request = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                started = time.perf_counter()
                writer.write(request.encode() + body)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                content = await reader.readexactly(length)
                answers[index] = Answer(int(status_line.split()[1]), time.perf_counter() - started, content)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(min(connections, len(bodies)))))
    return [answer for answer in answers if answer is not None]
