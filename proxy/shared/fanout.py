"""Announcements between replicas over Redis pub/sub: webhook effects, a new shared index, the breaker.

Pub/sub delivers in well under a millisecond on a LAN and loses what is sent while a subscriber is
disconnected. So announcements only speed things up: whatever they carry is also written to Redis
(the index overlay, the breaker key), and a subscriber that (re)connects calls `on_subscribed` so its
owner reads that state back.

Anyone allowed to publish on the channel could announce anything, so every announcement is signed
(`proxy.shared.signing`) and dated: one that does not verify, is older than `MAX_ANNOUNCEMENT_AGE` by its
sender's clock, or was already delivered, is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from cachetools import TTLCache
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from proxy.metrics import Metrics
from proxy.shared.signing import MAC_CHARS, Signer
from proxy.shared.store import SharedStore, raise_if_cancelling

__all__ = ["Announcement", "Fanout"]

logger = logging.getLogger(__name__)

# Waiting between reconnection attempts; short, since a subscriber that is down delays every webhook.
RECONNECT_SECONDS = 0.2
# An announcement larger than this is not ours (or is hostile): ignored unread.
MAX_MESSAGE_BYTES = 65536
# An announcement further from this replica's clock than this is not applied: a replay, or a clock far off.
MAX_ANNOUNCEMENT_AGE = 30.0
# Announcements remembered (by their MAC) for that long, so a replayed one is dropped; more than a cluster sends.
SEEN_ANNOUNCEMENTS = 8192


@dataclass(frozen=True)
class Announcement:
    """One message: `kind` says what happened, `data` the details; `origin` is the sending replica."""

    kind: str
    data: dict[str, Any]
    origin: str
    sent_at: float  # epoch seconds, for the fan-out delay metric


@dataclass
class Fanout:
    """Publishes announcements and delivers other replicas' ones to `handler` (see the module docstring)."""

    store: SharedStore
    metrics: Metrics
    signer: Signer
    wall_clock: Callable[[], float] = time.time
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: TTLCache[bytes, bool] = field(
        default_factory=lambda: TTLCache(SEEN_ANNOUNCEMENTS, 2 * MAX_ANNOUNCEMENT_AGE), repr=False
    )

    @property
    def channel(self) -> str:
        return self.store.key("events")

    async def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Announce to every replica (this one ignores its own). Raises SharedUnavailable."""
        body = orjson.dumps({"k": kind, "d": data, "o": self.replica_id, "t": self.wall_clock()})
        message = self.signer.seal(self.channel, body)

        async def publish(redis: Any) -> int:
            return int(await redis.publish(self.channel, message))

        await self.store.run("publish", publish)

    def parse(self, raw: object) -> Announcement | None:
        """Another replica's announcement, or None: this replica's own, or one that is not to be applied
        (too large, unsigned, forged, stale, replayed: those are counted as rejected)."""
        if not isinstance(raw, bytes) or len(raw) > MAX_MESSAGE_BYTES:
            self.store.rejected("announcement")
            return None
        opened = self.signer.open(self.channel, raw)
        try:
            if opened is None:
                raise ValueError("unsigned, forged, or another cluster's")
            body = orjson.loads(opened)
            message = Announcement(str(body["k"]), dict(body["d"]), str(body["o"]), float(body["t"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.store.rejected("announcement")
            return None
        if message.origin == self.replica_id:
            return None
        mac = raw[:MAC_CHARS]
        if abs(self.wall_clock() - message.sent_at) > MAX_ANNOUNCEMENT_AGE or mac in self._seen:
            self.store.rejected("announcement")
            return None
        self._seen[mac] = True
        return message

    async def run(self, handler: Callable[[Announcement], None], on_subscribed: Callable[[], None]) -> None:
        """Deliver announcements until cancelled (app lifespan), reconnecting whenever the link breaks."""
        while True:
            pubsub = _PubSub(self.store.redis.connection_pool, ignore_subscribe_messages=True)
            pubsub.reconnected = on_subscribed
            try:
                async with asyncio.timeout(self.store.settings.connect_timeout * 4):
                    await pubsub.subscribe(self.channel)
                self.subscribed.set()
                on_subscribed()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    raise_if_cancelling()
                    if message is not None and message.get("type") == "message":
                        self._deliver(message.get("data"), handler)
            except (RedisError, OSError, TimeoutError) as exc:
                raise_if_cancelling()
                if self.subscribed.is_set():
                    logger.warning("redis announcements lost (%s); resubscribing", type(exc).__name__)
                self.subscribed.clear()
            finally:
                self.subscribed.clear()
                await asyncio.shield(_close(pubsub))
            await asyncio.sleep(RECONNECT_SECONDS)

    def _deliver(self, raw: object, handler: Callable[[Announcement], None]) -> None:
        message = self.parse(raw)
        if message is None:
            return
        self.metrics.redis_fanout_delay.observe(max(self.wall_clock() - message.sent_at, 0.0))
        try:
            handler(message)
        except Exception:  # one bad announcement must not stop the others
            logger.exception("redis announcement %s could not be applied", message.kind)


class _PubSub(PubSub):
    """redis-py reconnects a subscription by itself (and resubscribes); what was published meanwhile is lost,
    so the owner must hear about every reconnection, not only the ones that surface as errors here."""

    reconnected: Callable[[], None] | None = None

    async def on_connect(self, connection: Any) -> None:
        resubscribing = bool(self.channels)
        await super().on_connect(connection)
        if resubscribing and self.reconnected is not None:
            self.reconnected()


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
