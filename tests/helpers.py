"""Shared test helpers: Vapi sample bodies and the app served in-process."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.config import Config, parse_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VAPI_SECRET = "test-vapi-secret-8f2k"


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
