"""Called line -> the Nango connection whose tags claim it (tag routing), fast and fresh.

In order: the bulk index (built in the same pass as the user index), a TTL cache (used when the index is
off), then, for a line nobody knows, one `GET /connections?tags[<number tag>]=<number>` request, shared
by concurrent calls and bounded by the call's deadline; "nobody claims it" is remembered for
`tag_routing.negative_ttl` (default 5 s). So a user onboarded a moment ago is reachable on a replica
that missed the webhook, at the cost of one request per unknown line per negative TTL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from cachetools import TTLCache

from proxy.config.snapshot import Config, InboundCall, Route, RouteKeys, User
from proxy.metrics import Metrics
from proxy.nango.client import Connection, NangoClient, NangoError
from proxy.nango.index import ClaimKind, Conflict, ConnectionIndex, claimant, line_owner
from proxy.nango.tags import TagRouting
from proxy.numbers import mask_number

__all__ = ["LineFinder", "LineMatch", "report_conflicts", "route_source", "tagged_route", "yaml_users_by_nango_id"]

logger = logging.getLogger(__name__)

LineKey = tuple[str, str]  # (kind, value): ("to", "+14155550100") or ("phone_number_id", "<uuid>")
# A line lookup that failed is not repeated for this long (Nango outage: one request per line every 2 s).
FAILURE_TTL_SECONDS = 2.0
# Conflicts written to the log after each index refresh; the metric counts them all.
LOGGED_CONFLICTS = 20


class Directory(Protocol):
    """What a LineFinder needs of its `proxy.nango.directory.ConnectionDirectory`."""

    @property
    def client(self) -> NangoClient | None: ...

    @property
    def index(self) -> ConnectionIndex: ...

    def breaker_open(self) -> bool: ...

    def learn(self, conns: list[Connection]) -> None: ...


@dataclass(frozen=True)
class LineMatch:
    """The connection that claims the called line, the tag that says so, and where that was learnt."""

    connection: Connection
    kind: str
    value: str
    tag: str
    source: str  # "index", "cache" or "nango"


class LineFinder:
    """Finds the connection claiming a call's line; one per directory."""

    def __init__(
        self,
        directory: Directory,
        routing: TagRouting,
        metrics: Metrics,
        cache_size: int,
        cache_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = directory.client
        self.routing = routing
        self._metrics = metrics
        self._directory = directory
        self._cache: TTLCache[LineKey, Connection] = TTLCache(cache_size, cache_ttl, timer=clock)
        self._negative: TTLCache[LineKey, bool] = TTLCache(cache_size, max(routing.negative_ttl, 1e-3), timer=clock)
        self._failures: TTLCache[LineKey, str] = TTLCache(cache_size, FAILURE_TTL_SECONDS, timer=clock)
        self._inflight: dict[LineKey, asyncio.Task[Connection | None]] = {}

    def keys(self, call: InboundCall) -> list[tuple[str, str, str]]:
        """(kind, value, tag) of the call's line, phone-number id first (stable when a number is ported)."""
        keys = []
        if call.phone_number_id is not None and self.routing.phone_number_id_tag is not None:
            keys.append(("phone_number_id", call.phone_number_id, self.routing.phone_number_id_tag))
        if call.to is not None and call.to.startswith("+") and self.routing.number_tag is not None:
            keys.append(("to", call.to, self.routing.number_tag))
        return keys

    def known(self, call: InboundCall) -> LineMatch | None:
        """The claim this replica already holds (index or cache), without asking Nango."""
        index = self._directory.index
        for kind, value, tag in self.keys(call):
            if (conn := index.line(kind, value)) is not None:
                self._event("line_index_hit")
                return LineMatch(conn, kind, value, tag, "index")
            if (conn := self._cache.get((kind, value))) is not None:
                self._event("line_hit")
                return LineMatch(conn, kind, value, tag, "cache")
        return None

    async def find(self, call: InboundCall, *, timeout: float) -> LineMatch | None:
        """The connection claiming the call's line, asking Nango once for a line nobody knows (within `timeout`)."""
        known = self.known(call)
        if known is not None or self._client is None:
            return known
        keys = self.keys(call)
        if not keys:
            return None
        # One request per miss: the number is what every onboarding sets; the id where there is no number.
        kind, value, tag = next((k for k in keys if k[0] == "to"), keys[0])
        key = (kind, value)
        if key in self._negative:
            self._event("line_negative_hit")
            return None
        if key in self._failures or self._directory.breaker_open():
            self._event("line_unavailable")
            return None
        self._event("line_miss")
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key, tag), name=f"nango-line:{kind}")
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        try:
            conn = await asyncio.wait_for(asyncio.shield(task), timeout=max(timeout, 0.0))
        except TimeoutError:
            self._event("line_timeout")
            return None
        return LineMatch(conn, kind, value, tag, "nango") if conn is not None else None

    def _done(self, key: LineKey, task: asyncio.Task[Connection | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _fetch(self, key: LineKey, tag: str) -> Connection | None:
        assert self._client is not None
        try:
            conns = await self._client.find_line_connections(tag, key[1])
        except NangoError as exc:
            self._failures[key] = exc.code
            return None
        except Exception:  # a bug here must still leave the call with an answer
            logger.exception("nango line lookup crashed")
            self._failures[key] = "internal_error"
            return None
        claiming = [conn for conn in conns if conn.route is not None and key in set(conn.route.claims())]
        self._directory.learn(claiming)
        if not claiming:
            self._negative[key] = True
            return None
        return line_owner(claiming)

    def learned(self, conns: list[Connection]) -> None:
        """Connections Nango just reported (webhook confirmation, lookup): their lines are known now, and a
        claim on a line another user holds is reported at once (gauges and a log line); the holder keeps it."""
        index = self._directory.index
        if any(conn.route is not None for conn in conns):
            # The gauges follow at once, not only at the next index refresh.
            self._metrics.tagged_lines.set(index.claimed_lines)
            self._metrics.line_conflicts.set(sum(1 for _ in index.conflicts()))
        for conn in conns:
            for kind, value in conn.route.claims() if conn.route is not None else ():
                key = (kind, value)
                self._negative.pop(key, None)
                current = self._cache.get(key)
                same = current is None or current.connection_id == conn.connection_id
                self._cache[key] = conn if same or current is None else line_owner([current, conn])
                conflict = index.conflict(kind, value)
                if conflict is None and current is not None and claimant(current) != claimant(conn):
                    keeper = self._cache[key]  # the index is off: the cached claims are all there is
                    conflict = Conflict(kind, value, keeper, (conn if keeper is current else current,))
                if conflict is not None and conn in (conflict.winner, *conflict.losers):
                    _log_conflict(conflict)

    def _event(self, event: str) -> None:
        self._metrics.cache_events.labels(event=event).inc()


def report_conflicts(index: ConnectionIndex, metrics: Metrics) -> int:
    """Log (the first few) and count lines claimed by several connections after an index build."""
    conflicts = list(index.conflicts())
    metrics.line_conflicts.set(len(conflicts))
    for conflict in conflicts[:LOGGED_CONFLICTS]:
        _log_conflict(conflict)
    return len(conflicts)


def _log_conflict(conflict: Conflict) -> None:
    logger.warning(
        "tag routing conflict: %s %s is claimed by connections %s; %s keeps it (the first healthy claimant; "
        "move a line with `vapi-calendar-proxy assign`)",
        conflict.kind,
        _shown(conflict.kind, conflict.value),
        ", ".join(c.connection_id for c in (conflict.winner, *conflict.losers)),
        conflict.winner.connection_id,
    )


def _shown(kind: ClaimKind, value: str) -> str:
    return mask_number(value) if kind == "to" else value


# Routes made from Nango connection tags: what a call to a tagged line gets, with the configured defaults.
#
# A tagged connection's user is the YAML user whose `nango_user_id` is the connection's user tag, when
# there is one (YAML keeps precedence: name, time zone, template, assistant, variables, a fixed
# connection id); otherwise a user made from the tags: the name tag (else the user id), the time-zone
# tag (else the top-level `timezone`), the template tag when it names a template (else
# `default_template`). Calendar and fallbacks are the global ones.
_NO_KEYS = RouteKeys()


def yaml_users_by_nango_id(config: Config) -> Mapping[str, User]:
    """YAML users by the user tag their Nango connections carry; built once per snapshot."""
    key = ("yaml_users_by_nango_id",)
    users = config.prepared.get(key)
    if users is None:
        users = config.prepared[key] = {user.nango_user_id: user for user in config.users.values()}
    return users  # type: ignore[return-value]


def _zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    if name is None:
        return default
    try:
        return ZoneInfo(name)  # cached by zoneinfo; a bad name is refused, never a path
    except Exception:
        return default


def tagged_route(config: Config, line: LineMatch) -> Route:
    """The route a call to `line` follows."""
    conn = line.connection
    tags = conn.route
    user_id = conn.user_id or f"nango:{conn.connection_id}"
    user = yaml_users_by_nango_id(config).get(conn.user_id) if conn.user_id is not None else None
    tag_template = tags.template if tags is not None and tags.template in config.templates else None
    if user is None:
        user = User(
            id=user_id,
            name=(tags.name if tags is not None else None) or user_id,
            timezone=_zone(tags.timezone if tags is not None else None, config.timezone),
            connection_id=None,
            nango_user_id=user_id,
        )
    return Route(
        name=f"nango:{conn.connection_id}",
        user=user,
        keys=_NO_KEYS,
        template=user.template or tag_template or config.default_template,
        overrides=(user.assistant,) if user.assistant else (),
        variables={**config.variables, **user.variables} if user.variables else config.variables,
        calendar=config.calendar,
        fallbacks=config.fallbacks,
    )


def route_source(line: LineMatch) -> str:
    """Where a tagged route came from, for `resolve` and the call log."""
    return f"nango connection {line.connection.connection_id}, tag {line.tag}={line.value} ({line.source})"
