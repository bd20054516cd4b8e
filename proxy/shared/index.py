"""The cluster's Nango index in Redis: built by one replica under a lease, read by all.

Layout (all keys under the store's prefix):
- `index:meta` (hash): `version` (the builder's fencing token), `chunks`, `users`, `built_at` (epoch seconds);
- `index:chunk:<version>:<n>` (strings): JSON lists of `[user_id, connection_id, created, healthy]`, 2,000 a
  chunk, never changed once written, so a reader never sees half of one build and half of another;
- `index:overlay` (hash): webhook effects since the build, per user, `[op, connection_id, created, at_ms]`,
  applied on top by every reader and trimmed by the next build.
Chunks and meta expire after `ttl`, so an index nobody refreshes disappears instead of going stale forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from proxy.nango import Connection
from proxy.shared.lock import Lease
from proxy.shared.store import SharedStore

__all__ = ["IndexMeta", "IndexStore", "Overlay"]

CHUNK_SIZE = 2000

# Publish a build only while the lease is still ours (fencing), then drop overlay entries it already covers.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'version', ARGV[1], 'chunks', ARGV[2], 'users', ARGV[3], 'built_at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local overlay = redis.call('HGETALL', KEYS[3])
for i = 1, #overlay, 2 do
  local entry = cjson.decode(overlay[i + 1])
  if tonumber(entry[4]) < tonumber(ARGV[6]) then redis.call('HDEL', KEYS[3], overlay[i]) end
end
return 1
"""

Overlay = tuple[str, str, str, int]  # (op "put"/"broken"/"mark", connection_id, created, at_ms)


@dataclass(frozen=True)
class IndexMeta:
    version: int
    chunks: int
    users: int
    built_at: float  # epoch seconds


def _meta(raw: Mapping[Any, Any]) -> IndexMeta | None:
    try:
        return IndexMeta(
            version=int(raw[b"version"]),
            chunks=int(raw[b"chunks"]),
            users=int(raw[b"users"]),
            built_at=float(raw[b"built_at"]),
        )
    except (KeyError, ValueError):
        return None


def _encode(conns: list[Connection]) -> bytes:
    return orjson.dumps([[c.user_id, c.connection_id, c.created, c.healthy] for c in conns])


def _decode(raw: bytes, into: dict[str, Connection]) -> None:
    for user_id, connection_id, created, healthy in orjson.loads(raw):
        into[user_id] = Connection(connection_id, user_id, created, bool(healthy))


def apply_overlay(index: dict[str, Connection], user_id: str, entry: Overlay) -> None:
    """A webhook effect on an index: `put` replaces the user's connection, `broken` replaces it with one known
    to be unusable, `mark` flags the user's connection unusable if it is that one."""
    op, connection_id, created, _ = entry
    if op in ("put", "broken"):
        index[user_id] = Connection(connection_id, user_id, created, op == "put")
    elif op == "mark" and (current := index.get(user_id)) is not None and current.connection_id == connection_id:
        index[user_id] = Connection(connection_id, user_id, current.created, False)


class IndexStore:
    """Reads and writes the shared index; every method raises SharedUnavailable when Redis cannot answer."""

    def __init__(self, store: SharedStore, *, ttl: float, wall_clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._ttl_ms = max(int(ttl * 1000), 1000)
        self._wall_clock = wall_clock
        self._meta_key = store.key("index", "meta")
        self._overlay_key = store.key("index", "overlay")

    def _chunk_key(self, version: int, n: int) -> str:
        return self._store.key("index", "chunk", str(version), str(n))

    async def meta(self, *, background: bool = True) -> IndexMeta | None:
        async def read(redis: Redis) -> dict[Any, Any]:
            return await redis.hgetall(self._meta_key)

        return _meta(await self._store.run("index_load", read, background=background))

    async def store(self, lease: Lease, index: Mapping[str, Connection], *, started_at: float) -> int | None:
        """Write `index` as the lease's version; None when the lease was lost before it could be published.

        `started_at` (epoch seconds) is when the build began: webhook effects older than that are in it."""
        conns = list(index.values())
        chunks = [conns[i : i + CHUNK_SIZE] for i in range(0, len(conns), CHUNK_SIZE)]
        lock_key = self._store.key("lock", lease.name)

        async def write(redis: Redis) -> int:
            async with redis.pipeline(transaction=False) as pipe:
                for n, chunk in enumerate(chunks):
                    pipe.set(self._chunk_key(lease.token, n), _encode(chunk), px=self._ttl_ms)
                await pipe.execute()
            published = await redis.eval(
                _PUBLISH,
                3,
                lock_key,
                self._meta_key,
                self._overlay_key,
                str(lease.token),
                str(len(chunks)),
                str(len(conns)),
                repr(self._wall_clock()),
                str(self._ttl_ms),
                str(int(started_at * 1000)),
            )
            return int(published)

        ok = await self._store.run("index_store", write, background=True)
        return lease.token if ok else None

    async def load(self, meta: IndexMeta) -> dict[str, Connection] | None:
        """The index of version `meta` with the overlay applied; None when its chunks are gone."""

        async def read(redis: Redis) -> tuple[list[Any], dict[Any, Any]]:
            keys = [self._chunk_key(meta.version, n) for n in range(meta.chunks)]
            raw = await redis.mget(keys) if keys else []
            overlay = await redis.hgetall(self._overlay_key)
            return raw, overlay

        chunks, overlay = await self._store.run("index_load", read, background=True)
        if any(chunk is None for chunk in chunks):
            return None
        index: dict[str, Connection] = {}
        for chunk in chunks:
            _decode(chunk, index)
        for user_id, entry in self.overlay_entries(overlay.items()):
            apply_overlay(index, user_id, entry)
        return index

    @staticmethod
    def overlay_entries(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, Overlay]]:
        entries = []
        for user, value in raw:
            op, connection_id, created, at_ms = orjson.loads(value)
            entries.append((user.decode(), (str(op), str(connection_id), str(created), int(at_ms))))
        return sorted(entries, key=lambda item: item[1][3])

    async def put(self, user_id: str, entry: Overlay) -> None:
        """Record a webhook effect so the next reader (and the next build's publication) sees it."""
        value = orjson.dumps(list(entry))

        async def write(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._overlay_key, user_id, value)
                pipe.pexpire(self._overlay_key, self._ttl_ms)
                await pipe.execute()

        await self._store.run("index_put", write)
