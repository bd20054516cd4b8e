"""The bare-framework limit: one Starlette endpoint that parses the body with orjson and returns a fixed
assistant of the same size as the proxy's. Served exactly like the proxy (uvicorn, uvloop, httptools,
one worker), so the difference between the two is what the proxy itself costs.

    BENCH_BASELINE_ANSWER=answer.json python -m uvicorn baseline:create_app --factory --app-dir bench ...
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER_ENV = "BENCH_BASELINE_ANSWER"


def create_app() -> Starlette:
    answer = Path(os.environ[ANSWER_ENV]).read_bytes()

    async def vapi(request: Request) -> Response:
        message = orjson.loads(await request.body())["message"]
        if message["type"] != "assistant-request":
            return Response(b"{}", media_type="application/json")
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route("/vapi", vapi, methods=["POST"])])
