"""One replica's part in the cluster: its directory and Nango client wired to the shared state in Redis.

- Index: one replica at a time pages through Nango (under the `index` lease) and stores the result; the
  others load it when it is announced (or when they find a newer version on their next look). Each keeps
  it in memory, so a call never waits on Redis. If Redis restarted empty, a replica with a fresh index puts
  its own back instead of paging Nango again.
- Webhooks: the replica that receives one confirms it with Nango (proxy.nango.webhooks), records Nango's answer in
  the index overlay and announces it; the others apply that answer to their directory at once, without
  asking Nango again. Connections a line lookup found (tag routing: a line nobody knew) travel the same way.
  A replica that was not subscribed meanwhile replays them from the overlay when it is again (`CatchUp`).
- Nango budget and breaker: every Nango request takes a token from the shared bucket, every response feeds
  it; outage-like failures count towards one breaker for the cluster.
- Bookings: proxy-mode check-and-insert for one user takes a short lease in Redis (`RedisUserLocks`); wrong
  booking references and notifying reschedules are counted across replicas (`SharedCallCounts`).
- Trust: announcements and the index are signed with a key from the Nango secret key (`proxy.shared.signing`);
  what does not verify is ignored, so access to Redis alone cannot change what a replica serves.
Whenever Redis cannot answer in time, each piece does what a replica on its own does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from proxy.metrics import Metrics
from proxy.nango.client import Connection, NangoClient, NangoSettings
from proxy.nango.directory import (
    BREAKER_THRESHOLD,
    FAILURE_TTL_SECONDS,
    REFRESH_RETRY_SECONDS,
    UNCONFIRMED_FAILURE_SECONDS,
    ConnectionDirectory,
)
from proxy.nango.index import ConnectionIndex
from proxy.nango.ratelimit import BACKGROUND_RESERVE
from proxy.shared.budget import SharedBreaker, TokenBucket
from proxy.shared.callcounts import SharedCallCounts
from proxy.shared.catchup import CatchUp
from proxy.shared.effects import MAX_ANNOUNCED_CONNECTIONS, entry_of
from proxy.shared.fanout import Announcement, Fanout
from proxy.shared.index import IndexMeta, IndexStore, OverlayEntry, apply_overlay, encode_connection
from proxy.shared.locks import Lease, LeasedLock, RedisUserLocks
from proxy.shared.signing import Signer
from proxy.shared.store import RedisSettings, SharedStore, SharedUnavailable

__all__ = ["Cluster"]

logger = logging.getLogger(__name__)

# The index builder's lease, renewed while it pages; a builder that dies frees the lock within this.
INDEX_LEASE_SECONDS = 60.0
# Waiting for another replica's build, and the longest a replica goes without checking for a newer index
# (announcements normally wake it at once).
INDEX_WAIT_SECONDS = 2.0
INDEX_POLL_SECONDS = 30.0
# Writes to Redis no call waits for (webhook overlay, budget feed, breaker counts); beyond this many in
# flight, new ones are dropped: Redis is slow and each replica manages on its own meanwhile.
MAX_PENDING_WRITES = 256
IndexId = tuple[int, float]


class Cluster:
    """See the module docstring. `start()` returns the background tasks for the app's lifespan."""

    def __init__(
        self,
        settings: RedisSettings,
        directory: ConnectionDirectory,
        client: NangoClient | None,
        nango: NangoSettings,
        metrics: Metrics,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock
        self.store = SharedStore(settings, metrics)
        self.locks = LeasedLock(self.store)
        ttl = max(3 * nango.index_refresh_interval, 3600.0)
        # Announcements and the index are signed with a key from the Nango secret key (proxy.shared.signing).
        self.signer = Signer(nango.secret_key)
        self.indexes = IndexStore(self.store, signer=self.signer, ttl=ttl, wall_clock=wall_clock)
        self.fanout = Fanout(self.store, metrics, self.signer, wall_clock=wall_clock)
        self.bucket = TokenBucket(self.store)
        self.breaker = SharedBreaker(self.store, threshold=BREAKER_THRESHOLD, open_seconds=FAILURE_TTL_SECONDS)
        self.user_locks = RedisUserLocks(self.locks)
        self.counts = SharedCallCounts(self.store)  # what a call may do only so often, counted cluster-wide
        self.catch_up = CatchUp(self.indexes, self._apply_entry, wall_clock=wall_clock)
        self._directory = directory
        self._interval = nango.index_refresh_interval
        self._index_enabled = client is not None and self._interval > 0
        self._index_id: IndexId | None = None
        self._wake = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self._streak_shared = False
        directory.listener = self
        if client is not None:
            client.shared_budget = self
        self.store.on_restart(self._wake.set)
        self.store.on_recovery(self._wake.set)

    def start(self) -> list[asyncio.Task[None]]:
        tasks = [
            asyncio.create_task(self.store.run_monitor(), name="redis-monitor"),
            asyncio.create_task(self.fanout.run(self._announced, self._subscribed), name="redis-announcements"),
        ]
        if self._index_enabled:
            tasks.append(asyncio.create_task(self.run_index(), name="shared-index"))
        return tasks

    def wake(self) -> None:
        """Look at the shared index now (a config reload, an announcement)."""
        self._wake.set()

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.store.aclose()

    def status(self) -> dict[str, object]:
        return {
            **self.store.status(),
            "announcements": "subscribed" if self.fanout.subscribed.is_set() else "disconnected",
            "index_version": self._index_id[0] if self._index_id else None,
        }

    # Fire-and-forget writes -------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            work.close()
            return
        task = asyncio.create_task(self._quietly(work))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(SharedUnavailable):  # counted and logged by the store; the replica goes on alone
            await work

    # DirectoryListener ------------------------------------------------------------------------------

    def user_connections(self, user_id: str, conns: list[Connection]) -> None:
        if len(conns) > MAX_ANNOUNCED_CONNECTIONS:
            logger.warning(
                "user %s has %d connections: not shared, other replicas learn at refresh", user_id, len(conns)
            )
            return
        entry = OverlayEntry(int(self._wall_clock() * 1000), "user", user_id, tuple(conns))
        self._spawn(self._share(entry, {"u": user_id, "cs": [encode_connection(c) for c in conns]}))

    def connection_forgotten(self, connection_id: str, user_id: str | None) -> None:
        entry = OverlayEntry(int(self._wall_clock() * 1000), "forget", connection_id, owner=user_id)
        self._spawn(self._share(entry, {"c": connection_id, "u": user_id}))

    def connection_suspended(self, connection_id: str) -> None:
        entry = OverlayEntry(int(self._wall_clock() * 1000), "suspend", connection_id)
        self._spawn(self._share(entry, {"c": connection_id}))

    def connections_learned(self, conns: list[Connection]) -> None:
        if len(conns) > MAX_ANNOUNCED_CONNECTIONS:
            logger.warning(
                "a line lookup listed %d connections: not shared, other replicas learn at refresh", len(conns)
            )
            return
        at_ms = int(self._wall_clock() * 1000)
        entries = [OverlayEntry(at_ms, "put", conn.connection_id, (conn,)) for conn in conns]
        self._spawn(self._share_learned(entries, {"cs": [encode_connection(c) for c in conns]}))

    async def _share_learned(self, entries: list[OverlayEntry], announcement: dict[str, Any]) -> None:
        await self.fanout.publish("learn", announcement)
        for entry in entries:
            await self.indexes.put(entry)

    async def _share(self, entry: OverlayEntry, announcement: dict[str, Any]) -> None:
        # Announce first: that is what other replicas serve from within milliseconds; the overlay is for
        # replicas that load the index later.
        await self.fanout.publish(entry.op, announcement)
        await self.indexes.put(entry)

    def nango_outage(self) -> None:
        self._streak_shared = True
        self._spawn(self._count_outage())

    async def _count_outage(self) -> None:
        if await self.breaker.failure():
            logger.warning("nango breaker opened for every replica for %.0fs", FAILURE_TTL_SECONDS)
            self._directory.open_breaker(FAILURE_TTL_SECONDS)
            await self.fanout.publish("breaker", {"s": FAILURE_TTL_SECONDS})

    def nango_answered(self) -> None:
        if self._streak_shared:
            self._streak_shared = False
            self._spawn(self.breaker.success())

    # SharedBudget (proxy.nango.ratelimit) -----------------------------------------------------------------

    async def wait_for(self, *, background: bool) -> float:
        try:
            return await self.bucket.take(
                reserve_share=BACKGROUND_RESERVE if background else 0.0, background=background
            )
        except SharedUnavailable:
            return 0.0  # this replica's own view of the budget still applies

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self._spawn(self.bucket.feed(status, headers))

    # Announcements ----------------------------------------------------------------------------------

    def _subscribed(self) -> None:
        self._wake.set()
        if (replay := self.catch_up.subscribed()) is not None:
            self._spawn(replay)

    def _announced(self, message: Announcement) -> None:
        data = message.data
        entry = entry_of(message)
        if entry is not None:
            fields = [f"p:{c.connection_id}" for c in entry.connections] if entry.op == "put" else [entry.field]
            self.catch_up.heard(message.sent_at, fields)
            self._apply_entry(entry)
            return
        self.catch_up.heard(message.sent_at)
        if message.kind == "index":
            self._wake.set()
        elif message.kind == "breaker":
            seconds = data.get("s")
            if isinstance(seconds, int | float) and 0 < seconds <= 60:
                self._directory.open_breaker(float(seconds))

    def _apply_entry(self, entry: OverlayEntry) -> None:
        """Another replica's confirmed effect (announced, or replayed from the overlay), as it applied it."""
        if entry.op == "user":
            if all(conn.user_id == entry.subject for conn in entry.connections):
                self._directory.apply_user_connections(entry.subject, list(entry.connections), announce=False)
        elif entry.op == "forget":
            self._directory.forget_connection(entry.subject, entry.owner, announce=False)
        elif entry.op == "put" and entry.connections:
            self._directory.learn(list(entry.connections), announce=False)
        elif entry.op == "suspend" and self._wall_clock() * 1000 - entry.at_ms < UNCONFIRMED_FAILURE_SECONDS * 1000:
            self._directory.suspend(entry.subject, announce=False)

    # The index --------------------------------------------------------------------------------------

    async def run_index(self) -> None:
        """Keep this replica's index current, from Redis when possible, until cancelled (app lifespan)."""
        while True:
            self._wake.clear()
            try:
                delay = await self.refresh_round()
            except SharedUnavailable:
                delay = await self._local_round()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _local_round(self) -> float:
        """Redis is out: refresh this replica's own index when it is due, as without Redis."""
        _, age = self._directory.index_snapshot()
        if age is not None and age < self._interval:
            return min(self._interval - age, INDEX_WAIT_SECONDS * 5)
        ok = await self._directory.refresh_index()
        return self._interval if ok else min(self._interval, REFRESH_RETRY_SECONDS)

    async def refresh_round(self) -> float:
        """One look at the shared index: load a newer one, or build it when due (under the lease); returns the
        seconds until the next look. Raises SharedUnavailable when Redis cannot answer."""
        meta = await self.indexes.meta()
        if meta is not None and await self._load(meta):
            age = self._wall_clock() - meta.built_at
            if age < self._interval:
                return min(self._interval - age, INDEX_POLL_SECONDS)
        lease = await self.locks.try_acquire("index", INDEX_LEASE_SECONDS, background=True)
        if lease is None:
            return INDEX_WAIT_SECONDS  # another replica builds; its announcement wakes us
        try:
            return await self._build(lease)
        finally:
            await self.locks.release(lease)

    async def _load(self, meta: IndexMeta) -> bool:
        """Serve `meta`'s build; False when it cannot be (chunks gone or not signed, or older than the one
        served: a replayed build), and then this replica builds one."""
        if self._index_id == (meta.version, meta.built_at):
            return True
        if self._index_id is not None and meta.built_at < self._index_id[1]:
            return False
        with self._directory.recording_effects() as effects:
            loaded = await self.indexes.load(meta)
            if loaded is None:
                return False
            chunks, overlay = loaded
            index = ConnectionIndex()
            for n, chunk in enumerate(chunks):
                try:
                    conns = self.indexes.chunk(meta, n, chunk)
                except ValueError:
                    return False
                for conn in conns:
                    index.add(conn)
                await asyncio.sleep(0)  # calls go first: a chunk is ~2 ms of work
        for entry in overlay:
            apply_overlay(index, entry)
        self._directory.install_index(index, effects, age=max(self._wall_clock() - meta.built_at, 0.0))
        self._index_id = (meta.version, meta.built_at)
        logger.info("shared index %d loaded: %d users", meta.version, len(index))
        return True

    async def _build(self, lease: Lease) -> float:
        meta = await self.indexes.meta()  # someone may have published while we asked for the lease
        if meta is not None and self._wall_clock() - meta.built_at < self._interval and await self._load(meta):
            return INDEX_WAIT_SECONDS
        snapshot, age = self._directory.index_snapshot()
        if meta is None and age is not None and age < self._interval and len(snapshot):
            # Redis lost the index (restarted empty): ours is fresh, put it back without asking Nango.
            logger.info("shared index missing; restoring this replica's (%d users)", len(snapshot))
            await self._publish(lease, snapshot, started_at=self._wall_clock() - age)
            return min(self._interval - age, INDEX_POLL_SECONDS)
        started_at = self._wall_clock()
        keeper = asyncio.create_task(self._keep(lease))
        try:
            with self._directory.recording_effects() as effects:
                index = await self._directory.page_index()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if index is None:
            return min(self._interval, REFRESH_RETRY_SECONDS)
        self._directory.install_index(index, effects)
        logger.info(
            "nango index refreshed for the cluster: %d users in %.1fs", len(index), self._wall_clock() - started_at
        )
        await self._publish(lease, index, started_at=started_at)
        return self._interval

    async def _publish(self, lease: Lease, index: ConnectionIndex, *, started_at: float) -> None:
        version = await self.indexes.store(lease, list(index.connections()), started_at=started_at)
        if version is None:
            logger.warning("shared index not stored: the lease ran out while building")
            return
        meta = await self.indexes.meta()
        if meta is not None:
            self._index_id = (meta.version, meta.built_at)
        await self.fanout.publish("index", {"v": version})

    async def _keep(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(INDEX_LEASE_SECONDS / 3)
            try:
                renewed = await self.locks.extend(lease, INDEX_LEASE_SECONDS)
            except SharedUnavailable:
                continue
            if renewed is None:
                logger.warning("index lease lost while building; the result will not be stored")
                return
