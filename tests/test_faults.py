"""Nango misbehaving, on a real loopback socket: every call still gets its answer inside the deadline,
with the right fallback, and every failure is counted.

The fake speaks raw HTTP/1.1 so that it can refuse, cut a body half way (TCP reset), drip bytes and
hang; the app uses its own httpx client with the configured timeouts, exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from proxy.nango.client import MAX_CONCURRENT_REQUESTS, TOTAL_TIMEOUT_READS
from tests.contract import assert_assistant_request_response
from tests.helpers import VAPI_SECRET, config_from, free_port, proxy_client, vapi_sample
from tests.nango_fakes import FakeClock

pytestmark = pytest.mark.anyio

DEADLINE = 0.5
READ_TIMEOUT = 0.2
# Scheduling noise on a busy CI machine; the answer itself is due before DEADLINE.
SLACK = 0.15
USERS = [f"u{i}" for i in range(60)]
ERROR_FALLBACK = {"destination": {"type": "number", "number": "+14155550199"}}


def number_of(user: str) -> str:
    return f"+1650555{100 + USERS.index(user):04d}"


def config_text(port: int) -> str:
    users = "\n".join(f"  - {{id: {user}, name: User {user}}}" for user in USERS)
    routes = "\n".join(f'  - {{to: "{number_of(user)}", user: {user}}}' for user in USERS)
    return f"""\
auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: http://127.0.0.1:{port}
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
  read_timeout: {READ_TIMEOUT}
  connect_timeout: {READ_TIMEOUT}
  cache_ttl_seconds: 1
server:
  deadline_seconds: {DEADLINE}
templates:
  default:
    firstMessage: "Hello, you reached {{{{user_name}}}}."
    model: {{provider: openai, model: gpt-4o}}
fallbacks:
  no_calendar: {{action: take_message}}
  error: {{action: transfer, number: "+1 415 555 0199"}}
users:
{users}
routes:
{routes}
"""


@dataclass
class Fault:
    """How the fake answers one user's lookup."""

    kind: str = "ok"  # ok | status | reset | drip | hang | invalid_json | wrong_shape
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    drip_interval: float = 0.0


@dataclass
class FakeNango:
    """`GET /connections` on 127.0.0.1, one fault per user (by `tags[end_user_id]`)."""

    faults: dict[str, Fault] = field(default_factory=dict)
    default: Fault = field(default_factory=Fault)
    requests: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    most_at_once: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and cut every open exchange: from now on, connection refused."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)
        self.most_at_once = max(self.most_at_once, len(self.handlers))
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                user = parse_qs(urlsplit(target).query).get("tags[end_user_id]", [""])[0]
                self.requests.append(user)
                await self.answer(reader, writer, user, self.faults.get(user, self.default))
        finally:
            writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str, fault: Fault) -> None:
        conn = {"connection_id": f"conn-{user}", "created": "2026-10-02T09:12:44.120Z", "errors": []}
        body = json.dumps({"connections": [conn | {"tags": {"end_user_id": user}}]}).encode()
        if fault.kind == "invalid_json":
            body = b'{"connections": [{"connection_id": '
        elif fault.kind == "wrong_shape":
            body = json.dumps({"connections": {"connection_id": f"conn-{user}"}}).encode()
        elif fault.kind == "status":
            body = json.dumps({"error": {"code": "server_error", "message": "injected"}}).encode()
        elif fault.kind == "hang":
            await reader.read()  # until the client gives up and closes
            return
        reason = {200: "OK", 429: "Too Many Requests"}.get(fault.status, "Error")
        head = [f"HTTP/1.1 {fault.status} {reason}", "Content-Type: application/json", "Connection: close"]
        head += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in fault.headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if fault.kind == "reset":
            writer.write(body[: len(body) // 2])
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, mid-body
            return
        if fault.kind == "drip":
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(fault.drip_interval)
            return
        writer.write(body)
        await writer.drain()


@contextlib.asynccontextmanager
async def proxy_and_nango(clock: FakeClock | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, FakeNango]]:
    """`clock`: the directory's, moved by the test (the deadline and timeouts stay on real time)."""
    nango = FakeNango()
    await nango.start()
    options = {"clock": clock} if clock is not None else {}
    try:
        async with proxy_client(config_from(config_text(nango.port)), **options) as client:
            yield client, nango
    finally:
        await nango.stop()


async def call(client: httpx.AsyncClient, user: str) -> tuple[dict[str, object], float]:
    """One assistant-request for `user`'s number: the answer and how long it took."""
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = number_of(user)
    body["message"]["phoneNumber"]["id"] = "unrouted"
    body["message"]["call"]["phoneNumberId"] = "unrouted"
    started = time.perf_counter()
    response = await client.post("/vapi", content=json.dumps(body), headers={"X-Vapi-Secret": VAPI_SECRET})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    assert_assistant_request_response(answer)
    return answer, elapsed


def counted(metrics: str, result: str) -> float:
    pattern = rf'^vapi_proxy_nango_requests_total\{{operation="find_connections",result="{result}"\}} (\S+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def authorization_id(answer: dict[str, object]) -> str:
    assistant = answer["assistant"]
    assert isinstance(assistant, dict)
    return str(assistant["credentials"][0]["authorizationId"])


FAULTS = {
    "reset-mid-body": (Fault("reset"), "network_error"),
    "slow-drip-beyond-read-timeout": (Fault("drip", drip_interval=READ_TIMEOUT * 1.5), "timeout"),
    "hang": (Fault("hang"), "timeout"),
    "429-with-retry-after": (Fault("status", 429, {"Retry-After": "30"}), "rate_limited"),
    "429-without-retry-after": (Fault("status", 429), "rate_limited"),
    "500": (Fault("status", 500), "http_error"),
    "503": (Fault("status", 503), "http_error"),
    "invalid-json": (Fault("invalid_json"), "invalid_response"),
    "wrong-shape": (Fault("wrong_shape"), "invalid_response"),
}


@pytest.mark.parametrize(("fault", "result"), FAULTS.values(), ids=FAULTS.keys())
async def test_fault_without_stale_answer_gets_the_error_fallback_in_time(fault: Fault, result: str) -> None:
    async with proxy_and_nango() as (client, nango):
        nango.faults["u1"] = fault
        answer, elapsed = await call(client, "u1")
        metrics = (await client.get("/metrics")).text
    assert answer == ERROR_FALLBACK
    assert elapsed < DEADLINE + SLACK, f"answered after {elapsed:.3f}s"
    assert counted(metrics, result) == 1
    assert nango.requests == ["u1"]


async def test_connection_refused_gets_the_error_fallback_in_time() -> None:
    nango = FakeNango(port=free_port())  # nothing listens there
    async with proxy_client(config_from(config_text(nango.port))) as client:
        answer, elapsed = await call(client, "u1")
        metrics = (await client.get("/metrics")).text
    assert answer == ERROR_FALLBACK
    assert elapsed < DEADLINE + SLACK
    assert counted(metrics, "network_error") == 1


async def test_after_a_429_lookups_wait_out_retry_after_without_asking_nango() -> None:
    async with proxy_and_nango() as (client, nango):
        nango.faults["u1"] = Fault("status", 429, {"Retry-After": "30"})
        await call(client, "u1")
        answer, elapsed = await call(client, "u2")  # u2 would be fine, but the budget is spent
        metrics = (await client.get("/metrics")).text
    assert answer == ERROR_FALLBACK and elapsed < DEADLINE + SLACK
    assert nango.requests == ["u1"]
    assert (counted(metrics, "rate_limited"), counted(metrics, "skipped")) == (1, 1)


async def test_slow_drip_within_the_read_timeout_is_cut_by_the_deadline_and_then_given_up() -> None:
    # Each byte arrives before the read timeout, so httpx alone would wait for the whole drip (7 s here):
    # the deadline answers the call, and the client's total budget frees the lookup and its connection.
    total = READ_TIMEOUT + TOTAL_TIMEOUT_READS * READ_TIMEOUT  # connect_timeout == READ_TIMEOUT here
    async with proxy_and_nango() as (client, nango):
        nango.faults["u1"] = Fault("drip", drip_interval=READ_TIMEOUT / 4)
        started = time.perf_counter()
        answer, elapsed = await call(client, "u1")
        while counted(metrics := (await client.get("/metrics")).text, "timeout") == 0:
            assert time.perf_counter() - started < total + SLACK, "the dripping lookup was never given up"
            await asyncio.sleep(0.02)
    assert answer == ERROR_FALLBACK
    assert elapsed < DEADLINE + SLACK
    assert 'vapi_proxy_connection_cache_total{event="timeout"} 1.0' in metrics
    assert time.perf_counter() - started >= total - SLACK


async def test_every_fault_serves_the_stale_connection_when_there_is_one() -> None:
    faulty = USERS[: len(FAULTS)]
    clock = FakeClock()
    async with proxy_and_nango(clock) as (client, nango):
        for user in faulty:
            assert authorization_id((await call(client, user))[0]) == f"conn-{user}"
        clock.advance(1.05)  # cache_ttl_seconds: 1, so the next lookups go to Nango
        # 429s last: once the budget is spent, every lookup after them is skipped, not sent.
        ordered = sorted(zip(faulty, FAULTS.items(), strict=True), key=lambda item: item[1][0].startswith("429"))
        for user, (name, (fault, _)) in ordered:
            nango.faults[user] = fault
            answer, elapsed = await call(client, user)
            assert authorization_id(answer) == f"conn-{user}", name
            assert elapsed < DEADLINE + SLACK, f"{name}: answered after {elapsed:.3f}s"
        metrics = (await client.get("/metrics")).text
    assert stale_served(metrics) == len(FAULTS)


async def test_connection_refused_serves_the_stale_connection() -> None:
    clock = FakeClock()
    async with proxy_and_nango(clock) as (client, nango):
        assert authorization_id((await call(client, "u1"))[0]) == "conn-u1"
        clock.advance(1.05)  # past the cache's TTL
        await nango.stop()
        answer, elapsed = await call(client, "u1")
        metrics = (await client.get("/metrics")).text
    assert authorization_id(answer) == "conn-u1" and elapsed < DEADLINE + SLACK
    assert stale_served(metrics) == 1
    assert counted(metrics, "network_error") == 1


def stale_served(metrics: str) -> float:
    found = re.search(r'^vapi_proxy_connection_cache_total\{event="stale_served"\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_many_calls_while_nango_hangs_all_answer_in_time_and_queue_outside_the_pool() -> None:
    async with proxy_and_nango() as (client, nango):
        nango.default = Fault("hang")
        answers = await asyncio.gather(*(call(client, user) for user in USERS))
        await asyncio.sleep(0.05)
    assert all(answer == ERROR_FALLBACK for answer, _ in answers)
    slowest = max(elapsed for _, elapsed in answers)
    assert slowest < DEADLINE + SLACK, f"slowest answer after {slowest:.3f}s"
    assert nango.most_at_once == MAX_CONCURRENT_REQUESTS < len(USERS)
