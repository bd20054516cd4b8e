"""Tool-call flood: one authenticated tool-calls message with thousands of calls (issue 9).

    python bench/tool_flood.py                 # 5,000 calls, Google answering in 100 ms, 5 runs
    python bench/tool_flood.py --calls 3000 --latency-ms 250 --repeat 3

Runs the app in this process behind httpx's ASGI transport, with Google Calendar (through Nango's proxy)
faked by an in-process transport that answers freeBusy after --latency-ms. While the message is answered, a
probe task sleeps 1 ms at a time and records how late it wakes: the longest event-loop stall. `/livez` is
asked every 10 ms meanwhile. Like `serve`, each run freezes the objects alive after start-up (--no-freeze to
compare). The baseline, measured in the same run, is the same message with one call.
Prints the medians as JSON and a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.app import create_app
from proxy.config import parse_config
from proxy.server import freeze_startup_objects

SECRET = "bench-vapi-secret"
CONFIG = """\
auth: {vapi_secrets: [bench-vapi-secret]}
nango: {base_url: "https://nango.bench", secret_key: bench-nango-key, index_refresh_seconds: 0}
server: {public_url: "https://proxy.bench"}
calendar: {mode: proxy}
templates:
  default: {model: {provider: openai, model: gpt-4o, messages: [{role: system, content: Help.}]}}
users:
  - {id: doe, name: Dr. Jane Doe, timezone: America/New_York, connection_id: conn-doe}
routes:
  - {to: "+1 650 555 0100", user: doe}
"""


class FakeGoogle(httpx.AsyncBaseTransport):
    """freeBusy after `latency` seconds, always free; counts requests."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        await asyncio.sleep(self.latency)
        body = json.loads(request.content)
        calendars = {item["id"]: {"busy": []} for item in body["items"]}
        return httpx.Response(200, json={"kind": "calendar#freeBusy", "calendars": calendars})


def message(calls: int) -> bytes:
    tool_calls = [
        {"id": f"tc-{i}", "type": "function", "function": {"name": "find_open_slots", "arguments": "{}"}}
        for i in range(calls)
    ]
    body = {
        "message": {
            "type": "tool-calls",
            "toolCallList": tool_calls,
            "call": {"id": "bench-call", "customer": {"number": "+14155550123"}},
            "phoneNumber": {"id": "pn-1", "number": "+16505550100"},
        }
    }
    return json.dumps(body).encode()


@dataclass
class Run:
    answer_s: float
    stall_ms: float
    livez_max_ms: float
    results: int
    google_requests: int
    cpu_s: float


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (100 Hz)


async def one_run(calls: int, latency: float, freeze: bool = True) -> Run:
    google = FakeGoogle(latency)
    app = create_app(
        parse_config(textwrap.dedent(CONFIG), "bench.yaml", {}), http_client=httpx.AsyncClient(transport=google)
    )
    body = message(calls)
    stall = 0.0
    livez: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal stall
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - before - 0.001)

    async with app.router.lifespan_context(app):
        if freeze:
            freeze_startup_objects()  # as `serve` does once started
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.bench") as client:

            async def ask_livez() -> None:
                while not done.is_set():
                    started = time.perf_counter()
                    await client.get("/livez")
                    livez.append(time.perf_counter() - started)
                    await asyncio.sleep(0.01)

            await asyncio.sleep(0.01)
            tasks = [asyncio.create_task(probe()), asyncio.create_task(ask_livez())]
            cpu, started = cpu_seconds(), time.perf_counter()
            response = await client.post("/vapi", content=body, headers={"X-Vapi-Secret": SECRET})
            elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            done.set()
            await asyncio.gather(*tasks)
    response.raise_for_status()
    results = response.json()["results"]
    return Run(elapsed, stall * 1000, max(livez, default=0.0) * 1000, len(results), google.requests, cpu)


def summary(runs: list[Run]) -> dict[str, float]:
    return {
        "answer_s": round(statistics.median(r.answer_s for r in runs), 4),
        "longest_stall_ms": round(statistics.median(r.stall_ms for r in runs), 2),
        "worst_stall_ms": round(max(r.stall_ms for r in runs), 2),
        "livez_max_ms": round(statistics.median(r.livez_max_ms for r in runs), 2),
        "cpu_s": round(statistics.median(r.cpu_s for r in runs), 4),
        "results": runs[0].results,
        "google_requests": runs[0].google_requests,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--no-freeze", action="store_true", help="skip gc.freeze() after start-up (serve does it, see proxy.server)"
    )
    args = parser.parse_args()
    baseline: list[Run] = []
    flood: list[Run] = []
    for _ in range(args.repeat):  # interleaved, so machine noise hits both alike
        baseline.append(await one_run(1, args.latency_ms / 1000, not args.no_freeze))
        flood.append(await one_run(args.calls, args.latency_ms / 1000, not args.no_freeze))
    base, hit = summary(baseline), summary(flood)
    print(
        json.dumps(
            {
                "calls": args.calls,
                "google_latency_ms": args.latency_ms,
                "repeat": args.repeat,
                "baseline_one_call": base,
                "flood": hit,
                "answer_ratio": round(hit["answer_s"] / base["answer_s"], 2),
                "stall_ratio": round(hit["longest_stall_ms"] / max(base["longest_stall_ms"], 0.01), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
