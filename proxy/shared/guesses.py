"""Wrong booking references counted across replicas (`proxy.calendar.references`): a call gets
`MAX_WRONG_PER_CALL` tries in all, whichever replicas its tool calls reach, not that many per replica.

Each wrong reference is counted in this replica's memory and in one Redis key per call (the call id hashed,
expiring with the count), each Redis step within the call timeout. The replica's own count still applies:
while Redis cannot answer, or if whoever can write to it resets a count, a call gets no more tries than one
replica alone gives it.
"""

from __future__ import annotations

import contextlib
import hashlib

from redis.asyncio import Redis

from proxy.calendar.references import MAX_WRONG_PER_CALL, WrongGuesses
from proxy.shared.store import SharedStore, SharedUnavailable

__all__ = ["SharedWrongGuesses"]

# Count one more wrong reference; a value that is not a count (not ours) counts as none.
_RECORD = """
local n = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
redis.call('SET', KEYS[1], n, 'PX', ARGV[1])
return n
"""


class SharedWrongGuesses(WrongGuesses):
    """`WrongGuesses` for a replica set sharing `store` (see the module docstring)."""

    def __init__(self, store: SharedStore, max_calls: int = 10_000, ttl: float = 3600.0) -> None:
        super().__init__(max_calls, ttl)
        self._store = store
        self._ttl_ms = str(max(int(ttl * 1000), 1))

    def _key(self, call_id: str) -> str:
        return self._store.key("guesses", hashlib.sha256(call_id.encode()).hexdigest()[:32])

    async def exhausted(self, call_id: str) -> bool:
        if await super().exhausted(call_id):
            return True
        key = self._key(call_id)

        async def read(redis: Redis) -> bytes | str | None:
            return await redis.get(key)

        try:
            raw = await self._store.run("guesses", read)
        except SharedUnavailable:
            return False  # this replica's count decided
        try:
            return int(raw or 0) >= MAX_WRONG_PER_CALL
        except ValueError:
            return False  # not a count of ours: this replica's count decided

    async def record(self, call_id: str) -> None:
        await super().record(call_id)
        key = self._key(call_id)

        async def count(redis: Redis) -> object:
            return await redis.eval(_RECORD, 1, key, self._ttl_ms)

        with contextlib.suppress(SharedUnavailable):  # counted here; other replicas count their own meanwhile
            await self._store.run("guesses", count)
