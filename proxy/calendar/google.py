"""Google Calendar through Nango's proxy: the proxy holds no OAuth token, Nango injects and refreshes it.

Every call is `{METHOD} {nango}/proxy/calendar/v3/...` with `Connection-Id`, `Provider-Config-Key` and
the Nango secret key. Failures, Nango's own or Google's passed through, become one `CalendarError`
whose `kind` says what the caller can do about it. `GoogleCalendar` implements the provider interface
(`proxy.calendar.provider`) over Google's own calls, which it also offers with Google's JSON.

Google specifics the interface hides: the idempotency key is the event id (Google accepts a client-chosen
base32hex id and answers 409 for one used before), marks are private extended properties (found with
`privateExtendedProperty`), a deleted event stays readable with status "cancelled".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

from proxy.calendar.nangoproxy import NangoProxy, classify_nango, status_error
from proxy.calendar.provider import CalendarError, Created, ErrorKind, Event, NewEvent
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret

__all__ = ["CalendarError", "ErrorKind", "GoogleCalendar", "Inserted", "blocks_time", "classify", "to_event"]

logger = logging.getLogger(__name__)

Json = dict[str, Any]

# events.list: Google's default page size, and how many events one listing reads at most (documented in
# docs/booking.md): a caller's own upcoming appointments, or the events around one slot.
LIST_PAGE_SIZE = 250
MAX_LISTED_EVENTS = 1000
# Google answers 403 both for "no access" and for quota; only the quota reasons go away by waiting.
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})


@dataclass(frozen=True)
class Inserted:
    """The event as stored; `created` is False when a retry found the event already there."""

    event: Json
    created: bool


class GoogleCalendar:
    """The five-and-a-bit Google Calendar calls the tools need, per Nango connection."""

    product = "Google Calendar"

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        nango_base_url: str,
        secret_key: Secret,
        integration_id: str,
        timeout: float,
        metrics: Metrics | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        self._nango = NangoProxy(
            http,
            nango_base_url=nango_base_url,
            prefix="/calendar/v3",
            secret_key=secret_key,
            integration_id=integration_id,
            timeout=timeout,
            classify=classify,
            metrics=metrics,
            gate=gate,
        )
        self._secret = secret_key

    def __repr__(self) -> str:
        return f"GoogleCalendar(base={self._nango.base!r}, integration_id={self._nango.integration!r})"

    async def free_busy(
        self, connection_id: str, calendar_id: str, *, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        """Busy intervals (UTC) of one calendar between two instants (Google's freeBusy.query)."""
        body = {"timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "items": [{"id": calendar_id}]}
        data = await self._call("freebusy", "POST", "/freeBusy", connection_id, json=body)
        calendars = data.get("calendars")
        calendars = calendars if isinstance(calendars, dict) else {}
        # Google keys the answer by the id asked for; tolerate a server that keys it by the resolved email.
        entry = calendars.get(calendar_id) or (next(iter(calendars.values())) if len(calendars) == 1 else None)
        if not isinstance(entry, dict):
            raise CalendarError("unavailable", "freeBusy answer has no entry for the calendar")
        errors = entry.get("errors") or []
        if errors:
            reasons = {str(e.get("reason")) for e in errors if isinstance(e, dict)}
            kind: ErrorKind = "not_found" if "notFound" in reasons else "unavailable"
            raise CalendarError(kind, f"freeBusy could not read the calendar: {', '.join(sorted(reasons))}")
        busy = [b for b in entry.get("busy") or [] if isinstance(b, dict)]
        return [(_parse_instant(b.get("start")), _parse_instant(b.get("end"))) for b in busy]

    async def insert_event(
        self,
        connection_id: str,
        calendar_id: str,
        event: Mapping[str, Any],
        *,
        event_id: str,
        send_updates: str = "none",
        budget: float | None = None,
    ) -> Inserted:
        """Create the event under a caller-chosen id, so a retried request finds it instead of doubling it.

        Google answers 409 for an id already used, also by a deleted event (deletion only marks it
        cancelled); a cancelled one is restored with the new details.
        """
        body = {**event, "id": event_id}
        path = f"/calendars/{_seg(calendar_id)}/events"
        try:
            params = [("sendUpdates", send_updates)]
            created = await self._call("insert", "POST", path, connection_id, json=body, params=params, budget=budget)
            return Inserted(created, created=True)
        except CalendarError as exc:
            if exc.kind != "conflict":
                raise
        existing = await self.get_event(connection_id, calendar_id, event_id)
        if existing.get("status") != "cancelled":
            return Inserted(existing, created=False)
        # A patch keeps what it leaves out: the cancelled booking's attendee would stay (and be notified).
        changes = {key: value for key, value in body.items() if key != "id"} | {"status": "confirmed"}
        changes.setdefault("attendees", [])
        restored = await self.patch_event(connection_id, calendar_id, event_id, changes, send_updates=send_updates)
        return Inserted(restored, created=True)

    async def get_event(
        self, connection_id: str, calendar_id: str, event_id: str, *, budget: float | None = None
    ) -> Json:
        """One event (also a cancelled one: Google keeps them with status 'cancelled')."""
        return await self._call("get", "GET", _event_path(calendar_id, event_id), connection_id, budget=budget)

    async def list_events(
        self,
        connection_id: str,
        calendar_id: str,
        *,
        start: datetime,
        end: datetime,
        private: Mapping[str, str] | None = None,
        page_size: int = LIST_PAGE_SIZE,
        max_events: int = MAX_LISTED_EVENTS,
        budget: float | None = None,
        show_deleted: bool = False,
    ) -> list[Json]:
        """Single events overlapping [start, end) whose private extended properties match all of `private`,
        in start order, paging with `pageToken` up to `max_events` (the rest is left out and logged)."""
        params: list[tuple[str, str]] = [
            ("timeMin", _rfc3339(start)),
            ("timeMax", _rfc3339(end)),
            ("singleEvents", "true"),
            ("orderBy", "startTime"),
            ("maxResults", str(min(page_size, max_events))),
            *(("privateExtendedProperty", f"{key}={value}") for key, value in (private or {}).items()),
            *([("showDeleted", "true")] if show_deleted else []),
        ]
        path = f"/calendars/{_seg(calendar_id)}/events"
        events: list[Json] = []
        token: str | None = None
        while True:
            page = params + ([("pageToken", token)] if token else [])
            data = await self._call("list", "GET", path, connection_id, params=page, budget=budget)
            events += [item for item in data.get("items") or [] if isinstance(item, dict)]
            next_token = data.get("nextPageToken")
            if not isinstance(next_token, str) or not next_token:
                return events
            if len(events) >= max_events:
                logger.warning("calendar list stopped at %d events (the bound); later ones are left out", max_events)
                return events[:max_events]
            token = next_token

    async def delete_event(
        self, connection_id: str, calendar_id: str, event_id: str, *, send_updates: str = "none"
    ) -> bool:
        """Delete the event; False when it was already deleted (410), so a retried cancel still succeeds."""
        try:
            await self._call(
                "delete",
                "DELETE",
                _event_path(calendar_id, event_id),
                connection_id,
                params=[("sendUpdates", send_updates)],
            )
        except CalendarError as exc:
            if exc.status == 410:
                return False
            raise
        return True

    async def patch_event(
        self,
        connection_id: str,
        calendar_id: str,
        event_id: str,
        changes: Mapping[str, Any],
        *,
        send_updates: str = "none",
    ) -> Json:
        """Change some fields of an event; the answer is the whole updated event."""
        path = _event_path(calendar_id, event_id)
        return await self._call(
            "patch", "PATCH", path, connection_id, json=dict(changes), params=[("sendUpdates", send_updates)]
        )

    # --- the provider interface (proxy.calendar.provider) ------------------------------------------------

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
        found = await self.list_events(
            connection_id,
            calendar_id,
            start=start,
            end=end,
            private=marks,
            budget=budget,
            show_deleted=include_cancelled,
        )
        return [to_event(item) for item in found]

    async def create(
        self, connection_id: str, calendar_id: str, event: NewEvent, *, key: str, notify: bool, budget: float | None
    ) -> Created:
        body: Json = {
            "summary": event.summary,
            "description": event.description,
            "start": _google_time(event.start, event.timezone),
            "end": _google_time(event.end, event.timezone),
            "extendedProperties": {"private": dict(event.marks)},
        }
        if event.guest is not None:
            body["attendees"] = [{"email": event.guest.email, "displayName": event.guest.name}]
        inserted = await self.insert_event(
            connection_id, calendar_id, body, event_id=key, send_updates=_updates(notify), budget=budget
        )
        return Created(to_event(inserted.event), inserted.created)

    async def read(self, connection_id: str, calendar_id: str, key: str, *, budget: float | None) -> Event | None:
        try:
            return to_event(await self.get_event(connection_id, calendar_id, key, budget=budget))
        except CalendarError as exc:
            if exc.kind == "not_found":
                return None
            raise

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
        changes = {"start": _google_time(start, timezone), "end": _google_time(end, timezone)}
        patched = await self.patch_event(connection_id, calendar_id, event_id, changes, send_updates=_updates(notify))
        return to_event(patched)

    async def cancel(self, connection_id: str, calendar_id: str, event_id: str, *, notify: bool) -> bool:
        return await self.delete_event(connection_id, calendar_id, event_id, send_updates=_updates(notify))

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        connection_id: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Sequence[tuple[str, str]] = (),
        budget: float | None = None,
    ) -> Json:
        return await self._nango.call(operation, method, path, connection_id, json=json, params=params, budget=budget)


def to_event(item: Mapping[str, Any]) -> Event:
    """A Google event as the booking rules see it (`proxy.calendar.provider.Event`)."""
    props = item.get("extendedProperties")
    private = props.get("private") if isinstance(props, dict) else None
    marks = {str(k): str(v) for k, v in private.items()} if isinstance(private, dict) else {}
    start, end = _event_time(item.get("start")), _event_time(item.get("end"))
    return Event(
        id=str(item.get("id", "")),
        start=start if end is not None else None,
        end=end if start is not None else None,
        cancelled=item.get("status") == "cancelled",
        busy=blocks_time(item),
        created=_stamp(item.get("created")),
        marks=marks,
        guests=bool(item.get("attendees")),
    )


def blocks_time(item: Mapping[str, Any]) -> bool:
    """Busy as Google's freeBusy counts it: not when free ("transparent"), a working location, or an invitation
    the calendar's owner (the attendee with `self`) declined; tentative and unanswered ones are busy."""
    if item.get("transparency") == "transparent" or item.get("eventType") == "workingLocation":
        return False
    listed = item.get("attendees")
    owner = [a for a in listed if isinstance(a, dict) and a.get("self") is True] if isinstance(listed, list) else []
    return not any(a.get("responseStatus") == "declined" for a in owner)


def classify(status: int, body: object) -> CalendarError:
    """Map an error answer to a CalendarError. Nango's own errors carry a string `error.code`, Google's
    (passed through verbatim by the proxy) an integer one."""
    nango = classify_nango(status, body, GoogleCalendar.product)
    if nango is not None:
        return nango
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or "")[:200]
    reasons = {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}
    detail = f"Google answered {status}" + (f" ({', '.join(sorted(reasons))})" if reasons else "") + f": {message}"
    if (status == 403 and reasons & _RATE_LIMIT_REASONS) or status == 429 or status >= 500:
        return CalendarError("unavailable", detail, status=status)
    return status_error(status, detail, GoogleCalendar.product)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _event_path(calendar_id: str, event_id: str) -> str:
    return f"/calendars/{_seg(calendar_id)}/events/{_seg(event_id)}"


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _google_time(moment: datetime, zone: ZoneInfo) -> dict[str, str]:
    """Sent in the user's local offset with the zone's name: what Google shows and keeps across DST."""
    return {"dateTime": moment.astimezone(zone).isoformat(timespec="seconds"), "timeZone": zone.key}


def _updates(notify: bool) -> str:
    return "all" if notify else "none"


def _event_time(value: object) -> datetime | None:
    """A timed event's start or end in UTC; None for an all-day one (`date` only) or a malformed one."""
    text = value.get("dateTime") if isinstance(value, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _stamp(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)).astimezone(UTC)
    except ValueError:
        return None


def _parse_instant(text: object) -> datetime:
    if not isinstance(text, str):
        raise CalendarError("unavailable", "freeBusy answer has a malformed busy interval")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CalendarError("unavailable", "freeBusy answer has a malformed busy interval") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
