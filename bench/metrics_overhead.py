"""What the Prometheus metrics cost an assistant-request: the same requests, in-process, with the real
`Metrics` and with one whose counters do nothing, in interleaved rounds (so drift in CPU speed hits
both alike). Prints the median time per request of each and their ratio.

    .venv/bin/python bench/metrics_overhead.py [--requests 5000] [--rounds 15]

Two levels: `service` calls `CallService.assistant_request` directly (the strictest ratio: nothing
else dilutes the metrics' cost); `app` goes through the ASGI app with httpx's ASGITransport (auth,
body parsing, JSON encoding: what a request really pays, minus the socket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.metrics import MetricWrapperBase

from proxy.app import create_app
from proxy.config import parse_config
from proxy.metrics import Metrics
from proxy.runtime import Runtime

SECRET = "bench-vapi-secret"
USERS = 200


class NoOp:
    """Stands in for every counter, gauge and histogram: the calls are made, nothing is recorded."""

    def labels(self, *args: object, **kwargs: object) -> NoOp:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_to_current_time(self) -> None:
        pass

    def clear(self) -> None:
        pass


def noop_metrics() -> Metrics:
    metrics = Metrics()
    for name, value in vars(metrics).items():
        if isinstance(value, MetricWrapperBase):
            setattr(metrics, name, NoOp())
    return metrics


def routing() -> str:
    """Half the users have a fixed connection, half are looked up in Nango (then served from the cache)."""
    users = "".join(
        f"  - {{id: u{i}, name: User {i}, timezone: America/New_York"
        + (f", connection_id: conn-{i}}}\n" if i % 2 else "}\n")
        for i in range(USERS)
    )
    routes = "".join(f'  - {{to: "+1 650 555 {i:04d}", user: u{i}}}\n' for i in range(USERS))
    return f"""\
auth:
  vapi_secrets: ["{SECRET}"]
nango:
  base_url: https://nango.bench
  secret_key: bench-nango-key
  index_refresh_seconds: 0
templates:
  default:
    firstMessage: "Hello, you reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "You answer for {{{{user_name}}}}. Today is {{{{today}}}}."}}]
    voice: {{provider: vapi, voiceId: Elliot}}
users:
{users}routes:
{routes}"""


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params["tags[end_user_id]"]
    connection = {
        "id": 1,
        "connection_id": f"conn-{user}",
        "provider_config_key": "google-calendar",
        "provider": "google-calendar",
        "created": "2026-10-02T09:12:44.120Z",
        "errors": [],
        "tags": {"end_user_id": user},
    }
    return httpx.Response(200, json={"connections": [connection]})


def message(i: int) -> dict[str, Any]:
    number = f"+1650555{i % USERS:04d}"
    return {
        "type": "assistant-request",
        "call": {"id": f"call-{i}", "type": "inboundPhoneCall", "phoneNumberId": "pn-1"},
        "phoneNumber": {"id": "pn-1", "number": number},
        "customer": {"number": "+14155550123"},
    }


Batch = Callable[[int], Awaitable[None]]


async def measure(batches: dict[str, Batch], requests: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per request for each variant, one sample per round, variants in a random order each round."""
    samples: dict[str, list[float]] = {name: [] for name in batches}
    for name in batches:  # warm-up: fill caches, compile regexes, create the label children
        await batches[name](max(requests // 5, USERS * 2))
    for _ in range(rounds):
        order = list(batches)
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            await batches[name](requests)
            samples[name].append((time.perf_counter() - started) / requests)
    return samples


async def run(requests: int, rounds: int) -> None:
    config = parse_config(routing(), "bench.yaml", {})
    variants = {"real": Metrics(), "no-op": noop_metrics()}
    service_batches: dict[str, Batch] = {}
    app_batches: dict[str, Batch] = {}
    async with httpx.AsyncClient(transport=httpx.MockTransport(nango)) as nango_http:
        contexts = []
        for name, metrics in variants.items():
            app = create_app(config, metrics=metrics, http_client=nango_http)
            lifespan = app.router.lifespan_context(app)
            await lifespan.__aenter__()
            contexts.append(lifespan)
            runtime: Runtime = app.state.runtime
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.bench")
            bodies = [json.dumps({"message": message(i)}).encode() for i in range(USERS)]
            messages = [message(i) for i in range(USERS)]
            service_batches[name] = service_batch(runtime, messages)
            app_batches[name] = app_batch(client, bodies)
        try:
            for level, batches in (("service", service_batches), ("app", app_batches)):
                samples = await measure(batches, requests if level == "service" else requests // 4, rounds)
                real, noop = (statistics.median(samples[name]) for name in ("real", "no-op"))
                print(
                    f"{level:<8} real {real * 1e6:7.1f} us/request   no-op {noop * 1e6:7.1f} us/request   "
                    f"ratio {real / noop:.3f} ({(real / noop - 1) * 100:+.1f}%, {(real - noop) * 1e6:.1f} us)"
                )
        finally:
            for lifespan in contexts:
                await lifespan.__aexit__(None, None, None)


def service_batch(runtime: Runtime, messages: list[dict[str, Any]]) -> Batch:
    async def batch(n: int) -> None:
        assert runtime.service is not None
        for i in range(n):
            await runtime.service.assistant_request(runtime.config, messages[i % len(messages)])

    return batch


def app_batch(client: httpx.AsyncClient, bodies: list[bytes]) -> Batch:
    headers = {"X-Vapi-Secret": SECRET, "Content-Type": "application/json"}

    async def batch(n: int) -> None:
        for i in range(n):
            response = await client.post("/vapi", content=bodies[i % len(bodies)], headers=headers)
            assert response.status_code == 200 and b'"assistant"' in response.content

    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per round (service level)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
