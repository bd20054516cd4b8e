"""The general (Starlette) path: authentication before the body, bounded unauthenticated reads, bounded labels."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.secret import Secret
from proxy.vapi.auth import HmacPlan, hmac_signature
from proxy.vapi.messages import VAPI_MESSAGE_TYPES
from tests.helpers import VAPI_SECRET, config_from, proxy_client, running_proxy, serving, vapi_sample

pytestmark = pytest.mark.anyio

HMAC_KEY = "limits-hmac-key-77"
READS = 4


def config_text(hmac: bool) -> str:
    return f"""\
    auth:
      vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
      {f'hmac: {{secrets: ["{HMAC_KEY}"]}}' if hmac else ""}
    server:
      max_unauthenticated_body_reads: {READS}
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
      - {{to: "+1 650 555 0100", user: doe}}
    """


def body() -> bytes:
    sample: dict[str, Any] = vapi_sample("assistant-request.pstn")
    sample["message"]["phoneNumber"]["number"] = "+16505550100"
    return json.dumps(sample).encode()


class Exchange:
    """One request sent straight to the ASGI app, with a body that arrives only when `finish` is set."""

    def __init__(
        self, path: str, headers: dict[str, str], content: bytes, *, hold: bool, client: str = "203.0.113.9"
    ) -> None:
        self.path = path
        self.client = client
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.content = content
        self.finish = asyncio.Event()
        if not hold:
            self.finish.set()
        self.reads = 0
        self.status: int | None = None
        self.response_headers: dict[bytes, bytes] = {}
        self.response = b""

    async def receive(self) -> dict[str, object]:
        self.reads += 1
        if self.reads == 1:
            return {"type": "http.request", "body": self.content[:10], "more_body": True}
        await self.finish.wait()
        return {"type": "http.request", "body": self.content[10:], "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = dict(message["headers"])
        else:
            self.response += message.get("body", b"")

    async def run(self, app: Starlette) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-length", str(len(self.content)).encode()), *self.headers],
            "client": (self.client, 50000),
            "server": ("proxy.test", 80),
        }
        await app(scope, self.receive, self.send)  # type: ignore[arg-type]


async def started(app: Starlette, exchanges: list[Exchange]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(exchange.run(app)) for exchange in exchanges]
    await asyncio.sleep(0.05)
    return tasks


async def with_app(hmac: bool, check: Callable[[Starlette], Awaitable[None]]) -> None:
    app = create_app(config_from(config_text(hmac)))
    async with serving(app):
        await check(app)


@pytest.mark.parametrize("hmac", [False, True])
async def test_a_wrong_or_missing_secret_is_refused_before_the_body_is_read(hmac: bool) -> None:
    async def check(app: Starlette) -> None:
        for headers in ({}, {"X-Vapi-Secret": "wrong"}):
            exchange = Exchange("/vapi", headers, body(), hold=True)  # the body never finishes
            await asyncio.wait_for(exchange.run(app), 1)
            assert exchange.status == 401
            assert exchange.reads == 0
            assert exchange.response_headers[b"connection"] == b"close"

    await with_app(hmac, check)


async def test_the_right_secret_reads_the_body_and_answers() -> None:
    async def check(app: Starlette) -> None:
        exchange = Exchange("/vapi", {"X-Vapi-Secret": VAPI_SECRET}, body(), hold=False)
        await exchange.run(app)
        assert exchange.status == 200
        assert json.loads(exchange.response)["assistant"]["firstMessage"] == "You reached Dr. Jane Doe."
        assert b"connection" not in exchange.response_headers  # kept alive

    await with_app(False, check)


async def test_unauthenticated_body_reads_are_bounded_and_the_excess_gets_503_unread() -> None:
    signed = {"X-Signature": "00" * 32, "X-Timestamp": str(int(time.time()))}

    async def check(app: Starlette) -> None:
        # From as many addresses: one address holds at most an eighth of the reads (at least one).
        holders = [Exchange("/vapi", signed, body(), hold=True, client=f"203.0.113.{n}") for n in range(READS)]
        hooks = [Exchange("/nango/webhook", {"X-Nango-Signature": "x"}, b'{"type": "auth"}', hold=True)]
        tasks = await started(app, holders)
        assert all(exchange.reads == 2 and exchange.status is None for exchange in holders)
        for excess in [Exchange("/vapi", signed, body(), hold=True, client="203.0.113.77"), *hooks]:
            await asyncio.wait_for(excess.run(app), 1)
            assert excess.status == 503
            assert excess.reads == 0
            assert b"retry shortly" in excess.response
        # A shared secret needs no body to be checked: it is not held up by the reads in progress.
        authenticated = Exchange("/vapi", {"X-Vapi-Secret": VAPI_SECRET}, body(), hold=False)
        await asyncio.wait_for(authenticated.run(app), 1)
        assert authenticated.status == 200
        for exchange in holders:
            exchange.finish.set()
        await asyncio.gather(*tasks)
        assert [exchange.status for exchange in holders] == [401] * READS  # a wrong signature, read and checked
        # The reads are released: a valid HMAC request is read and served.
        timestamp = str(int(time.time()))
        content = body()
        plan = HmacPlan(secrets=(Secret(HMAC_KEY),))
        signature = hmac_signature(plan, Secret(HMAC_KEY), body=content, timestamp=timestamp)
        valid = Exchange("/vapi", {"X-Signature": signature, "X-Timestamp": timestamp}, content, hold=False)
        await valid.run(app)
        assert valid.status == 200

    await with_app(True, check)


def _literals(annotation: object) -> set[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return {value for value in typing.get_args(annotation) if isinstance(value, str)}
    return set().union(*(_literals(arg) for arg in typing.get_args(annotation)))


def test_the_known_message_types_are_exactly_vapis() -> None:
    from vapi.types.server_message_message import ServerMessageMessage

    published: set[str] = set()
    for model in typing.get_args(ServerMessageMessage):
        published |= _literals(typing.get_type_hints(model)["type"])
    assert published == VAPI_MESSAGE_TYPES


async def test_made_up_message_types_count_as_other_and_add_no_series() -> None:
    async with proxy_client(config_from(config_text(False))) as client:
        for index in range(300):
            message = {"message": {"type": f"made-up-{index}\nvapi_proxy_fake 1", "call": {"id": "c"}}}
            response = await client.post("/vapi", json=message, headers={"X-Vapi-Secret": VAPI_SECRET})
            assert response.status_code == 200
        status = {"message": {"type": "status-update", "status": "ended", "call": {"id": "c"}}}
        await client.post("/vapi", json=status, headers={"X-Vapi-Secret": VAPI_SECRET})
        metrics = (await client.get("/metrics")).text
    series = [line for line in metrics.splitlines() if line.startswith("vapi_proxy_server_messages_total")]
    assert sorted(series) == [
        'vapi_proxy_server_messages_total{type="other"} 300.0',
        'vapi_proxy_server_messages_total{type="status-update"} 1.0',
    ]


async def test_unfinished_signed_bodies_from_one_address_do_not_starve_signed_calls_from_another(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    reads = f"max_unauthenticated_body_reads: {READS}\n"
    path.write_text(textwrap.dedent(config_text(True)).replace(reads, reads + "  body_timeout_seconds: 30\n"))
    content = body()
    async with running_proxy(path, tmp_path) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(READS):  # from a second loopback address: signed heads whose bodies never finish
            reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
            head = f"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Signature: {'00' * 32}\r\nX-Timestamp: 1\r\n"
            writer.write(f"{head}Content-Length: {len(content)}\r\n\r\n".encode() + content[:100])
            stalled.append((reader, writer))
        timestamp = str(int(time.time()))
        plan = HmacPlan(secrets=(Secret(HMAC_KEY),))
        signature = hmac_signature(plan, Secret(HMAC_KEY), body=content, timestamp=timestamp)
        async with httpx.AsyncClient(base_url=proxy.url) as client:  # from 127.0.0.1
            response = await client.post(
                "/vapi", content=content, headers={"X-Signature": signature, "X-Timestamp": timestamp}
            )
        assert response.status_code == 200, response.text
        # One address holds at most an eighth of the reads (at least one): the others were refused unread.
        refused = await asyncio.gather(*(asyncio.wait_for(reader.read(), 5) for reader, _ in stalled[1:]))
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused), refused
        for _, writer in stalled:
            writer.close()
