"""What whoever can write the proxy's Redis keys, or publish on its channel, can do to a cluster (a real
redis-server): foreign or old-version entries cost nothing, forged ones change no call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.metrics import Metrics
from proxy.nango.directory import ConnectionDirectory
from proxy.secret import Secret
from proxy.shared import Cluster, RedisSettings
from tests.nango_fakes import FakeClock, FakeNango, make_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

INTERVAL = 300.0


@contextlib.asynccontextmanager
async def cluster_on(server: RedisServer, fake: FakeNango, clock: FakeClock, **nango: Any) -> AsyncIterator[Cluster]:
    """One replica's Cluster (not started: the test drives its rounds) on a fake clock."""
    metrics = Metrics()
    async with fake.client() as http:
        client = make_client(http, metrics, clock, index_refresh_interval=INTERVAL, **nango)
        directory = ConnectionDirectory(client, client.settings, metrics, clock=clock)
        settings = RedisSettings(url=Secret(server.url))
        cluster = Cluster(settings, directory, client, client.settings, metrics, wall_clock=clock.wall_clock)
        try:
            assert await cluster.store.ping()
            yield cluster
        finally:
            await directory.aclose()
            await cluster.aclose()


async def test_a_foreign_overlay_entry_is_trimmed_and_the_next_refresh_runs_on_schedule(
    redis_server: RedisServer,
) -> None:
    fake, clock = FakeNango(), FakeClock()
    for i in range(3):
        fake.add(f"conn-{i}", {"end_user_id": f"usr_{i}"})
    async with cluster_on(redis_server, fake, clock) as cluster:
        redis, key = cluster.store.redis, cluster.store.key
        overlay = key("index", "overlay")
        # Junk, another version's entry, and JSON nested deeper than Lua's cjson decodes.
        await redis.hset(overlay, mapping={"u:junk": b"not json", "u:old": b'{"version": 1}', "c:deep": b"[" * 2000})
        assert await cluster.refresh_round() == INTERVAL  # built and published
        assert len(fake.requests) == 1
        assert await redis.hlen(overlay) == 0  # trimmed by the publication
        assert await redis.exists(key("lock", "index")) == 0  # the lease was given back
        assert cluster.status()["redis"] == "ok"  # what /readyz shows under "shared"
        meta = await cluster.indexes.meta()
        assert meta is not None and meta.connections == 3

        await redis.hset(overlay, "u:junk", b"not json")  # again, between two refreshes
        clock.advance(INTERVAL)
        assert await cluster.refresh_round() == INTERVAL  # due now: built at once, not after a 60 s lease
        assert len(fake.requests) == 2
        assert cluster.status()["redis"] == "ok"
        assert await redis.exists(key("lock", "index")) == 0


async def test_a_reader_skips_and_trims_foreign_overlay_entries_it_finds(redis_server: RedisServer) -> None:
    fake, clock = FakeNango(), FakeClock()
    fake.add("conn-1", {"end_user_id": "usr_1"})
    async with cluster_on(redis_server, fake, clock) as cluster:
        assert await cluster.refresh_round() == INTERVAL
        redis, overlay = cluster.store.redis, cluster.store.key("index", "overlay")
        await redis.hset(overlay, mapping={"u:junk": b"not json", "u:usr_1": b'["later", "user"]'})
        assert await cluster.indexes.overlay_since(0) == []
        assert await redis.hlen(overlay) == 0
