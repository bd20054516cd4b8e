"""CPU time per request of the bare baseline, the fast path and the general path, in process (no sockets).

    .venv/bin/python bench/inprocess.py [--users 10000] [--mode warm|fixed] [--rounds 7] [--requests 5000]

Each app is called directly as ASGI with the benchmark's signed requests, in interleaved rounds (drift on a
shared machine hits all three alike); prints the median of each and the differences against the baseline.
What the proxy's own code costs a warm call, without uvicorn's HTTP parsing and the socket, which all three
would pay alike. `warm`: connection ids from the directory's cache (filled by a first call per user
through a fake Nango); `fixed`: connection ids in the routing file. The JSON call log is on, written to a
file, as in bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import baseline  # noqa: E402
from generate import PSTN_FIXTURE, VAPI_SECRET, RoutingOptions, environment, request_body, routing_yaml  # noqa: E402

from proxy.app import create_app  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.logs import configure_logging  # noqa: E402


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params.get("tags[end_user_id]")
    connection = {"connection_id": f"conn-{user}", "created": "2026-10-02T09:12:44.120Z", "errors": []}
    return httpx.Response(200, json={"connections": [connection | {"tags": {"end_user_id": user}}]})


async def measure(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    os.environ.update(environment())
    options = RoutingOptions(
        users=args.users, fixed_ids=args.mode == "fixed", index_refresh_seconds=0, nango_url="http://nango.test"
    )
    config = parse_config(routing_yaml(options), "routing.yaml", os.environ)
    log = os.open(scratch / "proxy.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 2)  # the call lines go to a file, as under bench/run.py
    configure_logging("json", "INFO")
    fixture = json.loads(PSTN_FIXTURE.read_text())
    bodies = [request_body(user, fixture) for user in range(args.users)]
    (scratch / "answer.json").write_bytes(b"x" * 1430)
    os.environ[baseline.ANSWER_ENV] = str(scratch / "answer.json")
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.MockTransport(nango)))
        apps: dict[str, Any] = {
            "baseline": baseline.create_app(),
            "fast path": create_app(config, http_client=upstream),
            "general path": create_app(config, http_client=upstream, fast_path=False),
        }
        for name in ("fast path", "general path"):
            await stack.enter_async_context(apps[name].router.lifespan_context(apps[name]))
        secret = VAPI_SECRET.encode()
        headers = [(b"host", b"proxy"), (b"x-vapi-secret", secret), (b"content-type", b"application/json")]

        async def send(message: object) -> None:
            pass

        async def serve(app: Any, requests: int) -> None:
            for index in range(requests):
                body = bodies[index % len(bodies)]
                receive = _receive([{"type": "http.request", "body": body, "more_body": False}])

                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": "/vapi",
                    "raw_path": b"/vapi",
                    "query_string": b"",
                    "root_path": "",
                    "headers": [*headers, (b"content-length", b"%d" % len(body))],
                    "client": ("127.0.0.1", 50000),
                    "server": ("127.0.0.1", 8080),
                }
                await app(scope, receive, send)

        for app in apps.values():
            await serve(app, len(bodies))  # every user once: caches filled, every answer prepared
        runs: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.rounds):
            for name, app in apps.items():
                started = time.process_time()
                await serve(app, args.requests)
                runs[name].append((time.process_time() - started) / args.requests * 1e6)
    return {name: statistics.median(found) for name, found in runs.items()}


def _receive(messages: list[dict[str, object]]) -> Any:
    async def receive() -> dict[str, object]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    return receive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--mode", choices=("warm", "fixed"), default="warm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000, help="requests per app per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures = asyncio.run(measure(args, Path(scratch)))
    bare = figures["baseline"]
    for name, micros in figures.items():
        extra = "" if name == "baseline" else f"  ({micros - bare:+.1f} µs over the baseline)"
        print(f"{name:>12}: {micros:5.1f} µs CPU per request{extra}", file=sys.stdout)


if __name__ == "__main__":
    main()
