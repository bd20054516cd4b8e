"""Per-user serialisation of calendar writes: a small lock interface and its in-process implementation.

A booking checks the calendar, then inserts; two calls doing that at once for one user could both pass the
check. `UserLocks.hold(key)` makes that check-and-insert one step per key within whatever the lock spans:
`LocalUserLocks` spans one process; a shared implementation (Redis, issue 15) spans replicas. Bookings do
not rely on the lock alone: after an insert they re-read the slot and a deterministic rule picks one winner,
so a lock that expires or a replica without a shared lock costs at worst a retracted booking, never two.

A shared implementation hands out leases: `Lease.token` is a fencing token, strictly increasing per key
across grants, so a store that sees writes tagged with tokens can refuse those of a holder whose lease ran
out. `Lease.expired()` lets the holder check before it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Lease", "LocalUserLocks", "LockTimeout", "UserLocks"]


class LockTimeout(TimeoutError):
    """The lock was not granted within the time asked for."""


@dataclass(frozen=True)
class Lease:
    """One grant of a key. `token` is the fencing token; `expires_at` is on `clock` (None: held until released)."""

    key: str
    token: int
    expires_at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def expired(self) -> bool:
        return self.expires_at is not None and self.clock() >= self.expires_at


class UserLocks(Protocol):
    """Mutual exclusion per key (the proxy uses one key per user calendar)."""

    def hold(self, key: str, *, timeout: float) -> contextlib.AbstractAsyncContextManager[Lease]:
        """Wait at most `timeout` seconds for `key` (LockTimeout after that), hold it for the block."""
        ...


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class LocalUserLocks:
    """One asyncio lock per key in this process. An entry lives only while someone holds or waits for it,
    so memory is bounded by the calls in flight, not by the number of users ever seen."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, timeout: float) -> AsyncIterator[Lease]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await entry.lock.acquire()
            except TimeoutError:
                raise LockTimeout(f"lock not granted within {timeout:.2f}s") from None
            try:
                yield Lease(key, next(self._tokens))
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
