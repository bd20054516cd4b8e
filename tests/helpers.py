"""Shared test helpers: Vapi sample bodies, configs, the app served in-process and `serve` in a subprocess, free
ports, and waiting for a state (by polling a condition, never by sleeping a guessed time)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.config import Config, parse_config

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VAPI_SECRET = "test-vapi-secret-8f2k"


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `condition()` (plain or async) holds, checking every 10 ms; fail after `timeout` seconds.
    The timeout only bounds a test that would otherwise hang: the state is waited for, not a guessed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def longest_chain(log: list[tuple[str, float, float]]) -> int:
    """The most requests in `log` (op, sent, answered) that ran one after another, each sent after the one
    before was answered: what a tool's answer waits for at a fake's latency per request."""
    depth: list[int] = []
    done = sorted(log, key=lambda entry: entry[1])
    for i, (_, sent, _) in enumerate(done):
        depth.append(1 + max((depth[j] for j in range(i) if done[j][2] <= sent), default=0))
    return max(depth, default=0)


def vapi_sample(name: str) -> dict[str, Any]:
    """A Vapi request body from tests/fixtures/vapi (composites of Vapi's published spec)."""
    data: dict[str, Any] = json.loads((FIXTURES / "vapi" / f"{name}.json").read_text())
    return data


def config_from(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "routing.yaml", {"VAPI_SERVER_SECRET": VAPI_SECRET, **(env or {})})


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, behind an httpx client (no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            yield client


@contextlib.asynccontextmanager
async def proxy_client(config: Config, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(config, **options)) as client:
        yield client


# Agency mode: two tenants with the same user id ("u1") on the same called number, one tenant in a file of
# its own, one inline; each with its own Vapi secret and Nango environment.
ACME_SECRET = "acme-vapi-secret-1a"
BOBS_SECRET = "bobs-vapi-secret-2b"
SHARED_NUMBER = "+14155550100"
TENANT_TEMPLATE = """\
default:
  firstMessage: "Hello from {business}, this is {{{{user_name}}}}."
  model: {{provider: openai, model: gpt-4o, messages: [{{role: system, content: "Answer for {business}."}}]}}
  voice: {{provider: vapi, voiceId: Elliot}}
"""
ACME_FILE = f"""\
auth:
  vapi_secrets: {ACME_SECRET}
nango:
  base_url: https://nango.test
  secret_key: acme-nango-key
  webhook_signing_keys: acme-webhook-key
  index_refresh_seconds: 0
templates:
{textwrap.indent(TENANT_TEMPLATE.format(business="Acme"), "  ")}users:
  - {{id: u1, name: Ada Acme, timezone: America/New_York}}
routes:
  - {{to: "{SHARED_NUMBER}", user: u1}}
"""
AGENCY_FILE = f"""\
server:
  public_url: https://calls.example.com
tenants:
  acme:
    file: tenants/acme.yaml
  bobs:
    auth:
      vapi_secrets: {BOBS_SECRET}
    nango:
      base_url: https://nango.test
      secret_key: bobs-nango-key
      webhook_signing_keys: bobs-webhook-key
      index_refresh_seconds: 0
    templates:
{textwrap.indent(TENANT_TEMPLATE.format(business="Bob's"), "      ")}    users:
      - {{id: u1, name: Bob Bobs, timezone: Europe/London}}
    routes:
      - {{to: "{SHARED_NUMBER}", user: u1}}
"""


def write_agency(directory: Path, agency: str = AGENCY_FILE, acme: str = ACME_FILE) -> Path:
    """The agency file (and tenant acme's own file) in `directory`; returns the agency file's path."""
    (directory / "tenants").mkdir(exist_ok=True)
    (directory / "tenants" / "acme.yaml").write_text(acme)
    path = directory / "agency.yaml"
    path.write_text(agency)
    return path


@dataclass
class Proxy:
    """`python -m proxy serve` running in a subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@contextlib.asynccontextmanager
async def running_proxy(config: Path, tmp_path: Path, log_format: str = "json", *options: str) -> AsyncIterator[Proxy]:
    """`python -m proxy serve` on a free loopback port, ready (or the test fails with its log)."""
    port = free_port()
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        command = ["serve", "--config", str(config), "--port", str(port), "--log-format", log_format, *options]
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", *command],
            cwd=ROOT,
            env={**os.environ, "VAPI_SERVER_SECRET": VAPI_SECRET},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proxy = Proxy(process, f"http://127.0.0.1:{port}", log)
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as client:

            async def ready() -> bool:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/readyz")).status_code == 200
                return False

            await eventually(ready, 60.0)  # a hang guard: two workers on a busy machine can take 10 s to start
        yield proxy
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)


async def wait_for_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The process's exit status, once it has exited; fails if it has not within `timeout` seconds."""
    await eventually(lambda: process.poll() is not None, timeout)
    code = process.poll()
    assert code is not None
    return code
