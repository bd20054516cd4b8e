"""The fast lane (proxy/http/lane.py) over real sockets: the bytes a client reads are the ASGI path's, and warm
calls never reach the ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.app import create_app
from proxy.config import Config, parse_config
from proxy.http.connections import CONNECTION_REFUSALS
from proxy.http.lane import FAST_LANE, LANE_BODY_BYTES
from proxy.server import drain_on_signals, uvicorn_config
from tests.helpers import VAPI_SECRET, free_port, vapi_sample
from tests.http.test_connections import KEEPALIVE_TIMEOUT, NUMBER, config_yaml

pytestmark = pytest.mark.anyio

# The connection-limit tests' server: one user on one line, with a connection id in the file (warm at once).
CONFIG = config_yaml()


def loaded(path: Path) -> Config:
    return parse_config(CONFIG, str(path), {**os.environ, "VAPI_SERVER_SECRET": VAPI_SECRET})


def call(number: str = NUMBER, padding: int = 0) -> bytes:
    body: dict[str, Any] = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = number
    if padding:
        body["message"]["padding"] = "x" * padding
    return json.dumps(body).encode()


def request(body: bytes, *, secret: str = VAPI_SECRET, version: str = "1.1", extra: str = "") -> bytes:
    head = f"POST /vapi HTTP/{version}\r\nhost: proxy\r\nx-vapi-secret: {secret}\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(body: bytes) -> bytes:
    head = f"POST /vapi HTTP/1.1\r\nhost: proxy\r\nx-vapi-secret: {VAPI_SECRET}\r\ntransfer-encoding: chunked\r\n\r\n"
    half = len(body) // 2
    parts = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    return head.encode() + parts + b"0\r\n\r\n"


class Counting:
    """The ASGI app, counting the requests that reach it; `GET /slow` answers after three keep-alive timeouts,
    as a tool call waiting on Google might."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.http_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.http_requests += 1
            if scope["path"] == "/slow":
                await asyncio.sleep(3 * KEEPALIVE_TIMEOUT)
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
                await send({"type": "http.response.body", "body": b"booked"})
                return
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *, lane: bool) -> AsyncIterator[tuple[int, Counting]]:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    config = loaded(path)
    app = create_app(config)
    drain_on_signals(app)  # as `serve --workers` and bench/run.py build it: the state must pass through
    if not lane:
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def without_lane(app: object) -> AsyncIterator[dict[str, object]]:
            async with inner(app) as state:
                yield {key: value for key, value in (state or {}).items() if key != FAST_LANE}

        app.router.lifespan_context = without_lane
    counting = Counting(app)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(config, counting, host="127.0.0.1", port=port, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield port, counting
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, *pieces: bytes, answers: int = 1, pause: float = 0.0) -> list[bytes]:
    """Sends `pieces` (pausing between them), reads `answers` responses; each without its date header."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, piece in enumerate(pieces):
            if index and pause:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        return [await read_response(reader) for _ in range(answers)]
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    body = await reader.readexactly(length)
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"date:")) + body


CASES: dict[str, tuple[tuple[bytes, ...], int]] = {
    "warm call": ((request(call()),), 1),
    "two calls, one kept-alive connection": ((request(call()) + request(call()),), 2),
    "three pipelined calls": ((request(call()) * 3,), 3),
    "HTTP/1.0": ((request(call(), version="1.0"),), 1),
    "connection: close": ((request(call(), extra="connection: close\r\n"),), 1),
    "wrong secret": ((request(call(), secret="wrong"),), 1),
    "unknown line": ((request(call("+16505550199")),), 1),
    "not JSON": ((request(b"{nope"),), 1),
    "chunked body": ((chunked(call()),), 1),
    "body over the lane's limit": ((request(call(padding=LANE_BODY_BYTES)),), 1),
}


async def test_the_lane_sends_the_asgi_paths_bytes_and_keeps_warm_calls_out_of_the_app(tmp_path: Path) -> None:
    answers: dict[bool, dict[str, list[bytes]]] = {}
    reached: dict[bool, int] = {}
    for lane in (True, False):
        async with serving(tmp_path, lane=lane) as (port, app):
            answers[lane] = {name: await exchange(port, *pieces, answers=n) for name, (pieces, n) in CASES.items()}
            warm_before = app.http_requests
            await exchange(port, request(call()) * 3, answers=3)
            reached[lane] = app.http_requests - warm_before
    assert answers[True] == answers[False]
    assert answers[True]["warm call"][0].startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-length: ")
    assert b'"authorizationId":"conn-doe"' in answers[True]["three pipelined calls"][2]
    assert answers[True]["HTTP/1.0"][0].count(b"connection: close") == 1
    assert answers[True]["wrong secret"][0].startswith(b"HTTP/1.1 401")
    assert reached == {True: 0, False: 3}


async def test_a_body_sent_slowly_is_awaited_and_answered(tmp_path: Path) -> None:
    whole = request(call())
    async with serving(tmp_path, lane=True) as (port, app):
        (answer,) = await exchange(port, whole[:200], whole[200:], pause=0.2)
        assert app.http_requests == 0
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"authorizationId":"conn-doe"' in answer


async def test_a_call_sent_with_the_end_of_the_stream_is_answered_before_the_close(tmp_path: Path) -> None:
    async with serving(tmp_path, lane=True) as (port, app):
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request(call()))
            writer.write_eof()  # the request and the EOF reach the server in one read
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 OK") and b'"authorizationId":"conn-doe"' in answer
        assert app.http_requests == 0


async def test_expect_100_continue_goes_to_the_app_which_asks_for_the_body(tmp_path: Path) -> None:
    body = call()
    head = request(body, extra="expect: 100-continue\r\n")[: -len(body)]
    async with serving(tmp_path, lane=True) as (port, app):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            answer = await read_response(reader)
        finally:
            writer.close()
        assert app.http_requests == 1
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"authorizationId":"conn-doe"' in answer


async def test_the_drain_wrapper_passes_the_apps_lifespan_state_on(tmp_path: Path) -> None:
    app = create_app(loaded(tmp_path / "config.yaml"))
    drain_on_signals(app)
    async with app.router.lifespan_context(app) as state:
        assert state[FAST_LANE] is app.fast_path
        assert state[CONNECTION_REFUSALS] is app.state.runtime.metrics.connections_refused


async def test_a_slow_request_after_a_lane_answer_is_not_cut_at_the_keepalive_timeout(tmp_path: Path) -> None:
    # The lane answers the first call in the same read that brings the second request's head: the second
    # (an app that takes longer than the keep-alive timeout, as a tool call waiting on Google does) is in flight.
    slow = b"GET /slow HTTP/1.1\r\nhost: proxy\r\n\r\n"
    async with serving(tmp_path, lane=True) as (port, app):
        first, second = await exchange(port, request(call()) + slow, answers=2)
        assert app.http_requests == 1  # the slow one
    assert first.startswith(b"HTTP/1.1 200 OK") and b'"authorizationId":"conn-doe"' in first
    assert second.startswith(b"HTTP/1.1 200 OK") and second.endswith(b"booked")


async def test_a_call_the_lane_declined_is_not_decided_again_by_the_asgi_fast_path(tmp_path: Path) -> None:
    async with serving(tmp_path, lane=True) as (port, app):
        fast_path: Any = getattr(app.app, "fast_path")  # noqa: B009 (the app is typed as any ASGI app)
        bodies: list[bytes] = []
        answer = fast_path.answer

        def counted(body: bytes, started: float | None = None, **where: Any) -> bytes | None:
            bodies.append(body)
            answer_bytes: bytes | None = answer(body, started, **where)
            return answer_bytes

        fast_path.answer = counted
        (unknown,) = await exchange(port, request(call("+16505550199")))  # the general path answers it
        (warm,) = await exchange(port, request(call()))
        assert app.http_requests == 1
    assert unknown.startswith(b"HTTP/1.1 200 OK") and warm.startswith(b"HTTP/1.1 200 OK")
    assert len(bodies) == 2  # one decision per call: the lane's
