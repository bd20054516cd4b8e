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
