"""Nango's HTTP API, the parts the proxy uses: find a user's connection, page through all of them, onboard.

Field names and shapes follow `/work/shared/nango/NOTES.md` (Nango's own client and types). Responses are
parsed defensively: anything unexpected becomes `NangoError(code="invalid_response")`, never a KeyError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

import httpx

from proxy.config.models import NangoSettings
from proxy.metrics import Metrics
from proxy.nango.ratelimit import RateLimit, SharedBudget
from proxy.nango.tags import TagRoute, TagRouting, read_tag_route

__all__ = [
    "Connection",
    "NangoClient",
    "NangoError",
    "NangoSettings",
    "RateLimit",
    "RequestGate",
    "created_at",
    "owner_of",
    "parse_connection",
    "pick_connection",
    "rank_connection",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Paging stops at a short page; this only guards against a server that ignores `page=`.
MAX_PAGES = 1000
# Nango's codes are snake_case; anything else in that field is not echoed into logs.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# httpx's read timeout bounds each wait for bytes, not the whole answer: a server dripping a byte at a
# time would hold a lookup (and a pooled connection) for as long as it likes. This bounds the whole.
TOTAL_TIMEOUT_READS = 4
# Requests in flight at once; the rest wait their turn here. httpx's pool (100 connections, shared with
# the calendar tools) does the same bookkeeping in O(queued x connections) per event: with Nango hanging,
# hundreds of queued lookups stalled the event loop for 100 ms at a time and calls overshot the deadline.
# 20 at Nango's usual 100-300 ms is well above any plan's rate limit (2,000 a minute at most).
MAX_CONCURRENT_REQUESTS = 20
# An index page that fails like a busy server (429, 5xx, no answer) is tried this often before the pass
# gives up; 5xx and timeouts pause 1, 2, 4, 8 s in between, a 429 waits exactly its Retry-After.
PAGE_ATTEMPTS = 5
PAGE_RETRY_PAUSE = 1.0


class RequestGate:
    """The one bound on outbound requests: at most `limit` in flight, each (its wait for a turn included)
    within `total_timeout` seconds. Shared by Nango lookups and the calendar tools' Google requests (which
    also go through Nango), so neither can starve the other of connections or flood Nango."""

    def __init__(self, total_timeout: float, limit: int = MAX_CONCURRENT_REQUESTS) -> None:
        self.total_timeout = total_timeout
        self._slots = asyncio.Semaphore(limit)

    @classmethod
    def for_settings(cls, settings: NangoSettings) -> RequestGate:
        return cls(settings.connect_timeout + TOTAL_TIMEOUT_READS * settings.read_timeout)

    @contextlib.asynccontextmanager
    async def turn(self, budget: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for a request; TimeoutError past `budget` (default and at most `total_timeout`)."""
        limit = self.total_timeout if budget is None else max(0.0, min(budget, self.total_timeout))
        async with asyncio.timeout(limit), self._slots:
            yield


@dataclass(frozen=True, slots=True)  # slots: the index holds one per connection of the integration
class Connection:
    """One Nango connection, reduced to what routing a call needs."""

    connection_id: str
    user_id: str | None
    created: str
    healthy: bool
    route: TagRoute | None = None  # the Vapi line its tags claim (tag routing only)
    # Nango's provider_config_key and provider name: fixed for a connection's life, not part of its identity.
    integration: str = field(default="", compare=False)
    provider: str = field(default="", compare=False)


class NangoError(Exception):
    """A Nango request failed. `code` is Nango's `error.code` or one of ours (timeout, invalid_response, ...);
    the message never carries the response body or the key."""

    def __init__(self, operation: str, status: int | None, code: str, retry_after: float | None = None) -> None:
        super().__init__(operation, status, code, retry_after)
        self.operation = operation
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"nango {self.operation} failed: {self.code} ({status})"


def parse_connection(raw: object, user_tag: str, tag_routing: TagRouting | None = None) -> Connection | None:
    """An `ApiPublicConnection` (or the full variant) -> Connection; None when it has no usable id."""
    if not isinstance(raw, dict):
        return None
    connection_id = raw.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id:
        return None
    created = raw.get("created")
    integration, provider = raw.get("provider_config_key"), raw.get("provider")
    return Connection(
        connection_id=connection_id,
        user_id=owner_of(raw, user_tag),
        created=created if isinstance(created, str) else "",
        healthy=not raw.get("errors"),
        route=read_tag_route(raw.get("tags"), tag_routing) if tag_routing is not None else None,
        # Interned: an index holds one per connection, and they are a handful of distinct values.
        integration=sys.intern(integration) if isinstance(integration, str) else "",
        provider=sys.intern(provider) if isinstance(provider, str) else "",
    )


def owner_of(
    raw: Mapping[str, object], user_tag: str, *, end_user_key: str = "end_user", id_key: str = "id"
) -> str | None:
    """The user a connection (or a webhook about one) belongs to: `tags[user_tag]`, else the deprecated
    end-user record (`end_user.id` in the API, `endUser.endUserId` in webhooks)."""
    # Tags replace the deprecated end_user record; tag-only connections have no end_user at all.
    tags = raw.get("tags")
    if isinstance(tags, dict) and isinstance(value := tags.get(user_tag), str) and value:
        return value
    end_user = raw.get(end_user_key)
    if isinstance(end_user, dict) and isinstance(value := end_user.get(id_key), str) and value:
        return value
    return None


def created_at(created: str) -> float:
    """Epoch seconds of a connection's `created`; -inf when it cannot be read."""
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        return -math.inf
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def rank_connection(conn: Connection) -> tuple[bool, float, str]:
    """Sort key: healthy before unhealthy, then newest, then connection id so ties stay deterministic."""
    return (conn.healthy, created_at(conn.created), conn.connection_id)


def pick_connection(conns: Iterable[Connection]) -> Connection | None:
    """The newest healthy connection, or None when there is none."""
    return max((c for c in conns if c.healthy), key=rank_connection, default=None)


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return "rate_limited" if response.status_code == 429 else f"http_{response.status_code}"


def _connection_list(body: object) -> list[object]:
    connections = body.get("connections") if isinstance(body, dict) else None
    if not isinstance(connections, list):
        raise ValueError("no connections list")
    return connections


class NangoClient:
    """Nango's API on the app's shared `httpx.AsyncClient`, with the rate limit state of this process."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: NangoSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        gate: RequestGate | None = None,
    ) -> None:
        if not settings.secret_key:
            raise ValueError("NangoSettings.secret_key is required for a NangoClient")
        self._http = http
        self._key = settings.secret_key
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._base_url = settings.base_url.rstrip("/")
        self._timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        self.gate = gate if gate is not None else RequestGate.for_settings(settings)
        self.rate_limit = RateLimit()
        # Set by proxy.shared.cluster when replicas share Nango's budget through Redis.
        self.shared_budget: SharedBudget | None = None

    def __repr__(self) -> str:
        return f"NangoClient(base_url={self._base_url!r}, integration_id={self.settings.integration_id!r})"

    def parse(self, raw: object) -> Connection | None:
        """One `ApiPublicConnection` as this client's settings read it (user tag, routing tags)."""
        return parse_connection(raw, self.settings.user_tag, self.settings.tag_routing)

    def scope(self) -> dict[str, str]:
        """The listing filter: `integrationId` with one integration; several are listed without it (one request
        finds a user in any of them) and the answers kept to the configured ones (`ours`)."""
        ids = self.settings.integration_ids()
        return {"integrationId": ids[0]} if len(ids) == 1 else {}

    def ours(self, conns: list[Connection]) -> list[Connection]:
        ids = self.settings.integration_ids()
        return conns if len(ids) == 1 else [conn for conn in conns if conn.integration in ids]

    def _parse_all(self, body: object) -> list[Connection]:
        parsed = [self.parse(raw) for raw in _connection_list(body)]
        if any(conn is None for conn in parsed):
            raise ValueError("connection without an id")
        return self.ours([conn for conn in parsed if conn is not None])

    async def find_user_connections(self, user_id: str) -> list[Connection]:
        """The user's connections for the integrations (tag filter, then the legacy endUserId filter if enabled)."""
        params = {**self.scope(), f"tags[{self.settings.user_tag}]": user_id}
        conns = await self._find("find_connections", params, user_id)
        if not conns and self.settings.legacy_end_user_id_lookup:
            legacy = {**self.scope(), "endUserId": user_id}
            conns = await self._find("find_connections_legacy", legacy, user_id)
        return conns

    async def _find(self, operation: str, params: dict[str, str], user_id: str) -> list[Connection]:
        conns = await self.request(operation, "GET", "/connections", self._parse_all, params=params)
        # Never route a call to someone else's calendar, even if a server ignored the filter.
        mine = [conn for conn in conns if conn.user_id == user_id]
        if len(mine) != len(conns):
            logger.warning(
                "nango %s returned %d connections of other users; ignored", operation, len(conns) - len(mine)
            )
        return mine

    async def find_connection(self, connection_id: str) -> Connection | None:
        """Nango's current record of one connection of the integration; None when it does not exist (deleted).
        `GET /connections?connectionId=` answers with the list shape, tags and `errors` included."""
        params = {**self.scope(), "connectionId": connection_id}
        conns = await self.request("find_connection", "GET", "/connections", self._parse_all, params=params)
        return next((conn for conn in conns if conn.connection_id == connection_id), None)

    async def find_line_connections(self, tag: str, value: str) -> list[Connection]:
        """Connections whose routing tag `tag` is exactly `value` (a number is sent `%2B`-encoded by httpx,
        which Nango's `qs` parser needs: a raw `+` would read as a space)."""
        params = {**self.scope(), f"tags[{tag}]": value}
        conns = await self.request("find_line", "GET", "/connections", self._parse_all, params=params)
        # Exact match only, whatever the server did with the filter.
        return [conn for conn in conns if conn.route is not None and value in {v for _, v in conn.route.claims()}]

    async def list_connections_pages(self) -> AsyncIterator[list[Connection]]:
        """Every connection of the integration, a page at a time (newest first), yielding to live lookups.

        A page that fails the way a busy server does (429, 5xx, no answer) is asked again, after Retry-After
        (`0` included) or a growing pause, up to PAGE_ATTEMPTS times; the pages already fetched are kept.
        Nango pages by offset: a connection deleted during the pass can shift another one past us. That user
        is then missing from this index and found by a per-user lookup instead.
        """
        size = self.settings.index_page_size
        for page in range(MAX_PAGES):
            params = {**self.scope(), "limit": str(size), "page": str(page)}
            raw = await self._page(page, params)
            conns = [c for c in (self.parse(item) for item in raw) if c is not None]
            if len(conns) != len(raw):
                logger.warning(
                    "nango list_connections page %d: skipped %d malformed entries", page, len(raw) - len(conns)
                )
            yield self.ours(conns)
            if len(raw) < size:
                return
        logger.warning("nango list_connections stopped after %d pages", MAX_PAGES)

    async def _page(self, page: int, params: Mapping[str, str]) -> list[object]:
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            try:
                return await self.request(
                    "list_connections", "GET", "/connections", _connection_list, params=params, background=True
                )
            except NangoError as exc:
                transient = exc.status is None or exc.status == 429 or exc.status >= 500
                if not transient or attempt == PAGE_ATTEMPTS:
                    raise
                # A 429 waits out Retry-After in `_wait_for_budget` (the next attempt); others back off.
                pause = 0.0 if exc.status == 429 else min(PAGE_RETRY_PAUSE * 2 ** (attempt - 1), 30.0)
                logger.info("nango list_connections page %d failed (%s); attempt %d again", page, exc.code, attempt + 1)
                if pause:
                    await self._sleep(pause)
        raise AssertionError("unreachable")

    async def get_connection(self, connection_id: str) -> Connection:
        """One connection by id (404 `not_found` when it was deleted)."""

        def parse(body: object) -> Connection:
            conn = self.parse(body)
            if conn is None:
                raise ValueError("not a connection")
            return conn

        path = f"/connections/{quote(connection_id, safe='')}"
        return await self.request(
            "get_connection", "GET", path, parse, params={"provider_config_key": self.settings.integration_id}
        )

    async def _wait_for_budget(self) -> None:
        while (delay := self.rate_limit.background_delay(self._clock())) > 0:
            logger.info("nango rate limit: background work waits %.1fs", delay)
            await self._sleep(delay)
        while self.shared_budget is not None and (delay := await self.shared_budget.wait_for(background=True)) > 0:
            logger.info("nango rate limit (shared): background work waits %.1fs", delay)
            await self._sleep(delay)

    async def request(
        self,
        operation: str,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        params: Mapping[str, str] | None = None,
        json: object = None,
        background: bool = False,
    ) -> T:
        """One Nango request: `parse` turns the JSON body into the answer (a ValueError means the body is not
        what Nango documents). Live requests fail fast while rate limited; `background` ones wait their turn."""
        if background:
            await self._wait_for_budget()
        elif (wait := self.rate_limit.blocked_for(self._clock())) > 0:
            # Fail fast: the caller serves stale data now rather than a fresh answer too late.
            self._count(operation, "skipped")
            raise NangoError(operation, None, "rate_limited", retry_after=wait)
        elif self.shared_budget is not None and (wait := await self.shared_budget.wait_for(background=False)) > 0:
            self._count(operation, "skipped")
            raise NangoError(operation, None, "rate_limited", retry_after=wait)
        try:
            async with self.gate.turn():
                response = await self._http.request(
                    method,
                    self._base_url + path,
                    params=params,
                    json=json,
                    headers={"Authorization": f"Bearer {self._key}"},
                    timeout=self._timeout,
                )
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise self._failed(operation, None, "timeout", "timeout") from exc
        except httpx.HTTPError as exc:
            raise self._failed(operation, None, "network_error", "network_error") from exc
        status = response.status_code
        self.rate_limit.observe(status, response.headers, self._clock(), self._wall_clock())
        if self.shared_budget is not None:
            self.shared_budget.observe(status, response.headers)
        if status == 429:
            retry = self.rate_limit.blocked_for(self._clock())
            raise self._failed(operation, status, _error_code(response), "rate_limited", retry)
        if not response.is_success:
            result = "not_found" if status == 404 else "http_error"
            raise self._failed(operation, status, _error_code(response), result)
        try:
            parsed = parse(response.json())
        except ValueError as exc:
            raise self._failed(operation, status, "invalid_response", "invalid_response") from exc
        self._count(operation, "ok")
        return parsed

    def _failed(
        self, operation: str, status: int | None, code: str, result: str, retry_after: float | None = None
    ) -> NangoError:
        self._count(operation, result)
        error = NangoError(operation, status, code, retry_after)
        logger.warning("%s", error)
        return error

    def _count(self, operation: str, result: str) -> None:
        self._metrics.nango_requests.labels(operation=operation, result=result).inc()
