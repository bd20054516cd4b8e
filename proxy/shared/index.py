"""The cluster's Nango index in Redis: built by one replica under a lease, read by all.

Layout (all keys under the store's prefix):
- `index:meta` (hash): `version` (the builder's fencing token), `chunks`, `connections`, `built_at` (epoch s),
  `since` (epoch ms: when its listing began) and `mac`;
- `index:chunk:<version>:<n>` (strings): JSON lists of encoded connections, 2,000 a chunk, never changed once
  written, so a reader never sees half of one build and half of another;
- `index:overlay` (hash): what webhooks and line lookups changed since the build, one entry per user (`u:<id>`:
  the user's connections as Nango confirmed them), deleted connection (`c:<id>`) or connection a line lookup
  listed (`p:<id>`) or held back after an unconfirmed refresh failure (`s:<id>`), applied on top by every
  reader in the order they happened and trimmed by the next build.
Every value is signed (`proxy.shared.signing`) for its key (and field): one that does not verify is skipped,
counted and (in the overlay) trimmed, so whoever can write to Redis without the Nango secret key cannot change
what a replica serves. Chunks and meta expire after `ttl`, so an index nobody refreshes disappears instead of
going stale forever; a replaced build's chunks expire `REPLACED_GRACE_SECONDS` after the next one is published.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from proxy.nango.client import Connection
from proxy.nango.index import ConnectionIndex
from proxy.nango.tags import TagRoute
from proxy.shared.locks import Lease
from proxy.shared.signing import MAC_CHARS, Signer
from proxy.shared.store import SharedStore

__all__ = [
    "IndexMeta",
    "IndexStore",
    "OverlayEntry",
    "apply_overlay",
    "decode_chunk",
    "decode_connection",
    "encode_connection",
]

CHUNK_SIZE = 2000

# A replaced build's chunks stay this long for readers that read the old meta a moment ago, then expire: Redis
# holds one index (two for a minute after each refresh), not one per refresh within the chunks' TTL.
REPLACED_GRACE_SECONDS = 60.0

# Publish a build only while the lease is still ours (fencing), let the replaced build's chunks expire soon,
# then drop overlay entries the new build already covers, and any this version cannot read (never an error:
# one foreign value must not fail a publication). Overlay values are a MAC, then JSON.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local old = redis.call('HMGET', KEYS[2], 'version', 'chunks')
redis.call('HSET', KEYS[2], 'version', ARGV[1], 'chunks', ARGV[2], 'connections', ARGV[3], 'built_at', ARGV[4],
  'since', ARGV[6], 'mac', ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if old[1] and old[1] ~= ARGV[1] then
  for n = 0, (tonumber(old[2]) or 0) - 1 do
    redis.call('PEXPIRE', ARGV[8] .. old[1] .. ':' .. n, ARGV[7])
  end
end
local overlay = redis.call('HGETALL', KEYS[3])
for i = 1, #overlay, 2 do
  local ok, entry = pcall(cjson.decode, string.sub(overlay[i + 1], MAC_CHARS + 1))
  local at = ok and type(entry) == 'table' and tonumber(entry[1])
  if not at or at < tonumber(ARGV[6]) then redis.call('HDEL', KEYS[3], overlay[i]) end
end
return 1
""".replace("MAC_CHARS", str(MAC_CHARS))

# Drop overlay fields a reader could not use, unless rewritten since it read them (then they are new).
_TRIM = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n
"""
# Foreign overlay fields trimmed per read: a Redis full of junk costs one bounded command per read, not one huge one.
MAX_TRIMMED = 256


def encode_connection(conn: Connection) -> list[Any]:
    route = conn.route
    encoded_route = (
        None if route is None else [route.number, route.phone_number_id, route.template, route.name, route.timezone]
    )
    encoded = [conn.connection_id, conn.user_id, conn.created, conn.healthy, encoded_route]
    # Integration and provider only when known: entries written before them decode as before.
    return [*encoded, conn.integration, conn.provider] if conn.integration or conn.provider else encoded


def decode_connection(raw: Any) -> Connection:
    """Raises ValueError/TypeError on anything that is not an encoded connection."""
    if not isinstance(raw, list):
        raise ValueError("not an encoded connection")
    connection_id, user_id, created, healthy, route, *kind = raw
    if (
        not isinstance(connection_id, str)
        or not (user_id is None or isinstance(user_id, str))
        or len(kind) not in (0, 2)
    ):
        raise ValueError("not an encoded connection")
    tag_route = None if route is None else TagRoute(*(None if v is None else str(v) for v in route))
    integration, provider = (str(kind[0]), str(kind[1])) if kind else ("", "")
    return Connection(connection_id, user_id, str(created), bool(healthy), tag_route, integration, provider)


def decode_chunk(raw: bytes) -> list[Connection]:
    return [decode_connection(item) for item in orjson.loads(raw)]


_FIELD_PREFIXES = {"user": "u:", "forget": "c:", "put": "p:", "suspend": "s:"}


@dataclass(frozen=True)
class OverlayEntry:
    """A confirmed effect: the user's connections now (`user`), a deleted connection (`forget`), or one
    connection a line lookup listed (`put`); or a connection held back briefly (`suspend`, not an index
    effect: only replayed to replicas that missed its announcement)."""

    at_ms: int  # epoch milliseconds, when it was applied
    op: str  # "user" | "forget" | "put" | "suspend"
    subject: str  # user id, or connection id
    connections: tuple[Connection, ...] = ()
    owner: str | None = None  # forget: the user it is not (or no longer) the connection of

    @property
    def field(self) -> str:
        return _FIELD_PREFIXES[self.op] + self.subject

    def encode(self) -> bytes:
        conns = [encode_connection(c) for c in self.connections]
        return orjson.dumps([self.at_ms, self.op, self.subject, conns, self.owner])

    @classmethod
    def decode(cls, raw: bytes | str) -> OverlayEntry:
        at_ms, op, subject, conns, owner = orjson.loads(raw)
        if (
            type(at_ms) is not int
            or op not in _FIELD_PREFIXES
            or not isinstance(subject, str)
            or not isinstance(conns, list)
            or not (owner is None or isinstance(owner, str))
        ):
            raise ValueError("not an overlay entry")
        return cls(at_ms, op, subject, tuple(decode_connection(c) for c in conns), owner)


def apply_overlay(index: ConnectionIndex, entry: OverlayEntry) -> None:
    """Apply an effect to an index the way the directory applies it to its own."""
    if entry.op == "forget":
        index.forget(entry.subject, entry.owner)
        return
    if entry.op == "put":
        for conn in entry.connections:
            index.put(conn)
        return
    if entry.op == "suspend":
        return  # held back by the directory for a few seconds, not an index change
    known = index.user(entry.subject)
    if known is not None and all(c.connection_id != known.connection_id for c in entry.connections):
        index.remove(known.connection_id, entry.subject)
    for conn in entry.connections:
        index.put(conn)


@dataclass(frozen=True)
class IndexMeta:
    version: int
    chunks: int
    connections: int
    built_at: float  # epoch seconds
    since_ms: int = 0  # epoch milliseconds: overlay entries older than this are in the build


_META_FIELDS = (b"version", b"chunks", b"connections", b"built_at", b"since")


def _signed_meta(fields: Sequence[bytes]) -> bytes:
    return b"|".join(fields)


class IndexStore:
    """Reads and writes the shared index; every method raises SharedUnavailable when Redis cannot answer."""

    def __init__(
        self, store: SharedStore, *, signer: Signer, ttl: float, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._signer = signer
        self._ttl_ms = max(int(ttl * 1000), 1000)
        self._wall_clock = wall_clock
        self._meta_key = store.key("index", "meta")
        self._overlay_key = store.key("index", "overlay")

    @property
    def _chunk_key_prefix(self) -> str:
        return self._store.key("index", "chunk", "")

    def _chunk_key(self, version: int, n: int) -> str:
        return f"{self._chunk_key_prefix}{version}:{n}"

    async def meta(self, *, background: bool = True) -> IndexMeta | None:
        async def read(redis: Redis) -> dict[Any, Any]:
            return await redis.hgetall(self._meta_key)

        raw = await self._store.run("index_load", read, background=background)
        if not raw:
            return None
        fields: list[bytes] = [raw.get(name, b"") for name in _META_FIELDS]
        if not all(fields) or not self._signer.verify(self._meta_key, _signed_meta(fields), raw.get(b"mac")):
            self._store.rejected("index")  # forged, or another version's: this replica builds its own
            return None
        try:
            version, chunks, connections, built_at, since = fields
            return IndexMeta(int(version), int(chunks), int(connections), float(built_at), int(since))
        except ValueError:
            self._store.rejected("index")
            return None

    async def store(self, lease: Lease, conns: Sequence[Connection], *, started_at: float) -> int | None:
        """Write every listed connection as the lease's version; None when the lease was lost first.

        `started_at` (epoch seconds) is when the listing began: webhook effects older than that are in it."""
        chunks = [conns[i : i + CHUNK_SIZE] for i in range(0, len(conns), CHUNK_SIZE)]
        lock_key = self._store.key("lock", lease.name)
        meta = [
            str(lease.token),
            str(len(chunks)),
            str(len(conns)),
            repr(self._wall_clock()),
            str(int(started_at * 1000)),
        ]
        mac = self._signer.mac(self._meta_key, _signed_meta([value.encode() for value in meta]))

        async def write(redis: Redis) -> int:
            async with redis.pipeline(transaction=False) as pipe:
                for n, chunk in enumerate(chunks):
                    key = self._chunk_key(lease.token, n)
                    value = self._signer.seal(key, orjson.dumps([encode_connection(c) for c in chunk]))
                    pipe.set(key, value, px=self._ttl_ms)
                await pipe.execute()
            published = await redis.eval(
                _PUBLISH,
                3,
                lock_key,
                self._meta_key,
                self._overlay_key,
                *meta[:4],
                str(self._ttl_ms),
                meta[4],
                str(int(REPLACED_GRACE_SECONDS * 1000)),
                self._chunk_key_prefix,
                mac,
            )
            return int(published)

        ok = await self._store.run("index_store", write, background=True)
        return lease.token if ok else None

    async def load(self, meta: IndexMeta) -> tuple[list[bytes], list[OverlayEntry]] | None:
        """The chunks of version `meta` (for `chunk`, one at a time: 100k connections take 0.2 s to decode,
        too long to hold the event loop) and the overlay to apply on top (the entries the build does not
        cover); None when chunks are gone."""

        async def read(redis: Redis) -> tuple[list[Any], list[OverlayEntry]]:
            keys = [self._chunk_key(meta.version, n) for n in range(meta.chunks)]
            raw = await redis.mget(keys) if keys else []
            return raw, await self._read_overlay(redis)

        chunks, overlay = await self._store.run("index_load", read, background=True)
        if any(chunk is None for chunk in chunks):
            return None
        return chunks, [entry for entry in overlay if entry.at_ms >= meta.since_ms]

    def chunk(self, meta: IndexMeta, n: int, sealed: bytes) -> list[Connection]:
        """Chunk `n` of `meta`'s build, decoded; ValueError when it is not the one that build signed."""
        raw = self._signer.open(self._chunk_key(meta.version, n), sealed)
        if raw is None:
            self._store.rejected("index")
            raise ValueError(f"index chunk {n} of version {meta.version} failed its signature")
        return decode_chunk(raw)

    async def overlay_since(self, since_ms: int) -> list[OverlayEntry]:
        """The overlay entries written at or after `since_ms` (epoch milliseconds), oldest first."""
        entries = await self._store.run("index_load", self._read_overlay, background=True)
        return [entry for entry in entries if entry.at_ms >= since_ms]

    async def _read_overlay(self, redis: Redis) -> list[OverlayEntry]:
        """Every usable overlay entry, oldest first; anything else (another version's, junk) is skipped and
        trimmed, so it costs one read, never a failed publication or a stalled refresh."""
        raw: dict[bytes, bytes] = await redis.hgetall(self._overlay_key)  # type: ignore[assignment]
        entries, foreign = self.overlay_entries(raw)
        if foreign:
            args = [part for field_value in foreign[:MAX_TRIMMED] for part in field_value]
            await redis.eval(_TRIM, 1, self._overlay_key, *args)
        return entries

    def overlay_entries(self, raw: Mapping[bytes, bytes]) -> tuple[list[OverlayEntry], list[tuple[bytes, bytes]]]:
        """The entries this version can use, oldest first, and the (field, value) pairs it cannot."""
        entries, foreign = [], []
        for name, value in raw.items():
            opened = self._signer.open(self._overlay_where(name.decode(errors="replace")), value)
            try:
                if opened is None:
                    raise ValueError("unsigned or forged")
                entry = OverlayEntry.decode(opened)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                self._store.rejected("overlay")
                foreign.append((name, value))
                continue
            if entry.field.encode() != name:
                foreign.append((name, value))  # an entry filed under another subject's field is not one we wrote
                continue
            entries.append(entry)
        return sorted(entries, key=lambda entry: entry.at_ms), foreign

    def _overlay_where(self, field: str) -> str:
        return f"{self._overlay_key}#{field}"

    async def put(self, entry: OverlayEntry) -> None:
        """Record a webhook's effect so the next reader (and the next build's publication) sees it."""
        value = self._signer.seal(self._overlay_where(entry.field), entry.encode())

        async def write(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._overlay_key, entry.field, value)
                pipe.pexpire(self._overlay_key, self._ttl_ms)
                await pipe.execute()

        await self._store.run("index_put", write)
