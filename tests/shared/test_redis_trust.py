"""What whoever can write the proxy's Redis keys, or publish on its channel, can do to a cluster (a real
redis-server): foreign or old-version entries cost nothing, forged ones change no call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.metrics import Metrics
from proxy.nango.directory import ConnectionDirectory
from proxy.secret import Secret
from proxy.shared import Cluster, RedisSettings, SharedUnavailable
from proxy.shared import index as shared_index
from proxy.shared.cluster import INDEX_POLL_SECONDS
from tests.helpers import eventually
from tests.nango_fakes import FakeClock, FakeNango, auth_webhook, make_client
from tests.redis_server import RedisServer
from tests.shared.test_replicas import USERS, Replica, call, credential, replicas, user, webhook
from tests.shared.test_replicas import FakeNango as ReplicasNango

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


def rejected(replica: Replica, what: str) -> float:
    sample = replica.runtime.metrics.registry.get_sample_value(
        "vapi_proxy_redis_operations_total", {"operation": what, "result": "rejected"}
    )
    return float(sample or 0)


async def test_forged_or_replayed_announcements_and_overlay_entries_change_no_call(redis_server: RedisServer) -> None:
    nango = ReplicasNango()
    async with replicas(2, redis_server, nango) as (first, second):
        await eventually(
            lambda: all(
                r.index_size() == USERS and r.runtime.cluster.fanout.subscribed.is_set() for r in (first, second)
            )
        )
        cluster = first.runtime.cluster
        redis, channel = cluster.store.redis, cluster.fanout.channel
        # A legitimate webhook's announcement, captured by whoever can subscribe, then superseded.
        listener = redis.pubsub()
        await listener.subscribe(channel)
        nango.replaced[9] = "conn-first-reconnect"
        first_hook = auth_webhook("override", connection_id="conn-first-reconnect", user_id=user(9))
        assert (await webhook(first, first_hook)).json()["result"] == "applied"
        captured = None
        while captured is None:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1.0)
            captured = message["data"] if message is not None else None
        await listener.aclose()
        nango.replaced[9] = "conn-second-reconnect"
        second_hook = auth_webhook("override", connection_id="conn-second-reconnect", user_id=user(9))
        assert (await webhook(first, second_hook)).json()["result"] == "applied"
        await eventually(lambda: second.runtime.directory.current(user(9)) == "conn-second-reconnect", 1.0)

        attacker = ["conn-attacker", user(7), "2030-01-01T00:00:00Z", True, None]
        forged = [
            {"k": "user", "d": {"u": user(7), "cs": [attacker]}, "o": "attacker", "t": time.time()},
            {"k": "learn", "d": {"cs": [attacker]}, "o": "attacker", "t": time.time()},
            {"k": "breaker", "d": {"s": 60}, "o": "attacker", "t": time.time()},
        ]
        for body in forged:
            await redis.publish(channel, orjson.dumps(body))  # as an older version sent them: unsigned
            await redis.publish(channel, b"0" * 64 + orjson.dumps(body))  # with a made-up signature
        await redis.publish(channel, captured)  # the replay: a real signature, an outdated state
        directory = second.runtime.directory

        def changed() -> bool:
            return directory.current(user(7)) != "conn-u00007" or directory.current(user(9)) != "conn-second-reconnect"

        # Delivered (and refused) before the subscriptions are cut: pub/sub keeps nothing for later.
        await eventually(lambda: rejected(second, "announcement") >= 7 or changed())
        overlay = cluster.store.key("index", "overlay")
        entry = orjson.dumps([int(time.time() * 1000), "user", user(7), [attacker], None])
        await redis.hset(overlay, f"u:{user(7)}", b"0" * 64 + entry)
        await redis.client_kill_filter(_type="pubsub")  # both resubscribe and catch up from the overlay
        # Whichever replica catches up first refuses the entry and trims it: the other may never see it.
        await eventually(lambda: rejected(first, "overlay") + rejected(second, "overlay") >= 1 or changed())
        await eventually(lambda: second.runtime.cluster.fanout.subscribed.is_set(), 5.0)
        for replica in (first, second):
            answer, _ = await call(replica, 7)
            assert credential(answer) == "conn-u00007"
            answer, _ = await call(replica, 9)
            assert credential(answer) == "conn-second-reconnect"
            assert replica.runtime.directory.status()["breaker_open"] is False
        assert await redis.hexists(overlay, f"u:{user(7)}") == 0  # trimmed by the replica that read it


async def test_the_index_lease_is_given_back_even_when_the_publication_fails(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, clock = FakeNango(), FakeClock()
    fake.add("conn-1", {"end_user_id": "usr_1"})
    async with cluster_on(redis_server, fake, clock) as cluster:
        # The server answers the publication with an error (a script it refuses): the store then rests from
        # Redis for retry_after, but the lease must still be freed, or the next refresh waits out 60 s.
        monkeypatch.setattr(shared_index, "_PUBLISH", "return redis.error_reply('refused')")
        with pytest.raises(SharedUnavailable):
            await cluster.refresh_round()
        assert await cluster.store.redis.exists(cluster.store.key("lock", "index")) == 0
        monkeypatch.undo()
        clock.advance(INTERVAL)
        await cluster.store.ping()
        assert await cluster.refresh_round() == INTERVAL
        assert len(fake.requests) == 2


async def test_a_forged_index_is_not_loaded_and_the_replica_builds_its_own(redis_server: RedisServer) -> None:
    fake, clock = FakeNango(), FakeClock()
    fake.add("conn-1", {"end_user_id": "usr_1"})
    async with (
        cluster_on(redis_server, fake, clock) as builder,
        cluster_on(redis_server, fake, clock) as reader,
    ):
        assert await builder.refresh_round() == INTERVAL
        meta = await builder.indexes.meta()
        assert meta is not None
        redis, key = builder.store.redis, builder.store.key
        forged = orjson.dumps([["conn-attacker", "usr_1", "2030-01-01T00:00:00Z", True, None]])
        await redis.set(key("index", "chunk", str(meta.version), "0"), b"0" * 64 + forged)
        assert await reader.refresh_round() == INTERVAL  # not loaded: built its own, and published it
        assert reader._directory.current("usr_1") == "conn-1"
        await redis.hset(key("index", "meta"), "connections", "999999")  # the meta no longer verifies
        assert await reader.indexes.meta() is None
        # As when Redis lost the index: the reader puts its own fresh one back, without asking Nango.
        assert await reader.refresh_round() == INDEX_POLL_SECONDS
        assert reader._directory.current("usr_1") == "conn-1"
        assert await reader.indexes.meta() is not None
        assert len(fake.requests) == 2  # the builder's listing, then the reader's
