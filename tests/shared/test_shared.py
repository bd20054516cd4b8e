"""The shared-state building blocks against a real redis-server: store health, lock, index, fan-out, budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.calendar.locks import LockTimeout
from proxy.metrics import Metrics
from proxy.nango.client import Connection
from proxy.nango.index import ConnectionIndex
from proxy.nango.tags import TagRoute
from proxy.secret import Secret
from proxy.shared import (
    Announcement,
    Fanout,
    IndexStore,
    LeasedLock,
    RedisSettings,
    SharedBreaker,
    SharedStore,
    SharedUnavailable,
    TokenBucket,
)
from proxy.shared.index import CHUNK_SIZE, REPLACED_GRACE_SECONDS, OverlayEntry, apply_overlay
from proxy.shared.locks import RedisUserLocks
from proxy.shared.signing import Signer
from tests.helpers import eventually
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SIGNER = Signer(Secret("nango-secret-key-value"))


@contextlib.asynccontextmanager
async def store_on(server: RedisServer, url: str | None = None, **options: Any) -> AsyncIterator[SharedStore]:
    settings = RedisSettings.from_environment({"REDIS_URL": url or server.url})
    store = SharedStore(RedisSettings(**{**settings.__dict__, **options}), Metrics())
    try:
        yield store
    finally:
        await store.aclose()


async def test_password_auth_is_used_and_a_wrong_password_only_degrades(tmp_path: Any) -> None:
    server = RedisServer(tmp_path, password="pw-9f2k")
    server.start()
    try:
        async with store_on(server) as store:
            assert await store.ping()
            assert await store.run("ping", lambda redis: redis.set(store.key("x"), b"1")) is True
        async with store_on(server, url=server.url.replace("pw-9f2k", "wrong")) as store:
            assert not await store.ping()
            assert store.status()["redis"] == "degraded"
            assert "wrong" not in str(store.status()) and "pw-9f2k" not in repr(store)
    finally:
        server.stop()


async def test_a_dead_redis_costs_one_short_timeout_then_nothing_and_is_found_again(redis_server: RedisServer) -> None:
    restarts: list[str] = []
    async with store_on(redis_server, retry_after=0.2) as store:
        store.on_restart(lambda: restarts.append("restart"))
        assert await store.ping() and store.up
        redis_server.kill()
        started = time.perf_counter()
        with pytest.raises(SharedUnavailable):
            await store.run("ping", lambda redis: redis.ping())
        assert time.perf_counter() - started < 0.5
        assert not store.up
        touched: list[object] = []
        with pytest.raises(SharedUnavailable, match="unavailable"):  # refused without touching the network
            await store.run("ping", lambda redis: touched.append(redis) or redis.ping())
        assert touched == []
        redis_server.start()  # empty, new run id
        for _ in range(100):
            if store.up:
                break
            await asyncio.sleep(0.02)
        assert store.up and restarts == ["restart"]
        assert await store.run("ping", lambda redis: redis.ping()) is True


async def test_a_paused_redis_bounds_every_operation_by_the_call_timeout(redis_server: RedisServer) -> None:
    async with store_on(redis_server, op_timeout=0.05) as store:
        assert await store.ping()
        redis_server.pause()
        try:
            started = time.perf_counter()
            with pytest.raises(SharedUnavailable, match="timeout"):
                await store.run("ping", lambda redis: redis.ping())
            assert time.perf_counter() - started < 0.15
        finally:
            redis_server.resume()
        await eventually(lambda: store.up, 5.0)  # after retry_after, the probe finds it again by itself


async def test_the_lock_has_one_holder_a_lease_and_growing_fencing_tokens(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        lock = LeasedLock(store)
        first = await lock.try_acquire("index", lease=0.2)
        assert first is not None
        assert await lock.try_acquire("index", lease=0.2) is None
        assert await lock.acquire("index", lease=0.2, wait=0.05) is None
        second = await lock.acquire("index", lease=5, wait=1.0)  # the first lease runs out meanwhile
        assert second is not None and second.token > first.token
        assert not await lock.release(first)  # a stale holder cannot free the new one's lock
        assert await lock.extend(first, 5) is None
        assert await lock.try_acquire("index", lease=1) is None
        assert await lock.extend(second, 5) is not None
        assert await lock.release(second)
        third = await lock.try_acquire("index", lease=1)
        assert third is not None and third.token > second.token
        assert await lock.try_acquire("booking:usr_1", lease=1) is not None  # names are independent


def _conns(users: int) -> list[Connection]:
    return [Connection(f"conn-u{i:06d}", f"u{i:06d}", "2026-10-02T09:12:44.120Z", True) for i in range(users)]


def _index_of(conns: list[Connection], overlay: list[OverlayEntry]) -> ConnectionIndex:
    index = ConnectionIndex()
    for conn in conns:
        index.add(conn)
    for entry in overlay:
        apply_overlay(index, entry)
    return index


async def test_the_index_round_trips_in_chunks_with_webhook_effects_on_top(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        lock, indexes = LeasedLock(store), IndexStore(store, signer=SIGNER, ttl=60)
        assert await indexes.meta() is None
        lease = await lock.try_acquire("index", lease=10)
        assert lease is not None
        built = _conns(2 * CHUNK_SIZE + 5)
        routed = Connection(
            "conn-line", "u-line", "2026-11-01T00:00:00Z", True, TagRoute("+14155550100", "pn-1", "t", "N", "UTC")
        )
        built.append(routed)
        assert await indexes.store(lease, built, started_at=time.time() - 1) == lease.token
        meta = await indexes.meta()
        assert meta is not None and (meta.version, meta.chunks, meta.connections) == (lease.token, 3, len(built))
        now_ms = int(time.time() * 1000)
        replaced = Connection("conn-new", "u000001", "2026-11-01T00:00:00Z", True)
        broken = Connection("conn-u000002", "u000002", "2026-10-02T09:12:44.120Z", False)
        await indexes.put(OverlayEntry(now_ms, "user", "u000001", (replaced,)))
        await indexes.put(OverlayEntry(now_ms, "user", "u000002", (broken,)))
        await indexes.put(OverlayEntry(now_ms, "forget", "conn-line"))
        await indexes.put(OverlayEntry(now_ms, "forget", "conn-u000003", owner="u000003"))
        loaded = await indexes.load(meta)
        assert loaded is not None
        chunks, overlay = loaded
        conns = [conn for n, chunk in enumerate(chunks) for conn in indexes.chunk(meta, n, chunk)]
        assert conns == built  # tag routes included
        index = _index_of(conns, overlay)
        assert index.user("u000001") == replaced
        assert index.user("u000002") == broken
        assert index.user("u004004") == built[4004]
        assert index.user("u000003") is None
        assert index.line("to", "+14155550100") is None  # forgotten, as the directory forgets it
        assert _index_of(conns, []).line("to", "+14155550100") == routed


async def test_a_build_whose_lease_was_lost_is_not_published(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        lock, indexes = LeasedLock(store), IndexStore(store, signer=SIGNER, ttl=60)
        stale = await lock.try_acquire("index", lease=0.05)
        assert stale is not None
        await asyncio.sleep(0.1)
        current = await lock.try_acquire("index", lease=10)
        assert current is not None
        assert await indexes.store(current, _conns(3), started_at=time.time()) == current.token
        assert await indexes.store(stale, _conns(1), started_at=time.time()) is None
        meta = await indexes.meta()
        assert meta is not None and meta.version == current.token and meta.connections == 3


async def test_redis_holds_one_index_not_one_per_refresh(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        lock, indexes = LeasedLock(store), IndexStore(store, signer=SIGNER, ttl=3600)
        versions = []
        for _ in range(3):
            lease = await lock.try_acquire("index", lease=10)
            assert lease is not None
            assert await indexes.store(lease, _conns(CHUNK_SIZE + 1), started_at=time.time()) == lease.token
            versions.append(lease.token)
            await lock.release(lease)
        chunk_keys = sorted(key.decode() for key in await store.redis.keys(store.key("index", "chunk", "*")))
        assert len(chunk_keys) == 3 * 2  # until the replaced ones expire
        ttls = {key: await store.redis.pttl(key) for key in chunk_keys}
        current = store.key("index", "chunk", str(versions[-1]), "")
        for key, ttl in ttls.items():
            if key.startswith(current):
                assert ttl > 3000 * 1000  # the index being served keeps its full TTL
            else:
                assert 0 < ttl <= REPLACED_GRACE_SECONDS * 1000  # readers of the old meta still find them
        meta = await indexes.meta()
        assert meta is not None and meta.version == versions[-1]
        assert await indexes.load(meta) is not None


async def test_a_build_keeps_webhook_effects_that_arrived_while_it_paged(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        lock, indexes = LeasedLock(store), IndexStore(store, signer=SIGNER, ttl=60)
        old_ms = int(time.time() * 1000) - 60_000
        older = Connection("conn-older-than-the-build", "u000001", "2026-11-01T00:00:00Z", True)
        await indexes.put(OverlayEntry(old_ms, "user", "u000001", (older,)))
        started = time.time()
        during = Connection("conn-during-the-build", "u000002", "2026-11-01T00:00:00Z", True)
        await indexes.put(OverlayEntry(int(started * 1000) + 1, "user", "u000002", (during,)))
        lease = await lock.try_acquire("index", lease=10)
        assert lease is not None
        await indexes.store(lease, _conns(3), started_at=started)
        meta = await indexes.meta()
        assert meta is not None
        loaded = await indexes.load(meta)
        assert loaded is not None
        index = _index_of([c for n, chunk in enumerate(loaded[0]) for c in indexes.chunk(meta, n, chunk)], loaded[1])
        assert index.user("u000001").connection_id == "conn-u000001"  # type: ignore[union-attr]
        assert index.user("u000002") == during
        assert [entry.subject for entry in loaded[1]] == ["u000002"]  # the older entry was trimmed


async def test_overlay_entries_that_are_not_ours_are_skipped(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        indexes = IndexStore(store, signer=SIGNER, ttl=60)
        where = store.key("index", "overlay") + "#"
        good = OverlayEntry(5, "forget", "conn-1")

        def signed(field: str, value: bytes) -> bytes:
            return SIGNER.seal(where + field, value)

        raw = {
            b"u:a": signed("u:a", b"garbage"),
            b"u:b": signed("u:b", b'[1, "drop", "x", [], null]'),
            b"u:c": signed("u:c", b'[1, "user", "u", [["c", "u", "", true]], null]'),
            b"u:d": signed("u:d", b'[1.5, "user", "d", [], null]'),
            b"u:e": signed("u:e", b'[1, "user", "e", "abcde", null]'),
            b"u:f": signed("c:conn-1", good.encode()),  # signed for another field: moved
            b"c:conn-2": good.encode(),  # unsigned (another version's)
            b"c:conn-3": Signer(Secret("another-clusters-key")).seal(where + "c:conn-1", good.encode()),
            b"c:conn-1": signed("c:conn-1", good.encode()),
        }
        entries, foreign = indexes.overlay_entries(raw)
        assert entries == [good]
        assert [name for name, _ in foreign] == [
            b"u:a",
            b"u:b",
            b"u:c",
            b"u:d",
            b"u:e",
            b"u:f",
            b"c:conn-2",
            b"c:conn-3",
        ]


async def test_announcements_reach_other_replicas_fast_and_survive_a_restart(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as a_store, store_on(redis_server) as b_store:
        sender, receiver = Fanout(a_store, Metrics(), SIGNER), Fanout(b_store, Metrics(), SIGNER)
        received: list[tuple[Announcement, float]] = []
        subscriptions: list[float] = []
        loop = asyncio.get_running_loop()
        own: list[Announcement] = []
        tasks = [
            asyncio.create_task(
                receiver.run(lambda m: received.append((m, time.time())), lambda: subscriptions.append(1))
            ),
            asyncio.create_task(sender.run(own.append, lambda: None)),
        ]
        try:
            await asyncio.wait_for(receiver.subscribed.wait(), 2)
            await asyncio.wait_for(sender.subscribed.wait(), 2)
            for i in range(50):
                await sender.publish("put", {"user": f"u{i}", "connection": f"c{i}"})
            deadline = loop.time() + 2
            while len(received) < 50 and loop.time() < deadline:
                await asyncio.sleep(0.005)
            assert [m.data["user"] for m, _ in received] == [f"u{i}" for i in range(50)]
            delays = sorted(at - m.sent_at for m, at in received)
            assert delays[-1] < 0.1
            assert own == []  # a replica does not re-apply its own announcement

            redis_server.restart()
            deadline = loop.time() + 5
            while len(subscriptions) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert len(subscriptions) == 2  # resubscribed, and told so, so it can read back what it missed
            await asyncio.wait_for(sender.subscribed.wait(), 5)
            await a_store.ping()
            await sender.publish("put", {"user": "after-restart"})
            deadline = loop.time() + 2
            while received[-1][0].data["user"] != "after-restart" and loop.time() < deadline:
                await asyncio.sleep(0.005)
            assert received[-1][0].data["user"] == "after-restart"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_foreign_forged_replayed_or_oversized_announcements_are_ignored(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        now = time.time()
        fanout = Fanout(store, Metrics(), SIGNER, wall_clock=lambda: now, replica_id="me")

        def signed(body: bytes) -> bytes:
            return SIGNER.seal(fanout.channel, body)

        fresh = f'{{"k": "put", "d": {{"user": "u"}}, "o": "other", "t": {now}}}'.encode()
        assert fanout.parse(b"not json") is None
        assert fanout.parse(fresh) is None  # unsigned
        assert fanout.parse(b"0" * 64 + fresh) is None  # a made-up signature
        assert fanout.parse(Signer(Secret("another-clusters-key")).seal(fanout.channel, fresh)) is None
        assert fanout.parse(SIGNER.seal("other-prefix:events", fresh)) is None  # another channel's
        assert fanout.parse(signed(b'{"k": "put"}')) is None
        assert fanout.parse(signed(b"x" * 70000)) is None
        assert fanout.parse(signed(f'{{"k": "put", "d": {{}}, "o": "me", "t": {now}}}'.encode())) is None
        assert fanout.parse(signed(b'{"k": "put", "d": {"user": "u"}, "o": "other", "t": 1}')) is None  # stale
        assert fanout.parse(signed(fresh)) == Announcement("put", {"user": "u"}, "other", now)
        assert fanout.parse(signed(fresh)) is None  # the same message again: a replay


async def test_the_budget_follows_nangos_headers_and_retry_after(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        bucket = TokenBucket(store)
        assert await bucket.take() == 0.0  # nothing reported yet: nothing held back
        await bucket.feed(200, {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "1"})
        assert await bucket.take() == 0.0
        assert await bucket.take() == 0.0
        wait = await bucket.take()
        assert 0.5 < wait <= 1.0  # 60 a minute: the next token in about a second
        other_replica = TokenBucket(store)
        assert await other_replica.take() > 0.5  # the same bucket for every replica
        await bucket.feed(200, {"x-ratelimit-limit": "6000", "x-ratelimit-remaining": "5000"})
        assert await bucket.take(reserve_share=0.1) == 0.0
        await bucket.feed(429, {"Retry-After": "3"})
        assert 2.5 < await other_replica.take() <= 3.0
        await bucket.feed(200, {"X-RateLimit-Limit": "garbage", "Retry-After": "-1"})  # ignored, no error


async def test_the_budget_keeps_a_reserve_for_live_lookups(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        bucket = TokenBucket(store)
        await bucket.feed(200, {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "61"})
        assert await bucket.take(reserve_share=0.1, background=True) == 0.0
        assert await bucket.take(reserve_share=0.1, background=True) > 0.0  # background stops at the reserve
        assert await bucket.take() == 0.0  # a live lookup still gets one


async def test_the_breaker_opens_for_everyone_after_the_threshold(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as store:
        one, two = (SharedBreaker(store, threshold=3, open_seconds=2) for _ in range(2))
        assert not await one.failure()
        await one.success()  # a success in between resets the streak
        assert not await one.failure()
        assert not await two.failure()
        assert await one.failure()
        assert 1.5 < await two.open_for() <= 2.0
        assert not await two.failure()  # a new streak


async def test_user_locks_serialise_one_user_across_replicas_and_fall_back_to_local(redis_server: RedisServer) -> None:
    async with store_on(redis_server) as one_store, store_on(redis_server) as other_store:
        one, other = RedisUserLocks(LeasedLock(one_store)), RedisUserLocks(LeasedLock(other_store))
        async with one.hold("usr_1", timeout=0.5) as first:
            with pytest.raises(LockTimeout):
                async with other.hold("usr_1", timeout=0.1):
                    pass
            async with other.hold("usr_2", timeout=0.1):  # another user's calendar is not held up
                pass
        async with other.hold("usr_1", timeout=0.5) as second:
            assert second.token > first.token and not second.expired()
        redis_server.kill()
        started = time.perf_counter()
        async with other.hold("usr_1", timeout=1.0):  # Redis gone: this replica's lock alone, at once
            assert time.perf_counter() - started < 0.2


async def test_two_replicas_at_a_bounds_edge_let_exactly_one_booking_through(redis_server: RedisServer) -> None:
    """A call's third booking sent to two replicas at once (each booking another slot): the bound is counted
    from the calendar under the user's lock, which Redis holds across replicas, so one books and one hears
    the bound. Without the shared lock both would read two bookings and both would insert."""
    import httpx
    import respx

    from proxy.vapi.tools import answer_tool_calls
    from tests.google_fakes import FakeGoogle, make_calendar
    from tests.vapi.test_tools import NOW, ctx, message

    async with (
        store_on(redis_server) as one_store,
        store_on(redis_server) as other_store,
        respx.mock(assert_all_called=False) as mock,
        httpx.AsyncClient() as http,
    ):
        google = FakeGoogle(mock, latency=0.02)  # each request takes a while: the two overlap
        replicas = [RedisUserLocks(LeasedLock(one_store)), RedisUserLocks(LeasedLock(other_store))]

        async def book(hour: int, locks: RedisUserLocks) -> str:
            args = {"start": f"2026-03-03T{hour:02d}:00:00-05:00", "name": "Sam"}
            answer = await answer_tool_calls(
                message(("book_appointment", args)), ctx(), make_calendar(http), Metrics(), now=NOW, locks=locks
            )
            return str(answer["results"][0].get("result"))  # type: ignore[index]

        assert (await book(9, replicas[0])).startswith("Booked")
        assert (await book(10, replicas[1])).startswith("Booked")
        third = await asyncio.gather(book(11, replicas[0]), book(12, replicas[1]))
    assert sorted(answer[:8] for answer in third) == ["Booked w", "I can bo"], third
    assert len(google.live()) == 3
