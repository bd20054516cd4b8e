"""A fake Nango for the benchmark: `GET /connections` as Nango documents it, with latency, errors and hangs.

Shapes follow /work/shared/nango/NOTES.md: `{"connections": [ApiPublicConnection]}` filtered by
`integrationId` and `tags[end_user_id]`, or paged with `limit`/`page`; errors as
`{"error": {"code", "message"}}`; `X-RateLimit-*` headers on every authenticated answer.
User `u{i:06d}` owns connection `conn-u{i:06d}` (bench/generate.py uses the same names). With
`--tagged`, each connection also carries the routing tag `vapi_number: +1650{i:07d}` (tag routing,
docs/onboarding.md), and `tags[vapi_number]=` filters like any tag: exact value, the query parsed like
Nango's `qs` (a raw `+` is a space, so clients must send `%2B`). `connectionId=` filters too.

    python bench/fake_nango.py --port 8900 --users 10000 --latency-ms 200 --error-rate 0 [--hang] [--tagged]
        [--fail-page 7 --fail-times 2 --fail-status 429 --retry-after 0]

`GET /_stats` returns how many requests it saw, per user and for list pages; `POST /_reset` zeroes them.
`POST /_connect` with `{"connection_id": ..., "tags": {...}}` adds a connection (newest first, as if a
user just finished a Connect session) and answers the `creation` webhook body Nango would send.
`POST /connect/sessions` makes a session whose link points here: opening it (`curl LINK`) stands for the
user connecting Google; the fake then creates the connection with the session's tags and, with
`--webhook-url`, sends the signed `creation` webhook there (docs/onboarding.md walks through it). A session
limited to `outlook-calendar` makes a Microsoft connection; with `--graph`, `/proxy/v1.0/...` answers as
Microsoft Graph behind Nango's proxy (the calendar of tests/graph_fakes.py; needs the test extra).
`PATCH /connections/{connectionId}?provider_config_key=` with `{"tags": {...}}` replaces a connection's
tags and answers `{"success": true}`, as Nango's does (`assign` uses it); like Nango, it sends no webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import math
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

INTEGRATION = "google-calendar"
# A Microsoft 365 integration: its connections' `provider` is Nango's `microsoft`, and `/proxy/v1.0/...` answers
# as Microsoft Graph does (tests/graph_fakes.py, which needs the test extra).
OUTLOOK_INTEGRATION = "outlook-calendar"
PROVIDERS = {INTEGRATION: "google-calendar", OUTLOOK_INTEGRATION: "microsoft"}
USER = re.compile(r"u([0-9]{6})")
NUMBER = re.compile(r"\+1650([0-9]{7})")
CONNECTION = re.compile(r"conn-u([0-9]{6})")


@dataclass
class Behaviour:
    users: int = 10_000
    latency: float = 0.0  # seconds before each answer
    error_rate: float = 0.0  # fraction of answers that are `error_status`
    error_status: int = 500
    hang: bool = False  # accept the request, never answer
    rate_limit: int = 1_000_000  # X-RateLimit-Limit per minute
    secret_key: str = "bench-nango-secret-key"
    seed: int = 1
    tagged: bool = False  # every connection carries `vapi_number`
    fail_page: int | None = None  # this list page fails `fail_times` times first
    fail_times: int = 0
    fail_status: int = 429
    retry_after: str = "0"
    webhook_url: str | None = None  # where a completed Connect session's webhook is sent
    graph: bool = False  # answer /proxy/v1.0/... as Microsoft Graph (needs the test extra)


@dataclass
class Stats:
    requests: int = 0
    list_pages: int = 0
    lookups: int = 0  # by tag value or connection id
    unauthorised: int = 0
    errors: int = 0
    hung: int = 0
    per_user: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        counts = list(self.per_user.values())
        return {
            "requests": self.requests,
            "list_pages": self.list_pages,
            "lookups": self.lookups,
            "unauthorised": self.unauthorised,
            "errors": self.errors,
            "hung": self.hung,
            "users_looked_up": len(counts),
            "user_requests": sum(counts),
            "max_requests_per_user": max(counts, default=0),
            "users_with_more_than_one": sum(1 for c in counts if c > 1),
        }


def number_of(i: int) -> str:
    return f"+1650{i:07d}"


def connection(i: int, tagged: bool = False) -> dict[str, object]:
    """An `ApiPublicConnection`, tags first, with the deprecated `end_user` record too."""
    user = f"u{i:06d}"
    tags = {"end_user_id": user, "vapi_number": number_of(i)} if tagged else {"end_user_id": user}
    return {
        "id": 1000 + i,
        "connection_id": f"conn-{user}",
        "provider_config_key": INTEGRATION,
        "provider": "google-calendar",
        "created": "2026-10-02T09:12:44.120Z",
        "metadata": None,
        "errors": [],
        "end_user": {
            "id": user,
            "display_name": f"User {i}",
            "email": f"{user}@example.com",
            "tags": None,
            "organization": {"id": "org_9", "display_name": "Acme"},
        },
        "tags": tags,
    }


def _valid_tags(tags: object) -> bool:
    """Nango's tag rules (packages/shared/lib/services/tags/schema.ts): at most 10 keys, values 1-255 chars."""
    if tags is None:
        return True
    return (
        isinstance(tags, dict)
        and len(tags) <= 10
        and all(isinstance(v, str) and 1 <= len(v) <= 255 for v in tags.values())
    )


def create_app(behaviour: Behaviour) -> Starlette:
    stats = Stats()
    rng = random.Random(behaviour.seed)
    added: list[dict[str, object]] = []
    retagged: dict[str, dict[str, str]] = {}  # generated connections' tags as a PATCH replaced them
    sessions: dict[str, dict[str, Any]] = {}
    graph: Any = None
    if behaviour.graph:
        # At start: msgraph-sdk builds its models for seconds on first use, longer than a proxied call waits.
        import respx

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.graph_fakes
        from tests.graph_fakes import FakeGraph

        graph = FakeGraph(respx.MockRouter(assert_all_called=False))
    failures: Counter[int] = Counter()
    window = {"start": time.time(), "used": 0}

    def answer(status: int, content: object) -> Response:
        now = time.time()
        if now - window["start"] >= 60:
            window["start"], window["used"] = now, 0
        window["used"] += 1
        headers = {
            "X-RateLimit-Limit": str(behaviour.rate_limit),
            "X-RateLimit-Remaining": str(max(behaviour.rate_limit - int(window["used"]), 0)),
            "X-RateLimit-Reset": str(math.ceil(window["start"] + 60)),
        }
        return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")

    def error(status: int, code: str, message: str) -> Response:
        return answer(status, {"error": {"code": code, "message": message}})

    async def connections(request: Request) -> Response:
        stats.requests += 1
        if request.headers.get("authorization") != f"Bearer {behaviour.secret_key}":
            stats.unauthorised += 1
            return Response(orjson.dumps({"error": {"code": "unknown_environment"}}), 401)
        params = request.query_params  # parse_qsl, like Nango's qs: a raw "+" is a space
        user = params.get("tags[end_user_id]")
        number = params.get("tags[vapi_number]")
        connection_id = params.get("connectionId")
        if user is not None:
            stats.per_user[user] += 1
        elif number is not None or connection_id is not None:
            stats.lookups += 1
        else:
            stats.list_pages += 1
        if behaviour.hang:
            stats.hung += 1
            await asyncio.sleep(3600)
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        if behaviour.error_rate and rng.random() < behaviour.error_rate:
            stats.errors += 1
            return error(behaviour.error_status, "server_error", "injected failure")
        integration = params.get("integrationId")
        if integration is not None and integration not in PROVIDERS:
            return error(400, "invalid_query_params", "integrationId")
        if user is not None or number is not None or connection_id is not None:
            found = find(user, number, connection_id)
            return answer(200, {"connections": [c for c in found if integration in (None, c["provider_config_key"])]})
        limit = min(max(int(params.get("limit", "100")), 1), 2000)
        page = max(int(params.get("page", "0")), 0)
        if page == behaviour.fail_page and failures[page] < behaviour.fail_times:
            failures[page] += 1
            stats.errors += 1
            if behaviour.fail_status == 429:
                response = error(429, "rate_limit_exceeded", "too many requests")
                response.headers["Retry-After"] = behaviour.retry_after
                return response
            return error(behaviour.fail_status, "server_error", "injected page failure")
        # Connections added at runtime are the newest: they come first.
        listed = list(reversed(added))
        start, end = page * limit, (page + 1) * limit
        head = listed[start:end]
        first, last = max(start - len(listed), 0), max(end - len(listed), 0)
        newest_first = range(behaviour.users - 1 - first, max(behaviour.users - 1 - last, -1), -1)
        return answer(200, {"connections": head + [generated(i) for i in newest_first]})

    def generated(i: int) -> dict[str, object]:
        """Generated connection `i`, with the tags a PATCH gave it, if any."""
        raw = connection(i, behaviour.tagged)
        if (tags := retagged.get(str(raw["connection_id"]))) is not None:
            raw["tags"] = dict(tags)
        return raw

    def find(user: str | None, number: str | None, connection_id: str | None) -> list[dict[str, object]]:
        def wanted(c: dict[str, object]) -> bool:
            tags: dict[str, str] = c["tags"]  # type: ignore[assignment]
            return (
                (user is None or tags.get("end_user_id") == user)
                and (number is None or tags.get("vapi_number") == number)
                and (connection_id is None or c["connection_id"] == connection_id)
            )

        candidates = list(reversed(added))
        index = None
        if user is not None and (match := USER.fullmatch(user)):
            index = int(match.group(1))
        if number is not None and (match := NUMBER.fullmatch(number)) and behaviour.tagged:
            index = int(match.group(1)) if index is None or index == int(match.group(1)) else -1
        if connection_id is not None and (match := CONNECTION.fullmatch(connection_id)):
            index = int(match.group(1)) if index is None or index == int(match.group(1)) else -1
        if index is not None and 0 <= index < behaviour.users:
            candidates.append(generated(index))
        # A PATCH may have given a generated connection tags its name does not predict.
        seen = {c["connection_id"] for c in candidates}
        for name in retagged:
            if name not in seen and (match := CONNECTION.fullmatch(name)) and int(match.group(1)) < behaviour.users:
                candidates.append(generated(int(match.group(1))))
        return [c for c in candidates if wanted(c)]

    def create(connection_id: str, tags: dict[str, str], integration: str = INTEGRATION) -> bytes:
        """A new connection with `tags` (keys lowercased, as Nango stores them); its `creation` webhook body."""
        raw = connection(0)
        raw.update(id=10_000_000 + len(added), connection_id=connection_id, end_user=None)
        raw.update(provider_config_key=integration, provider=PROVIDERS[integration])
        raw["created"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        raw["tags"] = {key.lower(): value for key, value in tags.items()}
        added.append(raw)
        webhook = {
            "from": "nango", "type": "auth", "operation": "creation", "success": True,
            "connectionId": connection_id, "providerConfigKey": integration, "provider": PROVIDERS[integration],
            "authMode": "OAUTH2", "environment": "prod", "tags": raw["tags"],
        }  # fmt: skip
        return orjson.dumps(webhook)

    async def patch_connection(request: Request) -> Response:
        """Nango's `PATCH /connections/{connectionId}` (packages/server/lib/controllers/connection/connectionId/
        patchConnection.ts): the body's `tags` replace the connection's whole tag object."""
        stats.requests += 1
        if request.headers.get("authorization") != f"Bearer {behaviour.secret_key}":
            stats.unauthorised += 1
            return Response(orjson.dumps({"error": {"code": "unknown_environment"}}), 401)
        key = request.query_params.get("provider_config_key")
        if not key:
            return error(400, "invalid_query_params", "provider_config_key is required")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, "invalid_body", "not JSON")
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) - {"tags", "end_user"} or not _valid_tags(tags):
            return error(400, "invalid_body", "tags must be an object of at most 10 string values")
        if key != INTEGRATION:
            return error(400, "unknown_provider_config", "Provider does not exists")
        connection_id = request.path_params["connection_id"]
        (found,) = find(None, None, connection_id) or (None,)
        if found is None:
            return error(404, "not_found", "Failed to find connection")
        if tags is not None:
            stored = {str(k).lower(): v for k, v in tags.items()}  # Nango stores keys lowercased
            if found in added:
                found["tags"] = stored
            else:
                retagged[connection_id] = stored
        return answer(200, {"success": True})

    async def connect(request: Request) -> Response:
        body = orjson.loads(await request.body())
        return Response(create(body["connection_id"], body["tags"]), media_type="application/json")

    async def connect_session(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {behaviour.secret_key}":
            return Response(orjson.dumps({"error": {"code": "unknown_environment"}}), 401)
        body = orjson.loads(await request.body())
        token = f"nango_connect_session_{len(sessions) + 1}"
        allowed = body.get("allowed_integrations") or [INTEGRATION]
        if allowed[0] not in PROVIDERS:
            return Response(orjson.dumps({"error": {"code": "invalid_body", "message": "allowed_integrations"}}), 400)
        sessions[token] = {"tags": dict(body.get("tags") or {}), "integration": allowed[0]}
        link = f"{request.base_url}_connect-ui?session_token={token}"
        data = {"token": token, "connect_link": link, "expires_at": "2099-01-01T00:00:00.000Z"}
        return Response(orjson.dumps({"data": data}), 201, media_type="application/json")

    async def connect_ui(request: Request) -> Response:
        """Opening the link stands for the user finishing Connect: the connection is made with the session's
        tags and the signed `creation` webhook is sent to --webhook-url, as Nango would."""
        token = request.query_params.get("session_token", "")
        if token not in sessions:
            return Response(b"unknown or used session\n", 404)
        connection_id = f"conn-{token.rsplit('_', 1)[1]}-{int(time.time())}"
        session = sessions.pop(token)
        webhook = create(connection_id, session["tags"], session["integration"])
        delivered = "no --webhook-url"
        if behaviour.webhook_url:
            signature = hmac.new(behaviour.secret_key.encode(), webhook, hashlib.sha256).hexdigest()
            headers = {"X-Nango-Hmac-Sha256": signature, "Content-Type": "application/json"}
            async with httpx.AsyncClient() as http:
                reply = await http.post(behaviour.webhook_url, content=webhook, headers=headers)
            delivered = f"{reply.status_code} {reply.text}"
        return Response(f"connected {connection_id}; webhook: {delivered}\n".encode())

    async def graph_proxy(request: Request) -> Response:
        """Nango's proxy in front of a fake Microsoft Graph: the request as Nango forwards it (its own headers
        and the `Nango-Proxy-*` ones), answered from the in-memory calendars of tests/graph_fakes.py."""
        if request.headers.get("authorization") != f"Bearer {behaviour.secret_key}":
            return Response(orjson.dumps({"error": {"code": "unknown_environment"}}), 401)
        if graph is None:
            return Response(orjson.dumps({"error": {"code": "invalid_request", "message": "start with --graph"}}), 400)
        url = f"https://nango.test{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        forwarded = httpx.Request(request.method, url, headers=request.headers.raw, content=await request.body())
        reply = await graph.resolve(forwarded)
        return Response(reply.content, reply.status_code, headers=dict(reply.headers))

    async def stats_endpoint(request: Request) -> Response:
        return Response(orjson.dumps(stats.summary()), media_type="application/json")

    async def reset(request: Request) -> Response:
        nonlocal stats
        stats = Stats()
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/connections", connections, methods=["GET"]),
            Route("/connections/{connection_id}", patch_connection, methods=["PATCH"]),
            Route("/_stats", stats_endpoint, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_connect", connect, methods=["POST"]),
            Route("/connect/sessions", connect_session, methods=["POST"]),
            Route("/_connect-ui", connect_ui, methods=["GET"]),
            Route("/proxy/{path:path}", graph_proxy, methods=["GET", "POST", "PATCH", "DELETE"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-status", type=int, default=500)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--rate-limit", type=int, default=1_000_000)
    parser.add_argument("--tagged", action="store_true", help="every connection carries a vapi_number tag")
    parser.add_argument(
        "--graph", action="store_true", help="answer /proxy/v1.0/... as Microsoft Graph (tests/graph_fakes.py)"
    )
    parser.add_argument("--fail-page", type=int, default=None, help="this list page fails --fail-times times first")
    parser.add_argument("--fail-times", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=429)
    parser.add_argument("--retry-after", default="0", help="Retry-After of an injected 429 (seconds)")
    parser.add_argument("--webhook-url", help="send signed creation webhooks here (the proxy's /nango/webhook)")
    parser.add_argument("--secret-key", default=Behaviour.secret_key, help="the key clients and webhooks use")
    args = parser.parse_args()
    behaviour = Behaviour(
        users=args.users,
        latency=args.latency_ms / 1000,
        error_rate=args.error_rate,
        error_status=args.error_status,
        hang=args.hang,
        rate_limit=args.rate_limit,
        tagged=args.tagged,
        fail_page=args.fail_page,
        fail_times=args.fail_times,
        fail_status=args.fail_status,
        retry_after=args.retry_after,
        webhook_url=args.webhook_url,
        graph=args.graph,
        secret_key=args.secret_key,
    )
    uvicorn.run(
        create_app(behaviour),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
