"""Nango's request budget and the circuit breaker, shared by every replica through Redis.

The budget is a token bucket in one hash, on Redis's clock (`TIME`) so replicas' clocks do not matter:
it holds up to Nango's `X-RateLimit-Limit` tokens and refills at that many a minute. Every Nango request
takes a token; Nango's own figures correct it (`X-RateLimit-Remaining` replaces the count, a 429 or `Retry-After`
blocks everyone until then). Background work leaves `reserve` tokens for the lookups live calls wait on.
Until Nango has reported a limit, the bucket grants everything: it only ever holds back what Nango said.

The breaker counts outage-like failures across replicas; at the threshold it opens for everyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from redis.asyncio import Redis

from proxy.nango.ratelimit import DEFAULT_RETRY_AFTER, MAX_RATE_WAIT
from proxy.shared.store import SharedStore

__all__ = ["SharedBreaker", "TokenBucket"]

# KEYS[1] bucket; ARGV cost, reserve share of the limit (at least one token when above 0). Returns milliseconds
# to wait (0: granted). Tokens are fractional and Redis truncates Lua numbers passed to commands: tostring().
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'limit', 'tokens', 'stamp', 'blocked')
local blocked = tonumber(b[4]) or 0
if blocked > now then return blocked - now end
local limit = tonumber(b[1])
if not limit or limit <= 0 then return 0 end
local rate = limit / 60000
local tokens = math.min(limit, (tonumber(b[2]) or limit) + (now - (tonumber(b[3]) or now)) * rate)
local cost, share = tonumber(ARGV[1]), tonumber(ARGV[2])
local reserve = 0
if share > 0 then reserve = math.max(1, math.ceil(limit * share)) end
if tokens - cost < reserve then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
  return math.max(1, math.ceil((reserve + cost - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - cost), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], 600000)
return 0
"""

# KEYS[1] bucket; ARGV limit, remaining, block_ms ('' when unknown). Nango's count replaces our estimate: it
# knows about its window resets and about other clients of the account.
_FEED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'limit', ARGV[1]) end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[2], 'stamp', now)
end
if ARGV[3] ~= '' then
  local until_ms = now + tonumber(ARGV[3])
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  if until_ms > blocked then redis.call('HSET', KEYS[1], 'blocked', until_ms) end
end
redis.call('PEXPIRE', KEYS[1], 600000)
return 1
"""

# KEYS[1] streak, KEYS[2] breaker; ARGV threshold, open_ms. Returns 1 when this failure opened it.
_FAIL = """
local streak = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 60000)
if streak >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
"""


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class TokenBucket:
    """The shared Nango budget. `take` and `feed` raise SharedUnavailable when Redis cannot answer."""

    def __init__(self, store: SharedStore) -> None:
        self._store = store
        self._key = store.key("nango", "budget")

    async def take(self, *, reserve_share: float = 0.0, background: bool = False) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is free beyond the reserve
        (`reserve_share` of Nango's limit, kept for live lookups)."""

        async def take(redis: Redis) -> int:
            return int(await redis.eval(_TAKE, 1, self._key, "1", repr(reserve_share)))

        waited_ms = await self._store.run("budget", take, background=background)
        return min(waited_ms / 1000, MAX_RATE_WAIT)

    async def feed(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in one Nango response's status and `X-RateLimit-*` / `Retry-After` headers (any casing)."""
        lowered = {name.lower(): value for name, value in headers.items()}
        limit = _number(lowered, "x-ratelimit-limit")
        remaining = _number(lowered, "x-ratelimit-remaining")
        block = ""
        if status == 429:
            retry_after = _number(lowered, "retry-after")
            block = str(int(min(retry_after if retry_after is not None else DEFAULT_RETRY_AFTER, MAX_RATE_WAIT) * 1000))
        if limit is None and remaining is None and not block:
            return
        args = ("" if limit is None else str(int(limit)), "" if remaining is None else str(int(remaining)), block)

        async def feed(redis: Redis) -> None:
            await redis.eval(_FEED, 1, self._key, *args)

        await self._store.run("budget", feed)


class SharedBreaker:
    """Outage-like Nango failures counted across replicas; raises SharedUnavailable when Redis cannot answer."""

    def __init__(self, store: SharedStore, *, threshold: int, open_seconds: float) -> None:
        self._store = store
        self._threshold = threshold
        self._open_ms = max(int(open_seconds * 1000), 1)
        self._streak_key = store.key("nango", "breaker", "streak")
        self._open_key = store.key("nango", "breaker", "open")

    async def failure(self) -> bool:
        """Count one failure; True when it opened the breaker for everyone."""

        async def fail(redis: Redis) -> int:
            args = (str(self._threshold), str(self._open_ms))
            return int(await redis.eval(_FAIL, 2, self._streak_key, self._open_key, *args))

        return bool(await self._store.run("breaker", fail))

    async def success(self) -> None:
        async def reset(redis: Redis) -> None:
            await redis.delete(self._streak_key)

        await self._store.run("breaker", reset)

    async def open_for(self) -> float:
        """Seconds the shared breaker stays open (0.0 when closed)."""

        async def ttl(redis: Redis) -> int:
            return int(await redis.pttl(self._open_key))

        remaining_ms = await self._store.run("breaker", ttl)
        return max(remaining_ms, 0) / 1000
