"""A replica whose subscription broke (Redis failing over, a network blip) misses announcements; when it is
subscribed again it catches up from the index overlay instead of waiting for the next index build."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.metrics import Metrics
from proxy.nango.client import Connection
from proxy.secret import Secret
from proxy.shared import IndexStore, RedisSettings, SharedStore
from proxy.shared.catchup import CLOCK_MARGIN_SECONDS, CatchUp
from proxy.shared.index import OverlayEntry
from proxy.shared.signing import Signer
from tests.helpers import eventually
from tests.nango_fakes import auth_webhook
from tests.redis_server import RedisServer
from tests.shared.test_replicas import FakeNango, Replica, call, credential, replicas, user, webhook

pytestmark = pytest.mark.anyio


def deaf(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The replica drops every announcement it receives, as while its link to Redis is down; the event is
    set when one has reached it (and been lost), so a test waits for that, not for a guessed time."""
    dropped = asyncio.Event()

    def drop(raw: object) -> None:
        dropped.set()

    monkeypatch.setattr(replica.runtime.cluster.fanout, "parse", drop)
    return dropped


async def test_a_replica_that_missed_a_webhook_while_unsubscribed_catches_up_on_resubscribing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    nango = FakeNango()
    async with replicas(2, redis_server, nango) as (first, second):
        await eventually(
            lambda: all(r.index_size() > 0 and r.runtime.cluster.fanout.subscribed.is_set() for r in (first, second))
        )
        # The second replica hears nothing for a while, as while its link to Redis is down.
        dropped = deaf(second, monkeypatch)
        nango.replaced[5] = "conn-while-away"
        hook = auth_webhook("override", connection_id="conn-while-away", user_id=user(5))
        assert (await webhook(first, hook)).json()["result"] == "applied"
        await asyncio.wait_for(dropped.wait(), 5.0)  # the announcement reached it, and was lost
        assert second.runtime.directory.current(user(5)) == "conn-u00005"  # missed
        monkeypatch.undo()
        # The link breaks for real (as in a failover): both replicas resubscribe by themselves.
        killed = await first.runtime.cluster.store.redis.client_kill_filter(_type="pubsub")
        assert killed == 2
        await eventually(lambda: second.runtime.directory.current(user(5)) == "conn-while-away", 5.0)
        answer, _ = await call(second, 5)
        assert credential(answer) == "conn-while-away"
        assert sum(nango.lookups.values()) == 1  # the first replica's confirmation; no lookup by the second


async def test_a_hold_announced_while_a_replica_was_away_is_replayed_while_it_still_applies(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    nango = FakeNango()
    async with replicas(2, redis_server, nango) as (first, second):
        await eventually(
            lambda: all(r.index_size() > 0 and r.runtime.cluster.fanout.subscribed.is_set() for r in (first, second))
        )
        dropped = deaf(second, monkeypatch)
        # A refresh failed and Nango cannot be asked to confirm: the connection is held back briefly.
        nango.lookup_status = 503
        failed = auth_webhook("refresh", success=False, connection_id="conn-u00009", user_id=user(9))
        assert (await webhook(first, failed)).json()["result"] == "suspended_unconfirmed"
        nango.lookup_status = 200
        await asyncio.wait_for(dropped.wait(), 5.0)  # the announcement reached it, and was lost
        answer, _ = await call(second, 9)
        assert credential(answer) == "conn-u00009"  # missed: still handed out
        monkeypatch.undo()
        await first.runtime.cluster.store.redis.client_kill_filter(_type="pubsub")
        await eventually(lambda: second.runtime.directory.current(user(9)) is None, 5.0)
        answer, _ = await call(second, 9)
        assert credential(answer) is None  # held back on this replica too, as on the one that got the webhook


class HeldOverlay:
    """An IndexStore whose overlay read waits until the test lets it go."""

    def __init__(self, indexes: IndexStore) -> None:
        self.indexes = indexes
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def overlay_since(self, since_ms: int) -> list[OverlayEntry]:
        self.reading.set()
        await self.go.wait()
        return await self.indexes.overlay_since(since_ms)


async def test_a_replay_applies_what_was_missed_and_skips_what_a_live_announcement_superseded(
    redis_server: RedisServer,
) -> None:
    store = SharedStore(RedisSettings(url=Secret(redis_server.url)), Metrics())
    try:
        indexes = IndexStore(store, signer=Signer(Secret("nango-secret-key-value")), ttl=60)
        now = time.time()
        conn = Connection("conn-1", "u1", "2026-10-01T00:00:00Z", True)
        await indexes.put(OverlayEntry(int(now * 1000) - 60_000, "user", "u0", (conn,)))  # heard long ago
        await indexes.put(OverlayEntry(int(now * 1000), "user", "u1", (conn,)))
        await indexes.put(OverlayEntry(int(now * 1000) + 1, "user", "u2", (conn,)))
        held = HeldOverlay(indexes)
        applied: list[str] = []
        catch_up = CatchUp(held, lambda entry: applied.append(entry.subject), wall_clock=lambda: now)  # type: ignore[arg-type]
        assert catch_up.subscribed() is None  # the first subscription: the index load covers the overlay
        catch_up.heard(now - CLOCK_MARGIN_SECONDS / 2)
        replay = catch_up.subscribed()
        assert replay is not None
        task = asyncio.ensure_future(replay)
        await held.reading.wait()
        catch_up.heard(now, ["u:u1"])  # a newer announcement for u1 arrives while the replay reads
        held.go.set()
        await task
        assert applied == ["u2"]
    finally:
        await store.aclose()
