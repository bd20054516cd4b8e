"""Factories for Nango's documented JSON shapes (see /work/shared/nango/NOTES.md) and small test doubles."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx

from proxy.metrics import Metrics
from proxy.nango.client import NangoClient, NangoSettings
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


# -- A stateful fake Nango -------------------------------------------------------------------------------------
# Follows Nango's server code (NangoHQ/nango): `GET /connections` validates its query strictly (unknown
# parameters are a 400), parses it like `qs` (a raw `+` is a space: send `%2B`), filters tags by exact value
# with keys lowercased, orders newest first and pages by offset; tag keys and values follow
# `packages/shared/lib/services/tags/schema.ts`; `PATCH /connections/{id}` replaces the whole tag object and
# sends no webhook; a completed Connect session creates a connection carrying the session's tags and an auth
# `creation` webhook carrying them too.

TAG_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-./]*")
LIST_PARAMS = {"connectionId", "search", "endUserId", "integrationId", "endUserOrganizationId", "limit", "page"}


class TagError(ValueError):
    pass


def normalise_tags(tags: object) -> dict[str, str]:
    """Nango's `connectionTagsSchema`: validate, then lowercase the keys."""
    if not isinstance(tags, dict):
        raise TagError("tags must be an object")
    if len(tags) > 10:
        raise TagError("Tags cannot contain more than 10 keys")
    normalised: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY.fullmatch(key) or len(key) > 64:
            raise TagError(f"bad tag key {key!r}")
        if not isinstance(value, str) or not 1 <= len(value) <= 255:
            raise TagError(f"bad tag value for {key!r}")
        if key.lower() in normalised:
            raise TagError("Duplicate tag key after case normalization")
        normalised[key.lower()] = value
    return normalised


@dataclass
class FakeNango:
    """An in-memory Nango environment as an httpx transport: `integration` is the default one, `add` can put a
    connection in another (`provider` then names Nango's provider, e.g. "microsoft")."""

    integration: str = INTEGRATION
    connections: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    # page number -> responses to give (in order) before answering that page normally
    page_failures: dict[int, list[httpx.Response]] = field(default_factory=dict)
    latency: float = 0.0
    down: bool = False  # every request answers 503, as during an outage
    _serial: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport())

    def add(
        self,
        connection_id: str,
        tags: dict[str, str],
        *,
        errors: list[dict[str, str]] | None = None,
        integration: str | None = None,
        provider: str = "google-calendar",
    ) -> dict[str, Any]:
        """A connection as if made through a Connect session with `tags`; newest so far."""
        self._serial += 1
        created = datetime(2026, 10, 1, tzinfo=UTC) + timedelta(minutes=self._serial)
        raw = connection_json(connection_id, None, created=created.isoformat().replace("+00:00", "Z"), errors=errors)
        raw |= {"id": self._serial, "provider_config_key": integration or self.integration, "provider": provider}
        raw["tags"] = normalise_tags(tags)
        self.connections.append(raw)
        return raw

    def find(self, connection_id: str) -> dict[str, Any] | None:
        return next((c for c in self.connections if c["connection_id"] == connection_id), None)

    def delete(self, connection_id: str) -> None:
        """Deleted in Nango's dashboard or API: no webhook is sent."""
        self.connections = [c for c in self.connections if c["connection_id"] != connection_id]

    def complete_session(self, token: str, connection_id: str) -> dict[str, Any]:
        """The user finished the Connect flow: the connection exists; returns the `creation` webhook body."""
        tags = self.sessions[token]
        self.add(connection_id, tags)
        webhook = auth_webhook("creation", connection_id=connection_id, user_id=None, integration=self.integration)
        webhook["tags"] = dict(tags)
        del webhook["endUser"]  # a session made with tags only has no end user
        return webhook

    def connect(self, tags: dict[str, str], connection_id: str) -> dict[str, Any]:
        """A Connect session with `tags`, completed by the user: returns the `creation` webhook body."""
        token = self._session({"tags": tags}).json()["data"]["token"]
        return self.complete_session(token, connection_id)

    def list_pages(self) -> int:
        return sum(1 for r in self.requests if r.url.path == "/connections" and "page" in r.url.params)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The answer to one request (synchronous: usable as a respx side effect)."""
        self.requests.append(request)
        if self.down:
            return httpx.Response(503, json=error_body("server_error"))
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return httpx.Response(401, json=error_body("unknown_environment"))
        # Parsed like `qs` does: a raw "+" is a space.
        query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        path = request.url.path
        if request.method == "GET" and path == "/connections":
            return self._list(query)
        if request.method == "POST" and path == "/connect/sessions":
            return self._session(json.loads(request.content))
        known = {self.integration} | {c["provider_config_key"] for c in self.connections}
        if path.startswith("/connections/") and query.get("provider_config_key") not in known:
            return httpx.Response(400, json=error_body("unknown_provider_config"))
        conn = self.find(unquote(path.removeprefix("/connections/")))
        if conn is None or conn["provider_config_key"] != query.get("provider_config_key"):
            return httpx.Response(404, json=error_body("not_found"))
        if request.method == "PATCH":
            try:
                conn["tags"] = normalise_tags(json.loads(request.content)["tags"])  # replaces, no merge
            except TagError as exc:
                return httpx.Response(400, json=error_body("invalid_body", str(exc)))
            return httpx.Response(200, json={"success": True})
        return httpx.Response(200, json=conn)

    def _list(self, query: dict[str, str]) -> httpx.Response:
        tags = {k[5:-1]: v for k, v in query.items() if k.startswith("tags[") and k.endswith("]")}
        unknown = set(query) - LIST_PARAMS - {f"tags[{k}]" for k in tags}
        if unknown:
            return httpx.Response(400, json=error_body("invalid_query_params", f"unknown {sorted(unknown)}"))
        try:
            wanted = normalise_tags(tags) if tags else {}
        except TagError as exc:
            return httpx.Response(400, json=error_body("invalid_query_params", str(exc)))
        found = [
            c
            for c in self.connections
            if query.get("integrationId") in (None, c["provider_config_key"])
            and query.get("connectionId") in (None, c["connection_id"])
            and all(c["tags"].get(k) == v for k, v in wanted.items())
        ]
        found.sort(key=lambda c: (c["created"], c["id"]), reverse=True)
        limit = int(query.get("limit", "10000"))
        page = int(query.get("page", "0"))
        if "page" in query and self.page_failures.get(page):
            return self.page_failures[page].pop(0)
        return httpx.Response(200, json={"connections": found[page * limit : (page + 1) * limit]})

    def _session(self, body: dict[str, Any]) -> httpx.Response:
        try:
            tags = normalise_tags(body.get("tags", {}))
        except TagError as exc:
            return httpx.Response(400, json=error_body("invalid_body", str(exc)))
        token = f"nango_connect_session_{len(self.sessions) + 1}"
        self.sessions[token] = tags
        data = {"token": token, "connect_link": f"https://connect.nango.dev/?session_token={token}",
                "expires_at": "2026-10-02T09:42:44.120Z"}  # fmt: skip
        return httpx.Response(201, json={"data": data})
