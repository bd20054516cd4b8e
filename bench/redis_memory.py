"""The memory Redis needs for the shared index (docs/scaling.md, "Sizing"), one command:

    python bench/redis_memory.py                   # 100,000 users
    python bench/redis_memory.py --users 250000 --tagged 1.0

Starts a throwaway redis-server, stores an index of --users connections the way a replica publishes one
(proxy.shared.IndexStore: 2,000 connections a key), then --webhooks overlay records, and prints INFO memory's
`used_memory` before and after the index and in the minute after the next refresh (while the replaced
build's chunks wait to expire), MEMORY USAGE of the overlay, and the time to store and to load the index.
Connection ids are UUIDs like Nango's; --tagged is the share of connections carrying a routing tag (number
and display name). Needs redis-server and redis-cli on PATH (Debian: apt-get install redis-server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from replicas import Redis  # noqa: E402

from proxy.metrics import Metrics  # noqa: E402
from proxy.nango.client import Connection  # noqa: E402
from proxy.nango.tags import TagRoute  # noqa: E402
from proxy.secret import Secret  # noqa: E402
from proxy.shared import IndexStore, LeasedLock, RedisSettings, SharedStore  # noqa: E402
from proxy.shared.index import OverlayEntry  # noqa: E402
from proxy.shared.signing import Signer  # noqa: E402


def connections(users: int, tagged: float) -> list[Connection]:
    every = round(1 / tagged) if tagged > 0 else 0
    conns = []
    for i in range(users):
        route = TagRoute(f"+1650{5550000 + i:07d}", None, None, f"User {i}", None) if every and i % every == 0 else None
        conns.append(Connection(str(uuid.uuid4()), f"user-{i:06d}", "2026-10-02T09:12:44.120Z", True, route))
    return conns


def key_memory(port: int, key: str) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "memory", "usage", key], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def used_memory(port: int) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True, check=True)
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    return int(fields["used_memory"])


async def measure(server: Redis, args: argparse.Namespace) -> dict[str, object]:
    store = SharedStore(RedisSettings(url=Secret(server.url), background_timeout=60.0), Metrics())
    try:
        conns = connections(args.users, args.tagged)
        before = used_memory(server.port)
        lease = await LeasedLock(store).try_acquire("index", 120.0, background=True)
        assert lease is not None
        indexes = IndexStore(store, signer=Signer(Secret("bench-nango-secret")), ttl=3600.0)
        started = time.perf_counter()
        await indexes.store(lease, conns, started_at=time.time())
        store_seconds = time.perf_counter() - started
        with_index = used_memory(server.port)
        meta = await indexes.meta()
        assert meta is not None
        started = time.perf_counter()
        loaded = await indexes.load(meta)
        assert loaded is not None
        count = sum(len(indexes.chunk(meta, n, chunk)) for n, chunk in enumerate(loaded[0]))
        load_seconds = time.perf_counter() - started
        assert count == args.users
        now_ms = int(time.time() * 1000)
        for i in range(args.webhooks):
            await indexes.put(OverlayEntry(now_ms + i, "user", conns[i].user_id or "", (conns[i],)))
        overlay = key_memory(server.port, store.key("index", "overlay"))
        # The next refresh: the replaced build's chunks stay for a grace minute, then expire.
        await LeasedLock(store).release(lease)
        lease = await LeasedLock(store).try_acquire("index", 120.0, background=True)
        assert lease is not None
        await indexes.store(lease, conns, started_at=time.time())
        after_refresh = used_memory(server.port)
    finally:
        await store.aclose()
    mb = 1e6
    return {
        "users": args.users,
        "tagged_share": args.tagged,
        "used_memory_mb_empty": round(before / mb, 2),
        "used_memory_mb_with_index": round(with_index / mb, 2),
        "index_mb": round((with_index - before) / mb, 2),
        "used_memory_mb_in_the_minute_after_a_refresh": round(after_refresh / mb, 2),
        "overlay_records": args.webhooks,
        "overlay_kb": round(overlay / 1e3, 1),
        "store_seconds": round(store_seconds, 3),
        "load_and_decode_seconds": round(load_seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tagged", type=float, default=0.5, help="share of connections with a routing tag")
    parser.add_argument("--webhooks", type=int, default=1000, help="overlay records written after the index")
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as directory:
        server = Redis(Path(directory))
        server.start()
        try:
            result = asyncio.run(measure(server, args))
        finally:
            server.kill()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
