"""The real server in a subprocess: real files, real signals, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from proxy.config import config_version
from proxy.http.fastpath import FLUSH_SECONDS
from tests.helpers import VAPI_SECRET, eventually, running_proxy, vapi_sample, wait_for_exit
from tests.nango_fakes import connection_json
from tests.routing_files import NUMBER, kubernetes_mount, kubernetes_swap, replace_file, routing_yaml

pytestmark = pytest.mark.anyio

CALLER = "+14155550123"  # the sample's customer: must never reach a log unmasked


def assistant_request(number: str = NUMBER) -> bytes:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = number
    return json.dumps(body).encode()


async def post_call(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/vapi", content=assistant_request(), headers={"X-Vapi-Secret": VAPI_SECRET})


async def test_file_changes_and_sighup_reload_the_running_server(tmp_path: Path) -> None:
    watch = {"reload_poll_seconds": 0.05, "shutdown_delay_seconds": 0}
    texts = {
        "A": routing_yaml("A", server=watch),
        "B": routing_yaml("B", server=watch),
        "A2": routing_yaml("A", server=watch | {"reload_poll_seconds": 0}),  # from here on only SIGHUP reloads
        "B2": routing_yaml("B", server=watch | {"reload_poll_seconds": 0}),
    }
    versions = {name: config_version(text) for name, text in texts.items()}
    path = kubernetes_mount(tmp_path / "conf", texts["A"])
    async with running_proxy(path, tmp_path) as proxy, httpx.AsyncClient(base_url=proxy.url) as client:

        async def serving(name: str) -> bool:
            return bool((await client.get("/readyz")).json()["config"]["version"] == versions[name])

        kubernetes_swap(tmp_path / "conf", texts["B"])  # what the kubelet does on a ConfigMap update
        await eventually(lambda: serving("B"))
        replace_file(path, texts["A2"])  # what an editor does
        await eventually(lambda: serving("A2"))

        path.write_text(texts["B2"])
        proxy.process.send_signal(signal.SIGHUP)
        await eventually(lambda: serving("B2"))
        answer = (await post_call(client)).json()
        assert answer["assistant"]["firstMessage"] == "[B] You reached Bob Brown."

        invalid = texts["A2"].replace("timezone: Europe/Paris", "timezone: Mars/Olympus")
        line = invalid[: invalid.index("Mars/Olympus")].count("\n") + 1
        issue = f"{path}:{line}: users[0].timezone: unknown IANA timezone 'Mars/Olympus' (e.g. America/New_York)"
        replace_file(path, invalid)
        proxy.process.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return (await client.get("/readyz")).json()["config_error"] is not None

        await eventually(refused)
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["config"]["version"] == versions["B2"]
        assert ready.json()["config_error"]["at"] == [f"{path}:{line}"]
        metrics = (await client.get("/metrics")).text
        assert 'vapi_proxy_config_reloads_total{result="ok"} 3.0' in metrics
        assert 'vapi_proxy_config_reloads_total{result="invalid"} 1.0' in metrics
        assert f'vapi_proxy_config_info{{version="{versions["B2"]}"}} 1.0' in metrics

        proxy.process.send_signal(signal.SIGTERM)
        assert await wait_for_exit(proxy.process, timeout=5) == 0
    reloads = [line for line in proxy.log_lines() if line["msg"] == "config reloaded"]
    assert [(r["reason"], r["old_version"], r["new_version"]) for r in reloads] == [
        ("file changed", versions["A"], versions["B"]),
        ("file changed", versions["B"], versions["A2"]),
        ("SIGHUP", versions["A2"], versions["B2"]),
    ]
    errors = [line["issue"] for line in proxy.log_lines() if line["msg"] == "config error"]
    assert errors == [issue]


@dataclass
class SlowNango:
    """A Nango that holds every lookup until released, on a real loopback socket."""

    server: ThreadingHTTPServer
    arrived: threading.Event
    release: threading.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def slow_nango() -> Iterator[SlowNango]:
    arrived, release = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.set()
            release.wait(timeout=10)
            user = parse_qs(urlparse(self.path).query)["tags[end_user_id]"][0]
            body = json.dumps({"connections": [connection_json(f"conn-{user}", user)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SlowNango(server, arrived, release)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_sigterm_turns_readyz_503_lets_the_call_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    delay, drain = 1.0, 5
    with slow_nango() as nango:
        text = routing_yaml(
            "A",
            nango_url=nango.url,
            server={"shutdown_delay_seconds": delay, "drain_seconds": drain, "deadline_seconds": 7.0},
        )
        config = tmp_path / "routing.yaml"
        config.write_text(text.replace("index_refresh_seconds: 0", "index_refresh_seconds: 0\n  read_timeout: 5"))
        async with (
            running_proxy(config, tmp_path) as proxy,
            httpx.AsyncClient(base_url=proxy.url, timeout=10) as caller,
            httpx.AsyncClient(base_url=proxy.url, limits=httpx.Limits(max_keepalive_connections=0)) as probe,
        ):
            in_flight = asyncio.create_task(post_call(caller))
            await eventually(lambda: _now(nango.arrived.is_set()))  # the call waits on Nango

            proxy.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            async def readyz_is(status: int) -> bool:
                try:
                    return (await probe.get("/readyz")).status_code == status
                except httpx.TransportError:  # a loaded machine may already be past the delay
                    return False

            await eventually(lambda: readyz_is(503))
            assert not in_flight.done()

            async def listener_closed() -> bool:
                try:
                    await probe.get("/livez")
                except httpx.TransportError:  # refused, or accepted and dropped while closing
                    return True
                return False

            await eventually(listener_closed)  # uvicorn's shutdown has begun, the call is still in flight
            assert not in_flight.done()
            nango.release.set()
            response = await in_flight
            assert response.status_code == 200
            assert response.json()["assistant"]["credentials"][0]["authorizationId"] == "conn-alice"
            assert await wait_for_exit(proxy.process, timeout=delay + drain) == 0
            assert time.monotonic() - signalled < delay + drain
    lines = proxy.log_lines()
    assert any(line["msg"] == "draining" and line["signal"] == "SIGTERM" for line in lines)
    (call,) = [line for line in lines if line["msg"] == "assistant-request"]
    assert call["outcome"] == "assistant" and call["connection"] == "nango"
    assert call["call_id"] == "0198c3a1-5e2f-7d41-9b8e-2a6c1f0e4d37"
    raw = proxy.log.read_text()
    for secret in (NUMBER, CALLER, VAPI_SECRET, "nango-test-secret-key"):
        assert secret not in raw


async def _now(value: bool) -> bool:
    return value


async def test_workers_count_into_one_metrics_page_drain_on_sigterm_and_lose_no_call_line(tmp_path: Path) -> None:
    delay = 2.0
    text = routing_yaml("A", server={"shutdown_delay_seconds": delay, "drain_seconds": 2})
    config = tmp_path / "routing.yaml"
    config.write_text(text.replace("timezone: Europe/Paris", "timezone: Europe/Paris\n    connection_id: conn-alice"))
    calls = 40
    async with (
        running_proxy(config, tmp_path, "json", "--workers", "2") as proxy,
        # A new connection per request, so the kernel hands them to both workers.
        httpx.AsyncClient(base_url=proxy.url, limits=httpx.Limits(max_keepalive_connections=0)) as client,
    ):
        answers = [await post_call(client) for _ in range(calls)]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["assistant"]["credentials"][0]["authorizationId"] for a in answers} == {"conn-alice"}
        expected = [
            f'vapi_proxy_assistant_requests_total{{outcome="assistant",reason="ok"}} {calls:.1f}',
            f'vapi_proxy_server_messages_total{{type="assistant-request"}} {calls:.1f}',
            f"vapi_proxy_assistant_request_seconds_count {calls:.1f}",
        ]

        async def all_counted() -> bool:
            metrics = (await client.get("/metrics")).text
            return all(line in metrics for line in expected)

        # Whichever worker answers the scrape sees every worker's counts (the other's within a second).
        await eventually(all_counted, timeout=5)
        # Another flush (every FLUSH_SECONDS in each worker process, on its own clock: real time is what is
        # tested here) must not hand any count over twice.
        await asyncio.sleep(FLUSH_SECONDS + 0.1)
        for _ in range(4):
            assert await all_counted()

        proxy.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async def draining() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get("/readyz")).status_code == 503
            return False

        await eventually(draining)  # 503 from a worker that still serves: without the drain, it would just close
        assert await wait_for_exit(proxy.process, timeout=delay + 10) == 0
        assert time.monotonic() - signalled >= delay
    lines = proxy.log_lines()  # every line is whole JSON, or this fails
    assert len([line for line in lines if line["msg"] == "assistant-request"]) == calls
    assert len([line for line in lines if line["msg"] == "draining" and line["signal"] == "SIGTERM"]) == 2
