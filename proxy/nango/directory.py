"""User id -> Nango connection id, fast enough for a phone call and alive when Nango is not.

Answers come from, in order: the bulk index (every connection of the integration, rebuilt by paging),
the per-user TTL cache, the negative cache, then one Nango request per cold user, shared by every
concurrent caller and bounded by the caller's deadline. When Nango fails, the last known good
connection id is served (stale-if-error).

Seams: the index store (`proxy.nango.index`) and its rebuilds (`proxy.nango.refresh`), webhook effects (`confirm`,
`apply_user_connections`, `forget_connection`, `suspend`) and lookups (`lookup`, `current`). Freshness bounds:
docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cachetools import LRUCache, TTLCache

from proxy.metrics import Metrics
from proxy.nango.client import Connection, NangoClient, NangoError, NangoSettings, pick_connection
from proxy.nango.index import ConnectionIndex
from proxy.nango.lines import LineFinder
from proxy.nango.refresh import REFRESH_RETRY_SECONDS, IndexEffect, IndexRefresher

__all__ = ["REFRESH_RETRY_SECONDS", "ConnectionDirectory", "DirectoryListener", "Lookup", "Source", "answer_for"]

logger = logging.getLogger(__name__)

# Also what the call log line shows as "connection" and `resolve` as "connection_source".
Source = Literal["index", "cache", "nango", "stale", "negative", "timeout", "error", "unhealthy", "fixed"]
Negative = Literal["negative", "unhealthy"]


@dataclass(frozen=True)
class Lookup:
    """The answer for one user: a usable connection id or None, and where the answer came from."""

    connection_id: str | None
    source: Source
    detail: str = ""
    connection: Connection | None = field(default=None, compare=False)  # unknown for a fixed or stale id


def answer_for(conn: Connection, source: Source) -> Lookup:
    if conn.healthy:
        return Lookup(conn.connection_id, source, connection=conn)
    return Lookup(None, "unhealthy", f"connection {conn.connection_id} has errors; the user must reconnect")


class DirectoryListener(Protocol):
    """Told what this replica learnt, so the other replicas learn it too (proxy.shared.cluster).
    Called synchronously: an implementation must not block; it schedules its own I/O."""

    def user_connections(self, user_id: str, conns: list[Connection]) -> None:
        """A webhook, confirmed with Nango: these are the user's connections now."""

    def connection_forgotten(self, connection_id: str, user_id: str | None) -> None:
        """Nango says the connection is gone (or is not `user_id`'s)."""

    def connection_suspended(self, connection_id: str) -> None:
        """A failed refresh Nango could not confirm: held back briefly."""

    def connections_learned(self, conns: list[Connection]) -> None:
        """Connections Nango just listed for a line lookup (tag routing): known now, as after a webhook."""

    def nango_outage(self) -> None:
        """A lookup failed the way an outage does (no answer, 5xx, 429)."""

    def nango_answered(self) -> None:
        """A lookup got an answer from Nango."""


# Users that webhooks may add to the index between two refreshes; beyond it they go to the bounded cache.
WEBHOOK_NEW_USERS_LIMIT = 10_000
# A failed refresh Nango could not confirm holds the connection back this long.
UNCONFIRMED_FAILURE_SECONDS = 30.0
# A lookup that just failed is not repeated for this long: during a Nango outage each user then costs
# one request every few seconds, not one per call (the calls get the stale id or the error fallback).
FAILURE_TTL_SECONDS = 2.0
# After this many lookups in a row fail the way an outage does (no answer, 5xx, 429), no user's lookup
# asks Nango for FAILURE_TTL_SECONDS; then one is let through to probe. Calls get stale ids or fallbacks.
BREAKER_THRESHOLD = 5


class ConnectionDirectory:
    """Finds the Nango connection of a user; see the module docstring for the order and the bounds."""

    def __init__(
        self,
        client: NangoClient | None,
        settings: NangoSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        size = max(settings.cache_max_size, 1)
        self._indexer = IndexRefresher(client, settings.index_refresh_interval, metrics, clock, self._set_error)
        self._cache: TTLCache[str, Connection] = TTLCache(size, settings.cache_ttl, timer=clock)
        self._negative: TTLCache[str, Negative] = TTLCache(size, settings.negative_ttl, timer=clock)
        self._last_good: LRUCache[str, str] = LRUCache(size)
        self._failures: TTLCache[str, str] = TTLCache(size, FAILURE_TTL_SECONDS, timer=clock)
        self._outage_streak = 0
        self._breaker_open_until = 0.0
        self._inflight: dict[str, asyncio.Task[Lookup]] = {}
        # Webhook confirmations in flight (proxy.nango.webhooks), shared by concurrent deliveries.
        self.confirming: dict[tuple[str, str | None], asyncio.Task[Any]] = {}
        self._unusable: TTLCache[str, bool] = TTLCache(size, UNCONFIRMED_FAILURE_SECONDS, timer=clock)
        self.listener: DirectoryListener | None = None
        # Bumped by every webhook, so a Nango answer that started earlier cannot overwrite it.
        self._generation = 0
        self._last_error: str | None = None
        routing = settings.tag_routing
        self.lines = LineFinder(self, routing, metrics, size, settings.cache_ttl, clock) if routing else None

    @property
    def client(self) -> NangoClient | None:
        return self._client

    @property
    def index(self) -> ConnectionIndex:
        """The current index (replaced as a whole by each refresh)."""
        return self._indexer.index

    def breaker_open(self) -> bool:
        return self._clock() < self._breaker_open_until

    async def lookup(self, user_id: str, *, timeout: float) -> Lookup:
        """The user's connection, within `timeout` seconds whatever Nango does."""
        known = self._known(user_id, count=True)
        if known is not None:
            return known
        if self._client is None:
            return Lookup(None, "error", "nango not configured")
        if (code := self._failures.get(user_id)) is not None:
            self._event("recent_failure")
            return self._stale_or(user_id, Lookup(None, "error", f"{code} (recent)"), code)
        if self._clock() < self._breaker_open_until:
            self._event("breaker_open")
            return self._stale_or(user_id, Lookup(None, "error", "nango unavailable"), "nango unavailable")
        self._event("miss")
        task = self._inflight.get(user_id) or self._start_fetch(user_id)
        try:
            # The shield keeps the request going after the deadline, so it fills the cache for the next call.
            return await asyncio.wait_for(asyncio.shield(task), timeout=max(timeout, 0.0))
        except TimeoutError:
            self._event("timeout")
            logger.warning("nango lookup for user %s did not finish within %.2fs", user_id, timeout)
            return self._stale_or(user_id, Lookup(None, "timeout", f"no answer within {timeout:g}s"), "timeout")

    def warm(self, user_id: str) -> tuple[str, str] | None:
        """A healthy connection id already held (index, then cache) and the cache event that `lookup` would
        count for it ("index_hit" or "hit"); None for anything else. Counts nothing (proxy.http.fastpath does)."""
        # `_known` and `_answer` without their Lookup object; tests/http/test_fastpath.py holds the two in step.
        conn = self._indexer.index.user(user_id)
        event = "index_hit"
        if conn is None:
            event = "hit"
            try:
                conn = self._cache[user_id]  # one expiry check; TTLCache.get makes two
            except KeyError:
                return None
        if not conn.healthy or (self._unusable and conn.connection_id in self._unusable):
            return None
        if conn.integration and self._settings.kind_of(conn.integration, conn.provider) != "google":
            return None  # served in proxy mode whatever the route says: the slow path builds that answer
        return conn.connection_id, event

    def _known(self, user_id: str, *, count: bool) -> Lookup | None:
        if (conn := self._indexer.index.user(user_id)) is not None:
            self._event("index_hit", count)
            return self.answer(conn, "index")
        if (conn := self._cache.get(user_id)) is not None:
            self._event("hit", count)
            return self.answer(conn, "cache")
        if (reason := self._negative.get(user_id)) is not None:
            self._event("negative_hit", count)
            return Lookup(None, reason, "cached")
        return None

    def _start_fetch(self, user_id: str) -> asyncio.Task[Lookup]:
        task = asyncio.create_task(self._fetch(user_id), name=f"nango-lookup:{user_id}")
        self._inflight[user_id] = task
        task.add_done_callback(functools.partial(self._fetch_done, user_id))
        return task

    def _fetch_done(self, user_id: str, task: asyncio.Task[Lookup]) -> None:
        if self._inflight.get(user_id) is task:
            del self._inflight[user_id]

    async def _fetch(self, user_id: str) -> Lookup:
        assert self._client is not None
        generation = self._generation
        try:
            conns = await self._client.find_user_connections(user_id)
        except NangoError as exc:
            if exc.status is None or exc.status == 429 or exc.status >= 500:
                self._outage_streak += 1
                if self._outage_streak >= BREAKER_THRESHOLD:
                    self.open_breaker(FAILURE_TTL_SECONDS)
                if self.listener is not None:
                    self.listener.nango_outage()
            return self._failed(user_id, exc.code)
        except Exception:  # a bug here must still leave the call with an answer
            logger.exception("nango lookup for user %s crashed", user_id)
            return self._failed(user_id, "internal_error")
        self._last_error = None
        self._outage_streak = 0
        if self.listener is not None:
            self.listener.nango_answered()
        if generation != self._generation and (newer := self._known(user_id, count=False)) is not None:
            return newer
        return self._remember(user_id, conns)

    def answer(self, conn: Connection, source: Source) -> Lookup:
        """What a lookup answers for `conn`: its id, unless it has errors or a failed refresh holds it back."""
        if self._unusable and conn.connection_id in self._unusable:
            return Lookup(None, "unhealthy", f"connection {conn.connection_id}: refresh failed (unconfirmed)")
        return answer_for(conn, source)

    def _failed(self, user_id: str, code: str) -> Lookup:
        self._last_error = code
        self._failures[user_id] = code
        logger.warning("nango lookup for user %s failed: %s", user_id, code)
        return self._stale_or(user_id, Lookup(None, "error", code), code)

    def _stale_or(self, user_id: str, fallback: Lookup, detail: str) -> Lookup:
        stale = self._last_good.get(user_id)
        if stale is None:
            return fallback
        self._event("stale_served")
        logger.info("serving stale connection %s for user %s (%s)", stale, user_id, detail)
        return Lookup(stale, "stale", detail)

    def _remember(self, user_id: str, conns: list[Connection]) -> Lookup:
        best = pick_connection(conns)
        if len(conns) > 1:
            logger.info(
                "user %s has %d %s connections; using %s",
                user_id,
                len(conns),
                self._settings.integration_id,
                best.connection_id if best else "none (all have errors)",
            )
        self._failures.pop(user_id, None)
        if best is not None:
            self._cache[user_id] = best
            self._last_good[user_id] = best.connection_id
            self._negative.pop(user_id, None)
            return Lookup(best.connection_id, "nango", connection=best)
        # Nango says there is nothing usable: an old id must not come back as a stale answer.
        self._cache.pop(user_id, None)
        self._last_good.pop(user_id, None)
        if conns:
            self._negative[user_id] = "unhealthy"
            return Lookup(None, "unhealthy", "every connection has errors; the user must reconnect")
        self._negative[user_id] = "negative"
        return Lookup(None, "negative", "no connection")

    def open_breaker(self, seconds: float) -> None:
        """No lookup asks Nango for `seconds` (this replica's outage streak, or the cluster's)."""
        self._breaker_open_until = max(self._breaker_open_until, self._clock() + seconds)

    def apply_user_connections(self, user_id: str, conns: list[Connection], *, announce: bool = True) -> None:
        """Every connection Nango holds for the user, just read: the very next lookup sees the best of them.
        `announce=False` when another replica read them."""
        self._generation += 1
        for conn in conns:
            self._unusable.pop(conn.connection_id, None)
        indexer = self._indexer
        known = indexer.index.user(user_id)
        if known is not None and all(c.connection_id != known.connection_id for c in conns):
            indexer.apply(functools.partial(ConnectionIndex.remove, connection_id=known.connection_id, user_id=user_id))
        if known is None and indexer.webhook_users >= WEBHOOK_NEW_USERS_LIMIT:
            logger.warning(
                "%d users added by webhooks since the index refresh; %s only cached", indexer.webhook_users, user_id
            )
        else:
            indexer.webhook_users += known is None
            for conn in conns:
                indexer.apply(functools.partial(ConnectionIndex.put, conn=conn))
        self._remember(user_id, conns)
        if self.lines is not None:
            self.lines.learned(conns)
        if announce and self.listener is not None:
            self.listener.user_connections(user_id, conns)

    def learn(self, conns: list[Connection], *, announce: bool = True) -> None:
        """Connections Nango just listed (e.g. those claiming a line): indexed as a refresh would index them.
        `announce=False` when another replica listed them."""
        self._generation += 1
        for conn in conns:
            self._indexer.apply(functools.partial(ConnectionIndex.put, conn=conn))
        if self.lines is not None:
            self.lines.learned(conns)
        if announce and conns and self.listener is not None:
            self.listener.connections_learned(conns)

    def current(self, user_id: str) -> str | None:
        """The connection id the next lookup of `user_id` answers from memory, if any."""
        known = self._known(user_id, count=False)
        return known.connection_id if known is not None else None

    def forget_connection(self, connection_id: str, user_id: str | None = None, *, announce: bool = True) -> None:
        """Nango says the connection does not exist (deleted), or is not `user_id`'s: stop handing it out
        (to `user_id` only, in the second case: its real owner keeps it, see `ConnectionIndex.forget`)."""
        self._generation += 1
        self._indexer.apply(functools.partial(ConnectionIndex.forget, connection_id=connection_id, user_id=user_id))
        if announce and self.listener is not None:
            self.listener.connection_forgotten(connection_id, user_id)
        owned = [u for u, c in self._cache.items() if c.connection_id == connection_id]
        for cached in owned if user_id is None else [u for u in owned if u == user_id]:
            del self._cache[cached]
            self._last_good.pop(cached, None)

    def suspend(self, connection_id: str, *, announce: bool = True) -> None:
        """A failed refresh Nango could not confirm (unreachable): hold the connection back for a short,
        fixed time, so a replayed webhook costs a user at most that, and a real failure shows at once."""
        self._unusable[connection_id] = True
        if announce and self.listener is not None:
            self.listener.connection_suspended(connection_id)

    def retain_users(self, user_ids: Collection[str]) -> None:
        """Forget cached answers for users that are no longer configured."""
        keep = user_ids if isinstance(user_ids, set | frozenset) else set(user_ids)
        for cache in (self._cache, self._negative, self._last_good):
            for user_id in [u for u in cache if u not in keep]:
                cache.pop(user_id, None)

    def start_index_refresh(self) -> asyncio.Task[bool] | None:
        """Start rebuilding the index unless a rebuild is running (e.g. on config reload); None when disabled."""
        return self._indexer.start()

    async def refresh_index(self) -> bool:
        """Rebuild the whole index from Nango; concurrent calls share one rebuild. True when it succeeded."""
        return await self._indexer.refresh()

    def recording_effects(self) -> contextlib.AbstractContextManager[list[IndexEffect]]:
        """Collects webhook effects while a new index is built or loaded, for `install_index` to replay."""
        return self._indexer.recording_effects()

    async def page_index(self) -> ConnectionIndex | None:
        """Every connection from Nango, indexed; None (logged, shown in `status`) when paging failed."""
        return await self._indexer.page()

    def install_index(self, index: ConnectionIndex, effects: list[IndexEffect], *, age: float = 0.0) -> None:
        """Serve `index` from now on (built `age` seconds ago), after replaying the webhook effects recorded
        while it was made."""
        self._indexer.install(index, effects, age=age)

    def index_snapshot(self) -> tuple[ConnectionIndex, float | None]:
        """The index served now and its age in seconds (None before the first)."""
        return self._indexer.index, self._indexer.age()

    async def run_index_refresher(self) -> None:
        """Refresh the index now and every `index_refresh_interval` seconds, until cancelled (app lifespan)."""
        await self._indexer.run()

    async def aclose(self) -> None:
        """Cancel in-flight lookups and a running index refresh (app shutdown)."""
        refresh = self._indexer.task
        tasks = [*self._inflight.values(), *([refresh] if refresh else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, object]:
        """Nango's state for /readyz: it never makes the proxy unready, it only explains degraded answers."""
        state = "unconfigured" if self._client is None else "degraded" if self._last_error else "ok"
        index, age = self.index_snapshot()
        return {
            "nango": state,
            "last_error": self._last_error,
            "index_size": len(index),
            "index_age_seconds": None if age is None else round(age, 1),
            "cache_size": len(self._cache),
            "negative_cache_size": len(self._negative),
            "lookups_in_flight": len(self._inflight),
            "breaker_open": self._clock() < self._breaker_open_until,
            "tagged_lines": index.claimed_lines,
            "line_conflicts": sum(1 for _ in index.conflicts()),
            "providers": index.kinds(self._settings.kind_of),
        }

    def _set_error(self, code: str | None) -> None:
        self._last_error = code

    def _event(self, event: str, count: bool = True) -> None:
        if count:
            self._metrics.cache_events.labels(event=event).inc()
