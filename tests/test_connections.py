"""Connection limits on the real server, over raw sockets: huge heads, slow senders, idle and excess connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy import connections
from proxy.connections import FD_RESERVE, connection_cap
from tests.helpers import VAPI_SECRET, vapi_sample
from tests.test_server import Proxy, running_proxy

pytestmark = pytest.mark.anyio

NUMBER = "+16505550100"
HEADER_LIMIT = 4096
HEADER_TIMEOUT = 0.6
BODY_TIMEOUT = 0.8
KEEPALIVE_TIMEOUT = 0.5


def config_yaml(**server: object) -> str:
    settings = {
        "reload_poll_seconds": 0,
        "max_header_bytes": HEADER_LIMIT,
        "header_timeout_seconds": HEADER_TIMEOUT,
        "body_timeout_seconds": BODY_TIMEOUT,
        "keepalive_timeout_seconds": KEEPALIVE_TIMEOUT,
        **server,
    }
    lines = "".join(f"  {key}: {value}\n" for key, value in settings.items())
    return f"""\
version: 1
server:
{lines}auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
templates:
  default:
    firstMessage: "You reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "You answer for {{{{user_name}}}}."}}]
users:
  - {{id: doe, name: Dr. Jane Doe, timezone: UTC, connection_id: conn-doe}}
routes:
  - {{to: "{NUMBER}", user: doe}}
"""


@contextlib.asynccontextmanager
async def proxy_with(tmp_path: Path, **server: object) -> AsyncIterator[Proxy]:
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(**server))
    async with running_proxy(path, tmp_path) as proxy:
        yield proxy


def address(proxy: Proxy) -> tuple[str, int]:
    host, port = proxy.url.removeprefix("http://").split(":")
    return host, int(port)


def call_body() -> bytes:
    body: dict[str, Any] = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = NUMBER
    return json.dumps(body).encode()


async def authenticated_call(proxy: Proxy) -> float:
    """One assistant-request on a fresh connection; returns its latency after checking the answer."""
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        started = time.perf_counter()
        response = await client.post("/vapi", content=call_body(), headers={"X-Vapi-Secret": VAPI_SECRET})
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert response.json()["assistant"]["firstMessage"] == "You reached Dr. Jane Doe."
    return elapsed


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_head_over_the_limit_gets_431_and_is_closed_while_still_arriving(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        sock = socket.create_connection(address(proxy))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET /livez HTTP/1.1\r\nHost: proxy\r\nX-Big: ")
        sent = 0
        chunk = b"a" * 65536
        with pytest.raises(OSError):  # the server closed: the peer's socket resets the sender
            while sent < 256 * 1024 * 1024:
                await asyncio.wait_for(loop.sock_sendall(sock, chunk), 5)
                sent += len(chunk)
        # Kernel buffers take a few MB after the close; 64 MB would mean the server kept reading.
        assert sent < 32 * 1024 * 1024
        sock.close()
        assert await authenticated_call(proxy) < 2.0


async def test_the_431_answer_comes_before_the_head_ends(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        writer.write(b"GET /livez HTTP/1.1\r\nHost: proxy\r\nX-Big: " + b"a" * HEADER_LIMIT)  # no blank line yet
        answer = await read_until_closed(reader, 5)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in answer
        writer.close()


@pytest.mark.parametrize("body_size", [0, 5000])
async def test_a_head_just_under_the_limit_is_served_even_with_its_body_in_the_same_read(
    tmp_path: Path, body_size: int
) -> None:
    async with proxy_with(tmp_path) as proxy:
        body = call_body() if body_size else b""
        head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: {VAPI_SECRET}\r\nContent-Length: {len(body)}\r\n"
        head += "X-Pad: " + "p" * (HEADER_LIMIT - len(head) - len("X-Pad: \r\n\r\n")) + "\r\n\r\n"
        assert len(head) == HEADER_LIMIT
        reader, writer = await asyncio.open_connection(*address(proxy))
        writer.write(head.encode() + body)  # one write: head and body reach the server together
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200" if body else b"HTTP/1.1 400")
        writer.close()


async def test_a_slow_head_gets_408_after_the_header_timeout(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        started = time.monotonic()

        async def drip() -> None:
            for byte in b"GET /livez HTTP/1.1\r\nHost: proxy\r\nX-Slow: 1234567890":
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        answer = await read_until_closed(reader, 5)
        elapsed = time.monotonic() - started
        dripping.cancel()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0
        writer.close()


async def test_an_idle_connection_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        started = time.monotonic()
        assert await read_until_closed(reader, 5) == b""
        assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - started < HEADER_TIMEOUT + 1.0
        writer.close()


async def test_an_unfinished_body_gets_408_after_the_body_timeout_while_calls_are_served(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        body = call_body()
        head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: {VAPI_SECRET}\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body[:100])
        started = time.monotonic()
        assert await authenticated_call(proxy) < 1.0
        answer = await read_until_closed(reader, 5)
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 1.0
        writer.close()


async def test_a_kept_alive_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        for _ in range(2):  # the same connection serves a second request
            writer.write(b"GET /livez HTTP/1.1\r\nHost: proxy\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
            await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)
        started = time.monotonic()
        assert await read_until_closed(reader, 5) == b""
        assert KEEPALIVE_TIMEOUT * 0.9 <= time.monotonic() - started < KEEPALIVE_TIMEOUT + 1.0
        writer.close()


async def test_connections_over_the_cap_get_503_and_the_cap_frees_up(tmp_path: Path) -> None:
    async with proxy_with(tmp_path, max_connections=20, header_timeout_seconds=30) as proxy:
        held = [await asyncio.open_connection(*address(proxy)) for _ in range(20)]
        await asyncio.sleep(0.2)  # the server has accepted them all
        reader, writer = await asyncio.open_connection(*address(proxy))
        answer = await read_until_closed(reader, 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b"too many connections")
        writer.close()
        for _, held_writer in held[:5]:
            held_writer.close()
        await asyncio.sleep(0.2)
        assert await authenticated_call(proxy) < 1.0
        for _, held_writer in held[5:]:
            held_writer.close()


async def test_a_thousand_idle_and_half_sent_connections_are_closed_and_calls_go_on(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    async with proxy_with(tmp_path, max_connections=1100, header_timeout_seconds=2) as proxy:
        opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for index in range(1000):
            reader, writer = await asyncio.open_connection(*address(proxy))
            if index % 2:
                writer.write(b"POST /vapi HTTP/1.1\r\nHost: proxy\r\n")  # half a head
            opened.append((reader, writer))
        started = time.monotonic()
        latencies = [await authenticated_call(proxy) for _ in range(5)]
        assert max(latencies) < 1.0
        closed = await asyncio.gather(*(read_until_closed(reader, 10) for reader, _ in opened))
        elapsed = time.monotonic() - started
        assert all(answer in (b"", connections.TIMED_OUT) for answer in closed)
        assert sum(answer == connections.TIMED_OUT for answer in closed) == 500
        assert elapsed < 2 + 3.0
        for _, writer in opened:
            writer.close()


def test_the_connection_cap_fits_under_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"soft": 1024, "hard": 1024}

    def getrlimit(kind: int) -> tuple[int, int]:
        return limits["soft"], limits["hard"]

    def setrlimit(kind: int, value: tuple[int, int]) -> None:
        if value[0] > limits["hard"]:
            raise ValueError("not allowed")
        limits["soft"] = value[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert connection_cap(1000) == 1024 - FD_RESERVE  # cannot be raised: the cap comes down
    limits.update(soft=1024, hard=65536)
    assert connection_cap(1000) == 1000  # the soft limit is raised to fit
    assert limits["soft"] == 1000 + FD_RESERVE
    limits.update(soft=resource.RLIM_INFINITY, hard=resource.RLIM_INFINITY)
    assert connection_cap(1000) == 1000
