"""Several replicas sharing state through Redis (issue 15), against the fake Nango, one command:

    python bench/replicas.py                      # 3 replicas, 20,000 users
    python bench/replicas.py --replicas 2 --users 100000 --webhooks 300 --skip-warm

Measures, each in the same run as its baseline:
1. Nango list pages for one full index refresh: one replica without Redis, then N replicas with it;
2. webhook-to-visible latency on the other replicas: a signed webhook to replica 0 (after the fake Nango
   is told about the new connection), then assistant-requests to every other replica until they answer
   with it (p50/p99/max over --webhooks);
3. the warm path with and without REDIS_URL: bench/run.py's `baseline,warm` scenarios, as they stand,
   and the ratio of warm to baseline throughput in each;
4. calls answered and the slowest answer while Redis is killed, restarted empty, paused (SIGSTOP) and
   resumed under load, per phase.
Needs redis-server and wrk on PATH (Debian: apt-get install redis-server wrk). Results: --out.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from generate import NANGO_SECRET, PSTN_FIXTURE, VAPI_SECRET, RoutingOptions, request_body  # noqa: E402
from run import PYTHON, Bench, Process, free_port, nango_stats, wait_for_index  # noqa: E402

PHASES = ("steady", "killed", "restarted empty", "paused", "resumed")
# Users in the routing file that Nango does not have: each costs a lookup (and a token from the shared budget).
COLD_USERS = 2000


class Redis:
    """A throwaway redis-server on a free port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        argv += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        with (self.directory / "redis.log").open("ab") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0:
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait()

    def memory(self) -> dict[str, str]:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "info", "memory"], capture_output=True, text=True)
        fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
        return {key: fields.get(key, "").strip() for key in ("used_memory_human", "used_memory_dataset")}


def replicas(bench: Bench, count: int, options: RoutingOptions, redis_url: str | None) -> list[Process]:
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    try:
        return [bench.proxy(f"replica{n}", options) for n in range(count)]
    finally:
        os.environ.pop("REDIS_URL", None)


def index_pages(bench: Bench, args: argparse.Namespace, fake: Process, redis: Redis) -> dict[str, object]:
    options = RoutingOptions(users=args.users + COLD_USERS, nango_url=fake.url, index_refresh_seconds=300.0)
    httpx.post(fake.url + "/_reset")
    alone = bench.proxy("alone", options)
    wait_for_index(alone, args.users)
    one = nango_stats(fake)["list_pages"]
    alone.stop()
    bench.processes.remove(alone)
    httpx.post(fake.url + "/_reset")
    started = time.monotonic()
    cluster = replicas(bench, args.replicas, options, redis.url)
    for proxy in cluster:
        wait_for_index(proxy, args.users)
    return {
        "one_replica_without_redis": one,
        f"{args.replicas}_replicas_with_redis": nango_stats(fake)["list_pages"],
        "all_indexed_after_s": round(time.monotonic() - started, 2),
        "redis_memory_after_index": redis.memory(),
        "cluster": cluster,
    }


def webhook_latency(cluster: list[Process], fake: Process, count: int) -> dict[str, float]:
    fixture = json.loads(PSTN_FIXTURE.read_text())
    headers = {"X-Vapi-Secret": VAPI_SECRET, "Content-Type": "application/json"}
    delays: list[float] = []
    with httpx.Client(timeout=5) as http:
        for n in range(count):
            user, new = n * 13 + 1, f"conn-moved-{n}"
            tags = {"end_user_id": f"u{user:06d}"}
            body = http.post(fake.url + "/_connect", json={"connection_id": new, "tags": tags}).content
            signature = hmac.new(NANGO_SECRET.encode(), body, hashlib.sha256).hexdigest()
            sent = time.perf_counter()
            answer = http.post(
                cluster[0].url + "/nango/webhook", content=body, headers={"X-Nango-Hmac-Sha256": signature}
            )
            assert answer.json().get("result") == "applied", answer.text
            call = request_body(user, fixture)
            for other in cluster[1:]:
                while True:
                    reply = http.post(other.url + "/vapi", content=call, headers=headers).json()
                    creds = reply.get("assistant", {}).get("credentials") or [{}]
                    if creds[0].get("authorizationId") == new:
                        break
                    if time.perf_counter() - sent > 5:
                        raise RuntimeError(f"webhook {n} not visible on {other.name} after 5 s")
            delays.append(time.perf_counter() - sent)
    delays.sort()
    return {
        "webhooks": count,
        "p50_ms": round(statistics.median(delays) * 1000, 2),
        "p99_ms": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000, 2),
        "max_ms": round(delays[-1] * 1000, 2),
    }


async def chaos(
    cluster: list[Process], redis: Redis, users: int, seconds_per_phase: float, rate: int
) -> dict[str, object]:
    """Calls at `rate` per second spread over the replicas (one user in ten unknown to Nango, so the
    lookup path and the shared budget are exercised too) while Redis goes through PHASES."""
    fixture = json.loads(PSTN_FIXTURE.read_text())
    headers = {"X-Vapi-Secret": VAPI_SECRET, "Content-Type": "application/json"}
    results: dict[str, list[float | None]] = {phase: [] for phase in PHASES}
    phase = {"now": PHASES[0]}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async with httpx.AsyncClient(timeout=10, limits=limits) as http:

        async def one(n: int) -> None:
            at = phase["now"]
            user = (n * 7919) % users if n % 10 else users + (n // 10) % COLD_USERS  # 1 in 10: a cold lookup
            body = request_body(user, fixture)
            started = time.perf_counter()
            try:
                reply = await http.post(cluster[n % len(cluster)].url + "/vapi", content=body, headers=headers)
                ok = reply.status_code == 200 and bool({"assistant", "destination", "error"} & set(reply.json()))
            except httpx.HTTPError:
                ok = False
            results[at].append(time.perf_counter() - started if ok else None)

        tasks: list[asyncio.Task[None]] = []
        n = 0
        for name in PHASES:
            phase["now"] = name
            if name == "killed":
                redis.kill()
            elif name == "restarted empty":
                redis.start()
            elif name == "paused":
                redis.signal(signal.SIGSTOP)
            elif name == "resumed":
                redis.signal(signal.SIGCONT)
            end = time.monotonic() + seconds_per_phase
            while time.monotonic() < end:
                tasks.append(asyncio.create_task(one(n)))
                n += 1
                await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    report: dict[str, object] = {}
    for name, found in results.items():
        answered = [t for t in found if t is not None]
        report[name] = {
            "calls": len(found),
            "answered": len(answered),
            "worst_ms": round(max(answered, default=0.0) * 1000, 1),
            "p99_ms": round(sorted(answered)[int(len(answered) * 0.99)] * 1000, 1) if answered else None,
        }
    return report


def warm_ratio(args: argparse.Namespace, redis_url: str | None, out: Path) -> dict[str, object]:
    env = {**os.environ}
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    argv = [PYTHON, str(BENCH / "run.py"), "--scenarios", "baseline,warm", "--users", str(args.warm_users)]
    argv += ["--duration", str(args.duration), "--repeat", str(args.repeat), "--out", str(out)]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    rows = json.loads((out / "results.json").read_text())["scenarios"]
    baseline, warm = rows["baseline"], rows["warm"]
    # Issue 11's three targets as bench/run.py computes them: medians of the per-round ratios.
    return {
        "baseline_rps": baseline["rps"],
        "warm_rps": warm["rps"],
        "throughput_ratio": warm["rps_ratio"],
        "p99_ratio": warm["p99_ratio"],
        "cpu_us_over_baseline": warm["cpu_us_over_baseline"],
        "warm_p99_ms": warm["p99_ms"],
        "baseline_p99_ms": baseline["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--webhooks", type=int, default=200)
    parser.add_argument("--phase-seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=200, help="calls per second during the Redis faults")
    parser.add_argument("--skip-warm", action="store_true", help="skip the warm-path runs (bench/run.py)")
    parser.add_argument("--warm-users", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run of the warm path")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(BENCH / "results" / "replicas"))
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli") + (() if args.skip_warm else ("wrk",)):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install redis-server wrk)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(Path(tmp))
        redis.start()
        bench = Bench(out, False, args.duration, 50, 1, args.users, "secret")
        try:
            fake = bench.fake_nango()
            pages = index_pages(bench, args, fake, redis)
            cluster = pages.pop("cluster")
            assert isinstance(cluster, list)
            results["index_refresh_list_pages"] = pages
            print("index refresh:", json.dumps(pages), flush=True)
            results["webhook_to_visible"] = webhook_latency(cluster, fake, args.webhooks)
            print("webhook to visible:", json.dumps(results["webhook_to_visible"]), flush=True)
            results["redis_faults"] = asyncio.run(chaos(cluster, redis, args.users, args.phase_seconds, args.rate))
            print("redis faults:", json.dumps(results["redis_faults"]), flush=True)
        finally:
            bench.stop_all()
            redis.kill()
        if not args.skip_warm:
            redis = Redis(Path(tmp))
            redis.start()
            try:
                results["warm_without_redis"] = warm_ratio(args, None, out / "warm-without-redis")
                results["warm_with_redis"] = warm_ratio(args, redis.url, out / "warm-with-redis")
            finally:
                redis.kill()
            print("warm without redis:", json.dumps(results["warm_without_redis"]))
            print("warm with redis:", json.dumps(results["warm_with_redis"]))
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
