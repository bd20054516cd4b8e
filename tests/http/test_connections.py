"""Connection limits on the real server, over raw sockets: huge heads, slow senders, idle and excess connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.server import ServerState

from proxy.http import connections
from proxy.http.connections import FD_RESERVE, connection_cap
from tests.helpers import VAPI_SECRET, Proxy, running_proxy, vapi_sample

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


async def test_at_the_cap_a_new_connection_replaces_the_oldest_idle_one(tmp_path: Path) -> None:
    async with proxy_with(tmp_path, max_connections=20, header_timeout_seconds=30) as proxy:
        held = [await asyncio.open_connection(*address(proxy)) for _ in range(20)]
        await asyncio.sleep(0.2)  # the server has accepted them all
        assert await authenticated_call(proxy) < 1.0
        # The oldest made room, closed without a word; the call's own connection is gone again afterwards,
        # so the next call fits without closing anyone.
        assert await asyncio.wait_for(held[0][0].read(), 1) == b""
        assert await authenticated_call(proxy) < 1.0
        await asyncio.sleep(0.1)
        assert not any(reader.at_eof() for reader, _ in held[1:])
        for _, writer in held:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(tmp_path: Path) -> None:
    async with proxy_with(tmp_path, max_connections=20, body_timeout_seconds=30) as proxy:
        body = call_body()
        head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: {VAPI_SECRET}\r\nContent-Length: {len(body)}\r\n"
        busy = []
        for _ in range(20):  # authenticated requests whose bodies are still arriving
            reader, writer = await asyncio.open_connection(*address(proxy))
            writer.write(head.encode() + b"\r\n" + body[:100])
            busy.append((reader, writer))
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection(*address(proxy))
        answer = await read_until_closed(reader, 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b"too many connections")
        writer.close()
        busy_reader, busy_writer = busy.pop(0)
        busy_writer.write(body[100:])  # one finishes: its answer comes, and the connection waits again
        assert (await asyncio.wait_for(busy_reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        assert await authenticated_call(proxy) < 1.0
        for _, held_writer in [*busy, (busy_reader, busy_writer)]:
            held_writer.close()


async def test_a_thousand_idle_and_half_sent_connections_are_closed_and_calls_go_on(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    async with proxy_with(
        tmp_path, max_connections=1100, max_connections_per_address=1100, header_timeout_seconds=2
    ) as proxy:
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


def hostile_heads(count: int, seed: int = 9) -> list[bytes]:
    """Request heads as an attacker writes them: random bytes in names and values, odd request lines,
    many or huge headers, bare LFs, NULs, duplicate auth headers, absurd content lengths."""
    rng = random.Random(seed)
    lines = [
        b"POST /vapi HTTP/1.1",
        b"GET /livez HTTP/1.1",
        b"POST /nango/webhook HTTP/1.1",
        b"GET /" + b"a" * 5000 + b" HTTP/1.1",
        b"POST /vapi?\x00=\xff HTTP/1.1",
        b"BREW /vapi HTTP/1.1",
        b"POST /vapi HTTP/9.9",
        b"\xff\xfe\r\n",
        b"POST /vapi HTTP/1.0",
    ]
    heads = []
    for _ in range(count):
        head = [rng.choice(lines), b"Host: proxy"]
        for _ in range(rng.choice((0, 1, 2, 5, 50, 400))):
            name = rng.choice((b"X-Vapi-Secret", b"Authorization", b"X-Signature", b"X-Timestamp", b"X-F", b"X-G"))
            if rng.random() < 0.02:
                name = b"Content-Length"
            if rng.random() < 0.03:
                name = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
            value = rng.choice(
                (
                    VAPI_SECRET.encode(),
                    b"Bearer x",
                    b"-1",
                    b"99999999999999999999",
                    bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))) if rng.random() < 0.1 else b"",
                    bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 200))),
                    b"v" * rng.randrange(0, 3000),
                )
            )
            head.append(name + b":" + value)
        separator = b"\n" if rng.random() < 0.1 else b"\r\n"
        trailer = bytes(rng.randrange(256) for _ in range(50)) if rng.random() < 0.1 else b""  # a bad next request
        heads.append(separator.join(head) + separator + separator + trailer)
    return heads


async def test_fuzzed_heads_never_get_a_5xx_and_the_server_stays_up(tmp_path: Path) -> None:
    heads = hostile_heads(400)
    statuses: Counter[bytes] = Counter()
    async with proxy_with(tmp_path) as proxy:
        for head in heads:
            reader, writer = await asyncio.open_connection(*address(proxy))
            with contextlib.suppress(OSError):  # the server may have answered and closed already
                writer.write(head)
                writer.write_eof()
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionError:
                answer = b"reset"  # closed by the server with some of the request unread
            statuses[answer[9:12] or b"closed"] += 1
            writer.close()
        assert await authenticated_call(proxy) < 1.0
        assert proxy.process.poll() is None
    assert sum(statuses.values()) == len(heads)
    assert not [status for status in statuses if status.startswith(b"5")], statuses
    assert {b"200", b"400", b"401", b"431"} <= set(statuses)


async def test_pipelined_requests_beyond_the_head_limit_in_one_write_are_all_answered(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        request = b"GET /livez HTTP/1.1\r\nHost: proxy\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
        reader, writer = await asyncio.open_connection(*address(proxy))
        writer.write(request * 12)  # about 12.5 KiB, three times max_header_bytes (4 KiB), in one write
        for _ in range(12):
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
            await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)
        writer.close()


async def test_a_client_pipelining_thousands_of_requests_is_cut_off(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        writer.write(b"GET /livez HTTP/1.1\r\nHost: proxy\r\n\r\n" * 5000)
        answers = b""
        with contextlib.suppress(ConnectionResetError):  # closed with most of the requests unread
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK") <= connections.MAX_PIPELINED + 1
        writer.close()
        assert await authenticated_call(proxy) < 1.0


async def test_a_client_pipelining_thousands_of_warm_calls_is_cut_off_too(tmp_path: Path) -> None:
    # The lane answers each call as its read completes it: its answers not yet sent count as a pipeline.
    async with proxy_with(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection(*address(proxy))
        writer.write(warm_call_request() * 2000)
        answers = b""
        with contextlib.suppress(ConnectionResetError):  # closed with most of the requests unread
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                answers += chunk
        assert 1 <= answers.count(b"HTTP/1.1 200 OK") <= 2 * connections.MAX_PIPELINED + 1
        writer.close()
        assert await authenticated_call(proxy) < 1.0


async def test_a_flood_of_malformed_requests_is_counted_and_logged_in_a_few_summary_lines(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        for _ in range(200):
            reader, writer = await asyncio.open_connection(*address(proxy))
            writer.write(b"\x00\x01 not http\r\n\r\n")
            assert (await read_until_closed(reader, 5)).startswith(b"HTTP/1.1 400 ")
            writer.close()
        lines = [line["msg"] for line in proxy.log_lines()]
        metrics = httpx.get(proxy.url + "/metrics").text
    assert "Invalid HTTP request received." not in lines
    assert 1 <= lines.count("connections refused") <= 2
    assert 'vapi_proxy_connections_refused_total{kind="invalid_request"} 200.0' in metrics.splitlines()


class StalledTransport(asyncio.Transport):
    """A socket whose peer has stopped reading: writes are kept, nothing is ever sent."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("203.0.113.9", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_a_client_that_stops_reading_its_answers_is_cut_off_after_the_send_timeout() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    limits = connections.ConnectionLimits(send_timeout=0.05)
    config = connections.LimitedConfig(app, limits=limits, lifespan="off", log_config=None)
    config.load()
    counted: list[str] = []

    class Refusals:
        def labels(self, kind: str) -> Refusals:
            counted.append(kind)
            return self

        def inc(self) -> None:
            pass

    state = {connections.CONNECTION_REFUSALS: Refusals()}
    protocol = connections.LimitedHttpToolsProtocol(config, ServerState(), state)
    transport = StalledTransport()
    protocol.connection_made(transport)
    protocol.pause_writing()  # the transport's buffer is full: the peer reads nothing
    protocol.data_received(b"GET /livez HTTP/1.1\r\nHost: proxy\r\n\r\n")
    await asyncio.sleep(0.02)
    assert not transport.aborted  # the answer waits to be written, for now
    await asyncio.sleep(0.1)
    assert transport.aborted  # not close(): that would wait for a flush that never comes
    assert counted == ["send_timeout"]
    protocol.connection_lost(None)

    # A peer that reads again in time keeps its connection.
    protocol = connections.LimitedHttpToolsProtocol(config, ServerState(), state)
    transport = StalledTransport()
    protocol.connection_made(transport)
    protocol.pause_writing()
    protocol.resume_writing()
    await asyncio.sleep(0.1)
    assert not transport.aborted
    protocol.connection_lost(None)


async def test_worker_processes_apply_the_same_limits(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml())
    async with running_proxy(path, tmp_path, "json", "--workers", "2") as proxy:
        for _ in range(4):  # whichever worker accepts it
            reader, writer = await asyncio.open_connection(*address(proxy))
            writer.write(b"GET /livez HTTP/1.1\r\nHost: proxy\r\nX-Big: " + b"a" * HEADER_LIMIT)
            assert (await read_until_closed(reader, 5)).startswith(b"HTTP/1.1 431 ")
            writer.close()
        reader, writer = await asyncio.open_connection(*address(proxy))
        started = time.monotonic()
        assert await read_until_closed(reader, 5) == b""
        assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - started < HEADER_TIMEOUT + 1.0
        writer.close()
        assert await authenticated_call(proxy) < 2.0
        # Stopped by a signal, not killed: a killed supervisor would leave its workers behind.
        proxy.process.send_signal(signal.SIGINT)
        proxy.process.wait(20)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def warm_call_request() -> bytes:
    body = call_body()
    head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: {VAPI_SECRET}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_connections_whose_answer_is_complete_make_room_while_their_body_is_pending(tmp_path: Path) -> None:
    # A 404 needs none of the declared body: the connection is owed nothing more, though its body may still come.
    async with proxy_with(tmp_path, max_connections=20, body_timeout_seconds=30, keepalive_timeout_seconds=30) as proxy:
        held = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection(*address(proxy))
            writer.write(b"POST /nope HTTP/1.1\r\nHost: proxy\r\nContent-Length: 10\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 404")
            held.append((reader, writer))
        for _ in range(3):
            assert await authenticated_call(proxy) < 1.0
        # The oldest made room: after its 404, closed without a word.
        assert (await asyncio.wait_for(held[0][0].read(), 1)).endswith(b"Not Found")
        for _, writer in held:
            writer.close()


async def test_a_peer_that_pipelines_warm_calls_and_never_reads_is_not_read_either(tmp_path: Path) -> None:
    async with proxy_with(tmp_path) as proxy:
        before = rss_mb(proxy.process.pid)
        sock = socket.create_connection(address(proxy))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        calls = warm_call_request() * 200
        sent = 0
        # The peer's sends stop being taken (the server stops reading), or it is cut off.
        with contextlib.suppress(OSError, TimeoutError):
            while sent < 128 * 1024 * 1024:
                await asyncio.wait_for(loop.sock_sendall(sock, calls), 2)
                sent += len(calls)
        grown = rss_mb(proxy.process.pid) - before
        sock.close()
        # Kernel buffers on loopback take a few MB; the server's own share stays small.
        assert sent < 24 * 1024 * 1024, sent
        assert grown < 64, grown
        assert await authenticated_call(proxy) < 1.0


async def test_one_address_cannot_take_every_connection_slot(tmp_path: Path) -> None:
    async with proxy_with(
        tmp_path, max_connections=20, max_connections_per_address=10, body_timeout_seconds=30
    ) as proxy:
        body = call_body()
        head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: {VAPI_SECRET}\r\nContent-Length: {len(body)}\r\n"
        busy = []
        for _ in range(10):  # from a second loopback address: authenticated requests whose bodies are still arriving
            reader, writer = await asyncio.open_connection(*address(proxy), local_addr=("127.0.0.2", 0))
            writer.write(head.encode() + b"\r\n" + body[:100])
            busy.append((reader, writer))
        # Ten more from it (sending nothing yet: a request the server will not read would reset the answer).
        more = [await asyncio.open_connection(*address(proxy), local_addr=("127.0.0.2", 0)) for _ in range(10)]
        refused = await asyncio.gather(*(read_until_closed(reader, 5) for reader, _ in more))
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused), refused
        assert refused[0].endswith(b"too many connections from one address")
        latencies = [await authenticated_call(proxy) for _ in range(3)]  # from 127.0.0.1
        assert max(latencies) < 1.0
        assert not any(reader.at_eof() for reader, _ in busy)
        for _, writer in [*busy, *more]:
            writer.close()
