"""Whoever can write the proxy's Redis but holds no Nango secret key, against two replicas and the fake Nango:

    python bench/redis_trust.py                    # 2 replicas, 2,000 users
    python bench/redis_trust.py --users 20000 --forged 20000 --interval 5 --refreshes 4

1. Forged shared state. Calls for --targets users go to both replicas, first undisturbed (the baseline), then
   while an attacker with only Redis access publishes forged `user`, `learn` and `breaker` announcements
   (unsigned, and with a made-up signature), replays a captured real announcement, writes forged overlay
   entries for the same users and makes every replica resubscribe (so each catches up from the overlay).
   Reports the calls whose answer changed (target 0), what the replicas rejected, and the call latency
   during the attack as a ratio of the baseline's.
2. A foreign overlay entry. With the index refreshed every --interval seconds, non-JSON and old-format
   entries are written to the overlay before each refresh. Reports the gaps between published index
   versions (target: the interval, not the 60 s index lease) and the /readyz samples whose shared state was
   not "ok" (target 0), beside the same measurement without foreign entries in the same run.
Needs redis-server and redis-cli on PATH (Debian: apt-get install redis-server). Results: --out.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from generate import NANGO_SECRET, PSTN_FIXTURE, VAPI_SECRET, RoutingOptions, request_body  # noqa: E402
from replicas import Redis, replicas  # noqa: E402
from run import Bench, Process, wait_for_index  # noqa: E402

PREFIX = "vapi-proxy:"
HEADERS = {"X-Vapi-Secret": VAPI_SECRET, "Content-Type": "application/json"}


def user(i: int) -> str:
    return f"u{i:06d}"


async def call_round(http: httpx.AsyncClient, cluster: list[Process], targets: int) -> tuple[int, list[float]]:
    """One call per target user on every replica: (answers that are not the user's own connection, latencies)."""
    fixture = json.loads(PSTN_FIXTURE.read_text())
    changed, latencies = 0, []
    for proxy in cluster:
        for i in range(1, targets + 1):
            started = time.perf_counter()
            reply = (await http.post(proxy.url + "/vapi", content=request_body(i, fixture), headers=HEADERS)).json()
            latencies.append(time.perf_counter() - started)
            creds = reply.get("assistant", {}).get("credentials") or [{}]
            changed += creds[0].get("authorizationId") != f"conn-{user(i)}"
    return changed, latencies


def rejected(proxy: Process) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(proxy.url + "/metrics").text.splitlines():
        if line.startswith("vapi_proxy_redis_operations_total{") and 'result="rejected"' in line:
            what = line.split('operation="', 1)[1].split('"', 1)[0]
            found[what] = found.get(what, 0) + float(line.rsplit(" ", 1)[1])
    return found


def forgeries(i: int, now: float) -> list[bytes]:
    attacker = [f"conn-attacker-{i}", user(i), "2030-01-01T00:00:00Z", True, None]
    bodies = [
        {"k": "user", "d": {"u": user(i), "cs": [attacker]}, "o": "attacker", "t": now},
        {"k": "learn", "d": {"cs": [attacker]}, "o": "attacker", "t": now},
        {"k": "breaker", "d": {"s": 60}, "o": "attacker", "t": now},
    ]
    encoded = [orjson.dumps(body) for body in bodies]
    return encoded + [b"0" * 64 + body for body in encoded]  # unsigned, and with a made-up signature


async def forged_state(
    cluster: list[Process], redis_url: str, targets: int, forged: int, rounds: int = 5
) -> dict[str, object]:
    client = aioredis.from_url(redis_url)
    channel, overlay = PREFIX + "events", PREFIX + "index:overlay"
    async with httpx.AsyncClient(timeout=10) as http:
        await call_round(http, cluster, targets)  # warm-up
        changed_before, baseline = 0, []
        for _ in range(rounds):
            changed, latencies = await call_round(http, cluster, targets)
            changed_before, baseline = changed_before + changed, baseline + latencies
        # A real announcement, captured by a subscriber: the webhook of a user outside the targets.
        listener = client.pubsub()
        await listener.subscribe(channel)
        captured = await capture(listener, cluster, http, targets)
        flooding = asyncio.Event()
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while sent < forged:
                now = time.time()
                for i in range(1, targets + 1):
                    for message in forgeries(i, now):
                        await client.publish(channel, message)
                        sent += 1
                    attacker = [f"conn-attacker-{i}", user(i), "2030-01-01T00:00:00Z", True, None]
                    entry = orjson.dumps([int(now * 1000), "user", user(i), [attacker], None])
                    await client.hset(overlay, f"u:{user(i)}", b"0" * 64 + entry)
                if captured is not None:
                    await client.publish(channel, captured)
                    sent += 1
                await client.client_kill_filter(_type="pubsub")  # every replica resubscribes and catches up
            flooding.set()

        async def calls_meanwhile() -> tuple[int, list[float]]:
            changed, latencies = 0, []
            while not flooding.is_set():
                more, times = await call_round(http, cluster, targets)
                changed, latencies = changed + more, latencies + times
            return changed, latencies

        started = time.perf_counter()
        _, (changed_during, during) = await asyncio.gather(flood(), calls_meanwhile())
        flood_seconds = time.perf_counter() - started
        await asyncio.sleep(1.0)  # every replica subscribed again and caught up from the overlay
        changed_after, after = await call_round(http, cluster, targets)
    await client.aclose()
    return {
        "forged_messages_published": sent,
        "flood_seconds": round(flood_seconds, 2),
        "calls_before": len(baseline),
        "changed_before": changed_before,
        "calls_during": len(during),
        "changed_during": changed_during,
        "calls_after_catch_up": len(after),
        "changed_after_catch_up": changed_after,
        "rejected_per_replica": [rejected(proxy) for proxy in cluster],
        "p50_ms_before": round(statistics.median(baseline) * 1000, 2),
        "p50_ms_during": round(statistics.median(during) * 1000, 2),
        "p50_during_over_before": round(statistics.median(during) / statistics.median(baseline), 2),
    }


async def capture(listener: Any, cluster: list[Process], http: httpx.AsyncClient, targets: int) -> bytes | None:
    """A signed announcement as it crossed the channel (the webhook of a user outside the targets)."""
    i = targets + 1
    body = orjson.dumps(
        {
            "type": "auth",
            "operation": "creation",
            "success": True,
            "connectionId": f"conn-{user(i)}",
            "providerConfigKey": "google-calendar",
            "tags": {"end_user_id": user(i)},
        }
    )
    signature = hmac.new(NANGO_SECRET.encode(), body, hashlib.sha256).hexdigest()
    await http.post(cluster[0].url + "/nango/webhook", content=body, headers={"X-Nango-Hmac-Sha256": signature})
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            await listener.aclose()
            return bytes(message["data"])
    await listener.aclose()
    return None


async def foreign_overlay(cluster: list[Process], redis_url: str, refreshes: int, junk: bool) -> dict[str, object]:
    """Index versions published over `refreshes` refreshes, with (or without) foreign overlay entries."""
    client = aioredis.from_url(redis_url)
    overlay = PREFIX + "index:overlay"
    await client.delete(overlay)  # nothing left from part 1 or the previous run: the baseline is clean
    versions: list[tuple[float, int]] = []
    samples, degraded = 0, 0
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        while len(versions) < refreshes + 1 and time.monotonic() - started < 600:
            if junk:
                await client.hset(overlay, mapping={"u:junk": b"not json", "u:old": b'{"version": 1}'})
            for proxy in cluster:
                shared = (await http.get(proxy.url + "/readyz")).json().get("shared") or {}
                samples += 1
                degraded += shared.get("redis") != "ok"
            meta = await client.hgetall(PREFIX + "index:meta")
            version = int(meta.get(b"version", b"0"))
            if version and (not versions or versions[-1][1] != version):
                versions.append((time.monotonic(), version))
            await asyncio.sleep(0.05)
    await client.aclose()
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(versions)]
    return {"foreign_entries": junk, "refresh_gaps_s": gaps, "readyz_samples": samples, "readyz_not_ok": degraded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--targets", type=int, default=20, help="users the forgeries aim at")
    parser.add_argument("--forged", type=int, default=5000, help="forged announcements to publish")
    parser.add_argument("--interval", type=float, default=3.0, help="index_refresh_seconds for part 2")
    parser.add_argument("--refreshes", type=int, default=3)
    parser.add_argument("--skip-forged", action="store_true", help="part 2 only")
    parser.add_argument("--out", default=str(BENCH / "results" / "redis-trust"))
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install redis-server)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(Path(tmp))
        redis.start()
        bench = Bench(out, False, 1, 1, 1, args.users, "secret")
        try:
            fake = bench.fake_nango()
            options = RoutingOptions(users=args.users, nango_url=fake.url, index_refresh_seconds=300.0)
            if not args.skip_forged:
                cluster = replicas(bench, args.replicas, options, redis.url)
                for proxy in cluster:
                    wait_for_index(proxy, args.users)
                results["forged_state"] = asyncio.run(forged_state(cluster, redis.url, args.targets, args.forged))
                print("forged state:", json.dumps(results["forged_state"]), flush=True)
                for proxy in cluster:
                    proxy.stop()
                    bench.processes.remove(proxy)
            options = RoutingOptions(users=args.users, nango_url=fake.url, index_refresh_seconds=args.interval)
            for junk in (False, True):
                cluster = replicas(bench, args.replicas, options, redis.url)
                for proxy in cluster:
                    wait_for_index(proxy, args.users)
                key = "foreign_overlay" if junk else "clean_overlay"
                results[key] = asyncio.run(foreign_overlay(cluster, redis.url, args.refreshes, junk))
                print(f"{key}:", json.dumps(results[key]), flush=True)
                for proxy in cluster:
                    proxy.stop()
                    bench.processes.remove(proxy)
        finally:
            bench.stop_all()
            redis.kill()
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
