"""`proxy.locks.UserLocks` across replicas: a short Redis lease per user on top of the in-process lock.

The in-process lock comes first, so calls on one replica queue in memory and only one of them at a time
asks Redis. While Redis cannot answer in time, the in-process lock alone serialises (per replica), and the
bookings' post-insert check settles any race between replicas, as without Redis.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from proxy.locks import Lease, LocalUserLocks, LockTimeout
from proxy.shared.lock import Lease as SharedLease
from proxy.shared.lock import LeasedLock
from proxy.shared.store import SharedUnavailable

__all__ = ["RedisUserLocks"]

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
    async def hold(self, key: str, *, timeout: float) -> AsyncIterator[Lease]:
        started = self._clock()
        async with self._local.hold(key, timeout=timeout) as local:
            remaining = max(timeout - (self._clock() - started), 0.0)
            shared: SharedLease | None = None
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
                yield Lease(key, shared.token, shared.expires_at, self._clock)
            finally:
                await self._shared.release(shared)
