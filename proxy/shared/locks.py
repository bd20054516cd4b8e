"""A leased lock in Redis with a fencing token.

The holder gets a token that grows with every grant (`INCR`); the lock key holds that token and expires
with the lease, so a holder that dies or stalls loses the lock by itself. Writes that must come from the
current holder only are checked against the token inside Redis (`fenced_rename`, used by the index store):
a holder whose lease ran out while it was paused cannot overwrite the newer holder's work.

`RedisUserLocks` is `proxy.calendar.locks.UserLocks` across replicas: a short Redis lease per user on top of
the in-process lock. The in-process lock comes first, so calls on one replica queue in memory and only one
of them at a time asks Redis. While Redis cannot answer in time, the in-process lock alone serialises (per
replica), and the bookings' post-insert check settles any race between replicas, as without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from proxy.calendar.locks import Lease as UserLease
from proxy.calendar.locks import LocalUserLocks, LockTimeout
from proxy.shared.store import SharedStore, SharedUnavailable

__all__ = ["Lease", "LeasedLock", "RedisUserLocks"]

# Release and extend only when the lock still holds our token: a plain DEL could free someone else's lease.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_ACQUIRE = """
local token = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[1]) then return token end
return 0
"""

# How often a waiting acquirer asks again.
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Lease:
    """A granted lock: its name, fencing token and when the lease ends (monotonic clock, this process)."""

    name: str
    token: int
    expires_at: float


class LeasedLock:
    """Named leased locks on one SharedStore; every operation is bounded by the store's timeouts."""

    def __init__(self, store: SharedStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock

    def _keys(self, name: str) -> tuple[str, str]:
        return self._store.key("lock", name), self._store.key("fence", name)

    async def try_acquire(self, name: str, lease: float, *, background: bool = False) -> Lease | None:
        """The lock if it is free now, else None. Raises SharedUnavailable when Redis cannot say."""
        lock_key, fence_key = self._keys(name)
        started = self._clock()

        async def acquire(redis: Redis) -> int:
            token = await redis.eval(_ACQUIRE, 2, lock_key, fence_key, str(max(int(lease * 1000), 1)))
            return int(token)

        token = await self._store.run("lock", acquire, background=background)
        return Lease(name, token, started + lease) if token else None

    async def acquire(self, name: str, lease: float, *, wait: float) -> Lease | None:
        """The lock, waiting up to `wait` seconds for it; None when still held by someone else."""
        give_up = self._clock() + wait
        while True:
            granted = await self.try_acquire(name, lease)
            if granted is not None or self._clock() >= give_up:
                return granted
            await asyncio.sleep(min(POLL_SECONDS, max(give_up - self._clock(), 0.0)))

    async def extend(self, held: Lease, lease: float, *, background: bool = True) -> Lease | None:
        """A longer lease for a lock we still hold; None when it was lost (expired and maybe taken)."""
        lock_key, _ = self._keys(held.name)
        started = self._clock()

        async def extend(redis: Redis) -> int:
            return int(await redis.eval(_EXTEND, 1, lock_key, str(held.token), str(int(lease * 1000))))

        ok = await self._store.run("lock", extend, background=background)
        return Lease(held.name, held.token, started + lease) if ok else None

    async def release(self, held: Lease) -> bool:
        """Free the lock if it is still ours. Never raises: an unreleased lock just runs out its lease."""
        lock_key, _ = self._keys(held.name)

        async def release(redis: Redis) -> int:
            return int(await redis.eval(_RELEASE, 1, lock_key, str(held.token)))

        try:
            return bool(await self._store.run("unlock", release, even_if_down=True))
        except SharedUnavailable:
            return False


# A check-and-insert takes a Google round trip or two; the lease outlives that with margin, and a replica
# that dies mid-booking blocks the user's calendar for no longer than this.
LEASE_SECONDS = 10.0


class RedisUserLocks:
    """Per-user locks spanning replicas (see the module docstring)."""

    def __init__(
        self, locks: LeasedLock, *, lease: float = LEASE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._shared = locks
        self._local = LocalUserLocks()
        self._lease = lease
        self._clock = clock

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, timeout: float) -> AsyncIterator[UserLease]:
        started = self._clock()
        async with self._local.hold(key, timeout=timeout) as local:
            remaining = max(timeout - (self._clock() - started), 0.0)
            shared: Lease | None = None
            try:
                shared = await self._shared.acquire(f"user:{key}", self._lease, wait=remaining)
                if shared is None:
                    raise LockTimeout(f"lock not granted within {timeout:.2f}s (held on another replica)")
            except SharedUnavailable:
                pass  # this replica's lock alone; the post-insert check covers the rest
            if shared is None:
                yield local
                return
            try:
                yield UserLease(key, shared.token, shared.expires_at, self._clock)
            finally:
                await self._shared.release(shared)
