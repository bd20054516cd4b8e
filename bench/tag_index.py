"""Tag routing figures (issue 14), rerunnable, each against a baseline measured in the same run:

- index: the bulk pass over N tagged connections (page requests, seconds, MB) against the same pass over
  N untagged connections (the user index alone);
- survive: the same pass while the fake Nango answers one page 429 (Retry-After: 0) twice;
- webhook: time from a `creation` webhook to the number being routable on the replica that received it,
  against a warm call (index hit) on the same replica;
- miss: latency of the first call to a number onboarded on another replica (this one missed the
  webhook: one `GET /connections?tags[vapi_number]=...`), against a warm call.

    .venv/bin/python bench/tag_index.py [--users 100000] [--repeat 3] [--calls 30] [--latency-ms 0]

The fake Nango (bench/fake_nango.py) runs as a separate uvicorn process; the proxy runs in this process
(the ASGI app, its real httpx client to the fake over loopback) or, for the index figures, in a child
process per pass so its memory is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from proxy.app import create_app  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.metrics import Metrics  # noqa: E402
from proxy.nango.client import NangoClient  # noqa: E402
from proxy.nango.directory import ConnectionDirectory  # noqa: E402

PYTHON = sys.executable
NANGO_KEY = "bench-nango-secret-key"
VAPI_SECRET = "bench-vapi-secret"
CONFIG = """\
auth: {{vapi_secrets: ["{vapi}"]}}
nango:
  base_url: {url}
  secret_key: {key}
  index_refresh_seconds: 300
  read_timeout: 5.0
  {tags}
templates:
  default: {{firstMessage: "Hello, this is {{{{user_name}}}}.", model: {{provider: openai, model: gpt-4o}}}}
fallbacks:
  unknown_number: {{action: reject, message: "Not in service."}}
"""
TAGS = "tag_routing: {number_tag: vapi_number}"


def config_text(url: str, tagged: bool) -> str:
    return CONFIG.format(vapi=VAPI_SECRET, url=url, key=NANGO_KEY, tags=TAGS if tagged else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def fake_nango(users: int, *options: str) -> Iterator[str]:
    port = free_port()
    argv = [PYTHON, str(BENCH / "fake_nango.py"), "--port", str(port), "--users", str(users), *options]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/_stats", timeout=1)
                break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def stats(url: str) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{url}/_stats").json()
    return result


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def child_index(url: str, tagged: bool) -> dict[str, object]:
    """One bulk pass in a fresh process: its time and what it costs in memory."""
    config = parse_config(config_text(url, tagged), "bench.yaml", {})
    metrics = Metrics()
    async with httpx.AsyncClient() as http:
        client = NangoClient(http, config.nango, metrics)
        directory = ConnectionDirectory(client, config.nango, metrics)
        before = rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        ok = await directory.refresh_index()
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        after = rss_mb()
        status = directory.status()
    return {
        "ok": ok,
        "seconds": round(elapsed, 2),
        "cpu_seconds": round(cpu_s, 2),
        "rss_growth_mb": round(after - before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "users": status["index_size"],
        "lines": status["tagged_lines"],
    }


def index_pass(url: str, tagged: bool) -> dict[str, object]:
    httpx.post(f"{url}/_reset")
    argv = [PYTHON, __file__, "--child-index", url] + (["--tagged"] if tagged else [])
    result: dict[str, object] = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    result["page_requests"] = stats(url)["list_pages"]
    return result


def sign(body: bytes) -> str:
    return hmac.new(NANGO_KEY.encode(), body, hashlib.sha256).hexdigest()


def call_body(number: str) -> bytes:
    message = {"type": "assistant-request", "call": {"id": "bench", "type": "inboundPhoneCall"},
               "phoneNumber": {"number": number}, "customer": {"number": "+14155550142"}}  # fmt: skip
    return json.dumps({"message": message}).encode()


@contextlib.asynccontextmanager
async def replica(url: str) -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config(config_text(url, True), "bench.yaml", {})
    app = create_app(config)
    async with app.router.lifespan_context(app):
        await app.state.runtime.directory.refresh_index()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            yield client


async def routed_to(client: httpx.AsyncClient, number: str) -> str | None:
    response = await client.post("/vapi", content=call_body(number), headers={"X-Vapi-Secret": VAPI_SECRET})
    credentials = response.json().get("assistant", {}).get("credentials") or [{}]
    value: str | None = credentials[0].get("authorizationId")
    return value


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def freshness(url: str, calls: int) -> dict[str, object]:
    warm_number = "+16500000001"  # an indexed tagged connection (u000001)
    webhook_s, miss_s, warm_a, warm_b = [], [], [], []
    before = stats(url)
    async with replica(url) as a, replica(url) as b, httpx.AsyncClient() as fake:
        for k in range(calls):
            started = time.perf_counter()
            assert await routed_to(a, warm_number) == "conn-u000001"
            warm_a.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await routed_to(b, warm_number) == "conn-u000001"
            warm_b.append(time.perf_counter() - started)
            # A user finishes a Connect session: the connection exists in Nango; its webhook reaches A only.
            number = f"+1415555{k:04d}"
            tags = {"end_user_id": f"new{k}", "vapi_number": number}
            created = await fake.post(f"{url}/_connect", json={"connection_id": f"conn-new-{k}", "tags": tags})
            body = created.content
            started = time.perf_counter()
            accepted = await a.post("/nango/webhook", content=body, headers={"X-Nango-Hmac-Sha256": sign(body)})
            assert accepted.json().get("result") == "applied", accepted.text
            assert await routed_to(a, number) == f"conn-new-{k}"
            webhook_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await routed_to(b, number) == f"conn-new-{k}"  # B missed the webhook
            miss_s.append(time.perf_counter() - started)
    return {
        "webhook_to_routable": summary(webhook_s),
        "warm_call_replica_a": summary(warm_a),
        "miss_path_other_replica": summary(miss_s),
        "warm_call_replica_b": summary(warm_b),
        "calls": calls,
        # B's first call to each new number: one tag lookup each; A's webhooks: one confirmation each.
        "miss_lookups": stats(url)["lookups"] - before["lookups"],
        "webhook_confirmations": stats(url)["user_requests"] - before["user_requests"],
    }


def median_row(rows: list[dict[str, object]]) -> dict[str, object]:
    best = sorted(rows, key=lambda row: float(row["seconds"]))[len(rows) // 2]  # type: ignore[arg-type]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the fake Nango's latency per request")
    parser.add_argument("--child-index", help=argparse.SUPPRESS)
    parser.add_argument("--tagged", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_index:
        print(json.dumps(asyncio.run(child_index(args.child_index, args.tagged))))
        return
    latency = ["--latency-ms", str(args.latency_ms)]
    report: dict[str, object] = {"users": args.users, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with fake_nango(args.users, *latency) as plain, fake_nango(args.users, "--tagged", *latency) as tagged:
        baseline = [index_pass(plain, False) for _ in range(args.repeat)]
        tag_rows = [index_pass(tagged, True) for _ in range(args.repeat)]
        report["index_untagged_baseline"] = median_row(baseline)
        report["index_tagged"] = median_row(tag_rows)
        base_s, tag_s = float(median_row(baseline)["seconds"]), float(median_row(tag_rows)["seconds"])  # type: ignore[arg-type]
        report["index_time_ratio_tagged_vs_untagged"] = round(tag_s / base_s, 2) if base_s else None
        report["freshness"] = asyncio.run(freshness(tagged, args.calls))
    page = min(7, args.users // 2000)  # a page that exists
    failing = ["--tagged", "--fail-page", str(page), "--fail-times", "2", "--fail-status", "429", "--retry-after", "0"]
    with fake_nango(args.users, *failing, *latency) as flaky:
        report[f"index_with_page_{page}_failing_429_twice"] = index_pass(flaky, True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
