"""Microsoft 365 (Outlook) calendars: Microsoft Graph v1.0 through Nango's proxy, behind the provider interface.

Graph specifics the interface hides (https://learn.microsoft.com/en-us/graph/api/resources/event):
- busy time is read from `calendarView`, which expands recurring series into occurrences: an event blocks its
  time unless `showAs` is free or workingElsewhere, it `isCancelled`, or the owner declined it
  (`responseStatus.response`); all-day events block their local days;
- times: `Prefer: outlook.timezone` (sent as `Nango-Proxy-Prefer`, the only way a header reaches Graph through
  Nango) asks for answers in the user's zone; every `dateTimeTimeZone` read is converted with the zone it names
  (Windows or IANA), and writes use the Windows name (`proxy.calendar.windowszones`);
- idempotent create: `transactionId` makes Graph drop a repeated POST, and the booking's key is also stored in a
  single-value extended property, so `read` finds the event by key with `$filter`. The proxy's marks (call id,
  booking reference, caller number) are such properties too, in the proxy's own property set;
- a deleted event is gone (no "cancelled" copy as on Google);
- 429 and 503/504 are retried after `Retry-After` when the wait fits the operation's budget; Nango is asked
  not to retry itself (`Retries: 0`), since its waits would not know the tool call's deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import anyio
import httpx

from proxy.calendar import graph
from proxy.calendar.nangoproxy import NangoProxy, json_of
from proxy.calendar.provider import CalendarError, Created, Event, Interval, NewEvent
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret

__all__ = ["MicrosoftCalendar"]

logger = logging.getLogger(__name__)

Json = dict[str, Any]
# calendarView and events pages: Graph's page size is $top; the whole listing is bounded like Google's.
PAGE_SIZE = 250
MAX_LISTED_EVENTS = 1000
# Throttling: at most this many tries of one request, each wait at most this long and within the budget.
MAX_TRIES = 3
MAX_RETRY_WAIT = 2.0
_RETRIED = frozenset({429, 503, 504})
_UTC = ZoneInfo("UTC")
_VIEW_FIELDS = "id,start,end,isAllDay,isCancelled,showAs,responseStatus,createdDateTime,attendees"


class MicrosoftCalendar:
    """The provider interface over Microsoft Graph, for the calendars of one Nango integration."""

    product = graph.PRODUCT

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        nango_base_url: str,
        secret_key: Secret,
        integration_id: str,
        timeout: float,
        timezone: ZoneInfo = _UTC,
        metrics: Metrics | None = None,
        gate: RequestGate | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nango = NangoProxy(
            http,
            nango_base_url=nango_base_url,
            prefix="/v1.0",
            secret_key=secret_key,
            integration_id=integration_id,
            timeout=timeout,
            classify=graph.classify,
            metrics=metrics,
            gate=gate,
            label="graph",
        )
        self._timeout = timeout
        self._zone = timezone
        self._sleep, self._clock = sleep, clock
        # Answers in the user's zone: all-day events then span the user's local days.
        self._prefer = {"Nango-Proxy-Prefer": f'outlook.timezone="{graph.windows_name(timezone)}"', "Retries": "0"}

    def __repr__(self) -> str:
        return f"MicrosoftCalendar(base={self._nango.base!r}, integration_id={self._nango.integration!r})"

    async def free_busy(
        self, connection_id: str, calendar_id: str, *, start: datetime, end: datetime
    ) -> list[Interval]:
        items = await self._view(connection_id, calendar_id, start, end, expand=False, budget=None)
        busy: list[Interval] = []
        for item in items:
            span = graph.busy_span(item)
            if span is not None and span[0] < end and span[1] > start:
                busy.append(span)
        return sorted(busy)

    async def events(
        self,
        connection_id: str,
        calendar_id: str,
        *,
        start: datetime,
        end: datetime,
        marks: Mapping[str, str] | None = None,
        include_cancelled: bool = False,
        budget: float | None = None,
    ) -> list[Event]:
        if marks:
            # Marked events are the proxy's own single bookings: found by property on `events`, then by time.
            name, value = next(iter(marks.items()))
            items = await self._marked(connection_id, calendar_id, name, value, budget=budget)
        else:
            items = await self._view(connection_id, calendar_id, start, end, expand=True, budget=budget)
        found = [graph.to_event(item) for item in items]
        wanted = [
            e
            for e in found
            if (include_cancelled or not e.cancelled)
            and all(e.marks.get(k) == v for k, v in (marks or {}).items())
            and (not marks or (e.start is not None and e.end is not None and e.start < end and e.end > start))
        ]
        return sorted(wanted, key=lambda e: (e.start or datetime.min.replace(tzinfo=UTC), e.id))

    async def create(
        self, connection_id: str, calendar_id: str, event: NewEvent, *, key: str, notify: bool, budget: float | None
    ) -> Created:
        body = graph.event_body(event, key)
        data = await self._call(
            "insert", "POST", f"{_calendar(calendar_id)}/events", connection_id, json=body, budget=budget
        )
        made = graph.to_event(data)
        # A create answer carries no extended properties; a repeated transactionId answers with the first event,
        # whose booking reference the slot's re-read reads back (proxy.calendar.claim).
        return Created(graph.with_marks(made, {**event.marks, graph.KEY_MARK: key}), created=True)

    async def read(self, connection_id: str, calendar_id: str, key: str, *, budget: float | None) -> Event | None:
        items = await self._marked(connection_id, calendar_id, graph.KEY_MARK, key, budget=budget)
        return graph.to_event(items[0]) if items else None

    async def move(
        self,
        connection_id: str,
        calendar_id: str,
        event_id: str,
        *,
        start: datetime,
        end: datetime,
        timezone: ZoneInfo,
        notify: bool,
    ) -> Event:
        changes = {"start": graph.graph_time(start, timezone), "end": graph.graph_time(end, timezone)}
        data = await self._call("patch", "PATCH", f"/me/events/{_seg(event_id)}", connection_id, json=changes)
        return graph.to_event(data)

    async def cancel(self, connection_id: str, calendar_id: str, event_id: str, *, notify: bool) -> bool:
        # Deleting a meeting on the organizer's calendar sends its attendees the cancellation itself.
        try:
            await self._call("delete", "DELETE", f"/me/events/{_seg(event_id)}", connection_id)
        except CalendarError as exc:
            if exc.kind == "not_found":
                return False
            raise
        return True

    async def _view(
        self,
        connection_id: str,
        calendar_id: str,
        start: datetime,
        end: datetime,
        *,
        expand: bool,
        budget: float | None,
    ) -> list[Json]:
        params = [
            ("startDateTime", graph.utc_text(start)),
            ("endDateTime", graph.utc_text(end)),
            ("$select", _VIEW_FIELDS),
            ("$orderby", "start/dateTime"),
            ("$top", str(PAGE_SIZE)),
            *([("$expand", graph.MARKS_EXPAND)] if expand else []),
        ]
        path = f"{_calendar(calendar_id)}/calendarView"
        return await self._pages("list" if expand else "freebusy", path, params, connection_id, budget)

    async def _marked(
        self, connection_id: str, calendar_id: str, name: str, value: str, *, budget: float | None
    ) -> list[Json]:
        params = [
            ("$filter", graph.mark_filter(name, value)),
            ("$select", _VIEW_FIELDS),
            ("$expand", graph.MARKS_EXPAND),
            ("$top", str(PAGE_SIZE)),
        ]
        return await self._pages("list", f"{_calendar(calendar_id)}/events", params, connection_id, budget)

    async def _pages(
        self, operation: str, path: str, params: list[tuple[str, str]], connection_id: str, budget: float | None
    ) -> list[Json]:
        items: list[Json] = []
        while True:
            data = await self._call(operation, "GET", path, connection_id, params=params, budget=budget)
            items += [item for item in data.get("value") or [] if isinstance(item, dict)]
            following = graph.next_page(data.get("@odata.nextLink"))
            if following is None:
                return items
            if len(items) >= MAX_LISTED_EVENTS:
                logger.warning("calendar list stopped at %d events (the bound)", MAX_LISTED_EVENTS)
                return items[:MAX_LISTED_EVENTS]
            path, params = following

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        connection_id: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: list[tuple[str, str]] | None = None,
        budget: float | None = None,
    ) -> Json:
        deadline = self._clock() + (budget if budget is not None else self._timeout * 2)
        for attempt in range(1, MAX_TRIES + 1):
            left = deadline - self._clock()
            response = await self._nango.send(
                operation,
                method,
                path,
                connection_id,
                json=json,
                params=params or (),
                headers=self._prefer,
                budget=left,
            )
            if response.is_success:
                self._nango.count(operation, "ok")
                body = json_of(response)
                return body if isinstance(body, dict) else {}
            wait = graph.retry_after(response.headers.get("retry-after"))
            if response.status_code not in _RETRIED or attempt == MAX_TRIES or wait is None:
                break
            if wait > MAX_RETRY_WAIT or self._clock() + wait >= deadline:
                break
            self._nango.count(operation, "throttled")
            await self._sleep(wait)
        raise self._nango.failure(operation, response.status_code, json_of(response))


def _calendar(calendar_id: str) -> str:
    """The user's default calendar for "primary" (the config's default, Google's name for it), else that one."""
    return "/me/calendar" if calendar_id == "primary" else f"/me/calendars/{_seg(calendar_id)}"


def _seg(value: str) -> str:
    return quote(value, safe="")
