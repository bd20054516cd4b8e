"""Factories for Nango's documented JSON shapes (see /work/shared/nango/NOTES.md) and small test doubles."""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy.metrics import Metrics
from proxy.nango import NangoClient, NangoSettings
from proxy.secret import Secret

BASE_URL = "https://nango.test"
SECRET_KEY = "9f2c61d4-7a0b-4b1e-SECRET-KEY-c0ffee"
SIGNING_KEY = "whsec-current-signing-key"
OLD_SIGNING_KEY = "whsec-previous-signing-key"
INTEGRATION = "google-calendar"


def settings(**overrides: Any) -> NangoSettings:
    values: dict[str, Any] = {"base_url": BASE_URL, "secret_key": Secret(SECRET_KEY)}
    values.update(overrides)
    return NangoSettings(**values)


def connection_json(
    connection_id: str,
    user_id: str | None = "usr_1",
    *,
    created: str = "2026-10-02T09:12:44.120Z",
    errors: list[dict[str, str]] | None = None,
    tag: bool = True,
    end_user: bool = False,
    tag_key: str = "end_user_id",
) -> dict[str, Any]:
    """An `ApiPublicConnection` as `GET /connections` returns it."""
    return {
        "id": zlib.crc32(connection_id.encode()) % 100_000,
        "connection_id": connection_id,
        "provider_config_key": INTEGRATION,
        "provider": "google-calendar",
        "created": created,
        "metadata": None,
        "errors": errors or [],
        "end_user": (
            {
                "id": user_id,
                "display_name": "Jane Doe",
                "email": "jane@example.com",
                "tags": None,
                "organization": {"id": "org_9", "display_name": "Acme"},
            }
            if end_user
            else None
        ),
        "tags": {tag_key: user_id} if tag and user_id else {},
    }


AUTH_ERROR = [{"type": "auth", "log_id": "x9f00"}]


def connections_body(*conns: dict[str, Any]) -> dict[str, Any]:
    return {"connections": list(conns)}


def error_body(code: str, message: str = "something went wrong") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def rate_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(reset)}


def auth_webhook(
    operation: str = "creation",
    *,
    success: bool = True,
    connection_id: str = "conn-new",
    user_id: str | None = "usr_1",
    integration: str = INTEGRATION,
    in_tags: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "nango",
        "type": "auth",
        "operation": operation,
        "success": success,
        "connectionId": connection_id,
        "providerConfigKey": integration,
        "provider": "google-calendar",
        "authMode": "OAUTH2",
        "environment": "prod",
        "endUser": {"endUserId": user_id, "organizationId": "org_9", "endUserEmail": "jane@example.com", "tags": {}},
        "tags": {"end_user_id": user_id} if in_tags else {},
    }
    if not success:
        body["error"] = {"type": "refresh_token_external_error", "description": "invalid_grant"}
    return body


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


def sign(body: bytes, key: str = SIGNING_KEY) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class FakeClock:
    """A monotonic clock and a wall clock that only move when told; `sleep` moves them."""

    now: float = 1000.0
    wall: float = 1_800_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def make_client(
    http: httpx.AsyncClient, metrics: Metrics, clock: FakeClock | None = None, **overrides: Any
) -> NangoClient:
    clock = clock or FakeClock()
    return NangoClient(
        http, settings(**overrides), metrics, clock=clock, wall_clock=clock.wall_clock, sleep=clock.sleep
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A counter's current value (0 when never incremented)."""
    value = metrics.registry.get_sample_value(f"vapi_proxy_{name}_total", labels)
    return value or 0.0
