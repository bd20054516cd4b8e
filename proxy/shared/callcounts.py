"""What a call may do only so often (`proxy.calendar.abuse.CallCounts`: wrong booking references, reschedules
that e-mail the guests), counted across replicas: a call gets its limit in all, whichever replicas its tool
calls reach, not that many per replica.

Each is counted in this replica's memory and in one Redis key per call and kind (the call id hashed, expiring
with the count), each Redis step within the call timeout. The replica's own count still applies: while Redis
cannot answer, or if whoever can write to it resets a count, a call gets no more than one replica alone gives.
"""

from __future__ import annotations

import contextlib
import hashlib

from redis.asyncio import Redis

from proxy.calendar.abuse import PER_CALL_LIMITS, CallCounts, Counted
from proxy.shared.store import SharedStore, SharedUnavailable

__all__ = ["SharedCallCounts"]

# Count one more; a value that is not a count (not ours) counts as none.
_RECORD = """
local n = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
redis.call('SET', KEYS[1], n, 'PX', ARGV[1])
return n
"""


class SharedCallCounts(CallCounts):
    """`CallCounts` for a replica set sharing `store` (see the module docstring)."""

    def __init__(self, store: SharedStore, max_calls: int = 10_000, ttl: float = 3600.0) -> None:
        super().__init__(max_calls, ttl)
        self._store = store
        self._ttl_ms = str(max(int(ttl * 1000), 1))

    def _key(self, call_id: str, kind: Counted) -> str:
        return self._store.key("counts", kind, hashlib.sha256(call_id.encode()).hexdigest()[:32])

    async def exhausted(self, call_id: str, kind: Counted) -> bool:
        if await super().exhausted(call_id, kind):
            return True
        key = self._key(call_id, kind)

        async def read(redis: Redis) -> bytes | str | None:
            return await redis.get(key)

        try:
            raw = await self._store.run("counts", read)
        except SharedUnavailable:
            return False  # this replica's count decided
        try:
            return int(raw or 0) >= PER_CALL_LIMITS[kind]
        except ValueError:
            return False  # not a count of ours: this replica's count decided

    async def record(self, call_id: str, kind: Counted) -> None:
        await super().record(call_id, kind)
        key = self._key(call_id, kind)

        async def count(redis: Redis) -> object:
            return await redis.eval(_RECORD, 1, key, self._ttl_ms)

        with contextlib.suppress(SharedUnavailable):  # counted here; other replicas count their own meanwhile
            await self._store.run("counts", count)
