"""A fake Nango for the benchmark: `GET /connections` as Nango documents it, with latency, errors and hangs.

Shapes follow /work/shared/nango/NOTES.md: `{"connections": [ApiPublicConnection]}` filtered by
`integrationId` and `tags[end_user_id]`, or paged with `limit`/`page`; errors as
`{"error": {"code", "message"}}`; `X-RateLimit-*` headers on every authenticated answer.
User `u{i:06d}` owns connection `conn-u{i:06d}` (bench/generate.py uses the same names).

    python bench/fake_nango.py --port 8900 --users 10000 --latency-ms 200 --error-rate 0 [--hang]

`GET /_stats` returns how many requests it saw, per user and for list pages; `POST /_reset` zeroes them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

INTEGRATION = "google-calendar"
USER = re.compile(r"u([0-9]{6})")


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


@dataclass
class Stats:
    requests: int = 0
    list_pages: int = 0
    unauthorised: int = 0
    errors: int = 0
    hung: int = 0
    per_user: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        counts = list(self.per_user.values())
        return {
            "requests": self.requests,
            "list_pages": self.list_pages,
            "unauthorised": self.unauthorised,
            "errors": self.errors,
            "hung": self.hung,
            "users_looked_up": len(counts),
            "user_requests": sum(counts),
            "max_requests_per_user": max(counts, default=0),
            "users_with_more_than_one": sum(1 for c in counts if c > 1),
        }


def connection(i: int) -> dict[str, object]:
    """An `ApiPublicConnection`, tags first, with the deprecated `end_user` record too."""
    user = f"u{i:06d}"
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
        "tags": {"end_user_id": user},
    }


def create_app(behaviour: Behaviour) -> Starlette:
    stats = Stats()
    rng = random.Random(behaviour.seed)
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
        params = request.query_params
        user = params.get("tags[end_user_id]")
        if user is not None:
            stats.per_user[user] += 1
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
        if params.get("integrationId") != INTEGRATION:
            return error(400, "invalid_query_params", "integrationId")
        if user is not None:
            match = USER.fullmatch(user)
            found = [connection(int(match.group(1)))] if match and int(match.group(1)) < behaviour.users else []
            return answer(200, {"connections": found})
        limit = min(max(int(params.get("limit", "100")), 1), 2000)
        page = max(int(params.get("page", "0")), 0)
        newest_first = range(behaviour.users - 1 - page * limit, max(behaviour.users - 1 - (page + 1) * limit, -1), -1)
        return answer(200, {"connections": [connection(i) for i in newest_first]})

    async def stats_endpoint(request: Request) -> Response:
        return Response(orjson.dumps(stats.summary()), media_type="application/json")

    async def reset(request: Request) -> Response:
        nonlocal stats
        stats = Stats()
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/connections", connections, methods=["GET"]),
            Route("/_stats", stats_endpoint, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
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
    args = parser.parse_args()
    behaviour = Behaviour(
        users=args.users,
        latency=args.latency_ms / 1000,
        error_rate=args.error_rate,
        error_status=args.error_status,
        hang=args.hang,
        rate_limit=args.rate_limit,
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
