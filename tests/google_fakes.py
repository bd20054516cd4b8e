"""Google Calendar v3 behind Nango's proxy for tests: JSON factories, a client, and `FakeGoogle`, a calendar
that validates requests as Google does.

Google's rules the fake enforces (https://developers.google.com/calendar/api/v3/reference/events):
- every query parameter and body field is one Google's Calendar v3 discovery document names for the method
  (`tests.google_discovery`), else 400;
- times are RFC 3339 with an offset (`timeMin`, `timeMax`, and `dateTime` unless `timeZone` names the zone),
  an event's end after its start, else 400;
- a client-chosen event id is 5-1024 characters of base32hex (a-v, 0-9), else 400; an id used before, also by
  a deleted event, gets 409 `duplicate`;
- deleting keeps the event with status `cancelled` (get still returns it, list hides it), a second delete is
  410 `deleted`; patching a cancelled event with status `confirmed` restores it;
- events.list pages with `maxResults` (default 250, at most 2500) and `pageToken`/`nextPageToken`, filters by
  `privateExtendedProperty`, `timeMin` (< end) and `timeMax` (> start), `orderBy=startTime` needs
  `singleEvents=true`;
- every event carries `created`/`updated` in UTC with milliseconds, `created` strictly increasing here;
- freeBusy (https://developers.google.com/calendar/api/v3/reference/freebusy/query) counts an event busy unless
  it is cancelled, transparent, a working location, or an invitation its calendar's owner (the attendee with
  `self: true`) declined; tentative and unanswered (`needsAction`) invitations are busy. A range longer than
  `FREEBUSY_MAX_DAYS` is refused with `timeRangeTooLong` (Google documents no bound; it refuses ranges past about
  90 days: https://github.com/calcom/cal.com/issues/11704);
- times come back in the event's own `timeZone`, else in the calendar's (`calendar_zone`, which need not be the
  user's), and all-day events (`date`) span the calendar zone's midnights;
- Nango's proxy needs `Connection-Id` and `Provider-Config-Key` headers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import httpx
import respx

from proxy.calendar.google import GoogleCalendar
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret
from tests.google_discovery import request_problems
from tests.helpers import longest_chain
from tests.nango_fakes import BASE_URL, INTEGRATION, SECRET_KEY


def free_busy_body(*busy: tuple[str, str], calendar_id: str = "primary") -> dict[str, Any]:
    return {
        "kind": "calendar#freeBusy",
        "timeMin": "2026-03-02T14:00:00.000Z",
        "timeMax": "2026-03-03T14:00:00.000Z",
        "calendars": {calendar_id: {"busy": [{"start": s, "end": e} for s, e in busy]}},
    }


def google_event(
    event_id: str,
    start: str = "2026-03-10T14:30:00-04:00",
    end: str = "2026-03-10T15:00:00-04:00",
    *,
    status: str = "confirmed",
    private: dict[str, str] | None = None,
    attendees: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": '"3181161784712000"',
        "id": event_id,
        "status": status,
        "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
        "created": "2026-03-02T15:00:00.000Z",
        "updated": "2026-03-02T15:00:00.000Z",
        "summary": "Appointment with Sam Caller",
        "creator": {"email": "jane@example.com", "self": True},
        "organizer": {"email": "jane@example.com", "self": True},
        "start": {"dateTime": start, "timeZone": "America/New_York"},
        "end": {"dateTime": end, "timeZone": "America/New_York"},
        "iCalUID": f"{event_id}@google.com",
        "sequence": 0,
        "reminders": {"useDefault": True},
        "eventType": "default",
    }
    if private is not None:
        event["extendedProperties"] = {"private": private}
    if attendees is not None:
        event["attendees"] = attendees
    return event


OWNER = "jane@example.com"


def invitation(
    event_id: str, start: str, end: str, response: str, *, organizer: str = "boss@example.org"
) -> dict[str, Any]:
    """An event someone else organised, inviting the calendar's owner, who answered `response` (needsAction,
    declined, tentative, accepted: Google's EventAttendee.responseStatus)."""
    event = google_event(
        event_id,
        start,
        end,
        attendees=[
            {"email": organizer, "organizer": True, "responseStatus": "accepted"},
            {"email": OWNER, "self": True, "responseStatus": response},
        ],
    )
    return event | {"summary": "Quarterly review", "organizer": {"email": organizer}, "creator": {"email": organizer}}


def working_location(event_id: str, start: str, end: str) -> dict[str, Any]:
    """A working-location entry ("Working from home"): it never makes time busy."""
    location = {"type": "homeOffice", "homeOffice": {}}
    return google_event(event_id, start, end) | {"eventType": "workingLocation", "workingLocationProperties": location}


def events_list_body(*items: dict[str, Any], zone: str = "America/New_York") -> dict[str, Any]:
    return {
        "kind": "calendar#events",
        "etag": '"p33c9vfnqtm4ng0g"',
        "summary": "jane@example.com",
        "updated": "2026-03-02T15:00:00.000Z",
        "timeZone": zone,
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}],
        "items": list(items),
    }


def google_error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "errors": [{"domain": "global", "reason": reason, "message": message}],
            "code": code,
            "message": message,
        }
    }


def nango_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


DUPLICATE = google_error(409, "duplicate", "The requested identifier already exists.")
TIME_RANGE_TOO_LONG = google_error(400, "timeRangeTooLong", "The requested time range is too long.")
FREEBUSY_MAX_DAYS = 90
DELETED = google_error(410, "deleted", "Resource has been deleted")
NOT_FOUND = google_error(404, "notFound", "Not Found")
INVALID_CREDENTIALS = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError"}],
        "status": "UNAUTHENTICATED",
    }
}
REFRESH_FAILED = nango_error("server_error", "Failed to get connection credentials: 'invalid_grant'")


def make_calendar(
    http: httpx.AsyncClient, metrics: Metrics | None = None, timeout: float = 5.0, gate: RequestGate | None = None
) -> GoogleCalendar:
    return GoogleCalendar(
        http,
        nango_base_url=BASE_URL + "/",
        secret_key=Secret(SECRET_KEY),
        integration_id=INTEGRATION,
        timeout=timeout,
        metrics=metrics,
        gate=gate,
    )


EVENTS_PATH = r"^/proxy/calendar/v3/calendars/(?P<calendar_id>[^/]+)/events"
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?")


def bad_request(message: str) -> httpx.Response:
    return httpx.Response(400, json=google_error(400, "badRequest", message))


class Invalid(Exception):
    """A request Google would refuse with 400."""


def _instant(text: object, name: str, *, zone: object = None) -> datetime:
    if isinstance(text, str) and _RFC3339.fullmatch(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    if isinstance(text, str) and isinstance(zone, str) and _NAIVE.fullmatch(text):
        return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    raise Invalid(f"Invalid value for: {name} ({text!r} is not RFC 3339 with an offset)")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeGoogle:
    """Google Calendar behind Nango's proxy, as respx routes keeping events in memory (see the module doc).

    Several app instances may share one: that is how the replica race is tested. `latency` (seconds, or a
    function returning seconds) delays every answer; an insert stores its event halfway through it, as a
    real server commits before it answers. `fail[op]` makes an operation answer with that response or raise
    that exception (ops: freebusy, insert, insert_after_store, list, get, delete, patch); `stall[op]` holds
    the answer that many seconds after the work is done.
    """

    def __init__(
        self,
        mock: respx.MockRouter,
        *,
        latency: float | Callable[[], float] = 0.0,
        calendar_zone: str = "America/New_York",
    ) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.zone = ZoneInfo(calendar_zone)
        # (operation, sent, answered) per request on the event loop's clock: how many ran one after another.
        self.log: list[tuple[str, float, float]] = []
        self.other_busy: list[tuple[str, str]] = []
        self.fail: dict[str, httpx.Response | Exception] = {}
        self.stall: dict[str, float] = {}
        self.latency = latency
        self.in_flight = self.most_in_flight = 0
        self.clock = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # after `google_event`'s own `created`
        self._ids = itertools.count(1)
        base = BASE_URL.removeprefix("https://")
        self.freebusy = mock.post(f"{BASE_URL}/proxy/calendar/v3/freeBusy").mock(side_effect=self._free_busy)
        self.insert = mock.route(method="POST", host=base, path__regex=EVENTS_PATH + "$").mock(side_effect=self._insert)
        self.list = mock.route(method="GET", host=base, path__regex=EVENTS_PATH + "$").mock(side_effect=self._list)
        one = EVENTS_PATH + r"/(?P<event_id>[^/]+)$"
        self.get = mock.route(method="GET", host=base, path__regex=one).mock(side_effect=self._get)
        self.delete = mock.route(method="DELETE", host=base, path__regex=one).mock(side_effect=self._delete)
        self.patch = mock.route(method="PATCH", host=base, path__regex=one).mock(side_effect=self._patch)

    def add(self, event: dict[str, Any]) -> None:
        self.events[event["id"]] = event

    def live(self) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e["status"] != "cancelled"]

    def in_sequence(self) -> int:
        return longest_chain(self.log)

    def blocking(self) -> list[tuple[datetime, datetime]]:
        """What freeBusy reports busy (see the module doc)."""
        return [self.span(e) for e in self.live() if _blocks(e)]

    def span(self, event: dict[str, Any]) -> tuple[datetime, datetime]:
        return _span(event, self.zone)

    def render(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as Google answers it: times in the event's own zone, else the calendar's."""
        shown = dict(event)
        for key in ("start", "end"):
            value = event.get(key)
            if isinstance(value, dict) and "dateTime" in value:
                moment = _instant(value["dateTime"], key, zone=value.get("timeZone"))
                zone = ZoneInfo(value["timeZone"]) if value.get("timeZone") else self.zone
                shown[key] = value | {"dateTime": moment.astimezone(zone).isoformat(timespec="seconds")}
        return shown

    def overlapping(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Pairs of live events whose times overlap: double bookings."""
        spans = sorted((self.span(e), e["id"]) for e in self.live() if _blocks(e))
        return [
            (self.events[a_id], self.events[b_id])
            for i, ((a_start, a_end), a_id) in enumerate(spans)
            for (b_start, _), b_id in spans[i + 1 :]
            if b_start < a_end
        ]

    def _now(self) -> str:
        # Google stamps with milliseconds; strictly increasing so `created` orders inserts as they committed.
        self.clock += timedelta(milliseconds=1)
        return _stamp(self.clock)

    async def _wait(self, share: float = 1.0) -> None:
        delay = self.latency() if callable(self.latency) else self.latency
        await asyncio.sleep(delay * share)

    async def _answer(self, op: str, work: Callable[[], httpx.Response], request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        sent = asyncio.get_running_loop().time()
        try:
            return await self._serve(op, work, request)
        finally:
            self.in_flight -= 1
            self.log.append((op, sent, asyncio.get_running_loop().time()))

    async def _serve(self, op: str, work: Callable[[], httpx.Response], request: httpx.Request) -> httpx.Response:
        await self._wait(0.5)
        if not request.headers.get("connection-id") or not request.headers.get("provider-config-key"):
            return httpx.Response(400, json=nango_error("missing_connection_id", "Missing Connection-Id header"))
        body = json.loads(request.content) if request.content else None
        problems = request_problems(request.method, request.url.path, request.url.params.multi_items(), body)
        if problems:
            return bad_request("; ".join(problems))
        failure = self.fail.get(op)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            return failure
        try:
            response = work()
        except Invalid as exc:
            return bad_request(str(exc))
        await self._wait(0.5)
        if op in self.stall:
            await asyncio.sleep(self.stall[op])
        return response

    async def _free_busy(self, request: httpx.Request) -> httpx.Response:
        def work() -> httpx.Response:
            body = json.loads(request.content)
            low, high = _instant(body.get("timeMin"), "timeMin"), _instant(body.get("timeMax"), "timeMax")
            if high <= low:
                raise Invalid("The specified time range is empty.")
            if high - low > timedelta(days=FREEBUSY_MAX_DAYS):
                return httpx.Response(400, json=TIME_RANGE_TOO_LONG)
            spans = self.blocking()
            spans += [(_instant(s, "busy"), _instant(e, "busy")) for s, e in self.other_busy]
            busy = [
                {"start": _stamp(max(start, low)), "end": _stamp(min(end, high))}
                for start, end in sorted(spans)
                if start < high and end > low
            ]
            calendars = {item["id"]: {"busy": busy} for item in body["items"]}
            answer = {"kind": "calendar#freeBusy", "timeMin": _stamp(low), "timeMax": _stamp(high)}
            return httpx.Response(200, json=answer | {"calendars": calendars})

        return await self._answer("freebusy", work, request)

    async def _insert(self, request: httpx.Request, calendar_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            body = json.loads(request.content)
            event_id = body.get("id")
            if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
                raise Invalid("Invalid resource id value.")
            event_id = event_id or f"fake{next(self._ids):08d}"
            _check_times(body, self.zone)
            if event_id in self.events:
                return httpx.Response(409, json=DUPLICATE)
            stamp = self._now()
            event = google_event(event_id) | body | {"id": event_id, "status": "confirmed"}
            self.add(event | {"created": stamp, "updated": stamp, "iCalUID": f"{event_id}@google.com"})
            if (after := self.fail.get("insert_after_store")) is not None:
                if isinstance(after, Exception):
                    raise after
                return after
            return httpx.Response(200, json=self.render(self.events[event_id]))

        return await self._answer("insert", work, request)

    async def _get(self, request: httpx.Request, calendar_id: str, event_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            event = self.events.get(unquote(event_id))
            return httpx.Response(200, json=self.render(event)) if event else httpx.Response(404, json=NOT_FOUND)

        return await self._answer("get", work, request)

    async def _delete(self, request: httpx.Request, calendar_id: str, event_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            event = self.events.get(unquote(event_id))
            if event is None:
                return httpx.Response(404, json=NOT_FOUND)
            if event["status"] == "cancelled":
                return httpx.Response(410, json=DELETED)
            event.update(status="cancelled", updated=self._now())
            return httpx.Response(204)

        return await self._answer("delete", work, request)

    async def _patch(self, request: httpx.Request, calendar_id: str, event_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            event = self.events.get(unquote(event_id))
            if event is None:
                return httpx.Response(404, json=NOT_FOUND)
            changes = json.loads(request.content)
            if "id" in changes and changes["id"] != event["id"]:
                raise Invalid("The event id cannot be changed.")
            _check_times(event | changes, self.zone)
            event.update(changes, updated=self._now(), sequence=event.get("sequence", 0) + 1)
            return httpx.Response(200, json=self.render(event))

        return await self._answer("patch", work, request)

    async def _list(self, request: httpx.Request, calendar_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            params = request.url.params
            low = _instant(params["timeMin"], "timeMin") if "timeMin" in params else None
            high = _instant(params["timeMax"], "timeMax") if "timeMax" in params else None
            if params.get("orderBy") == "startTime" and params.get("singleEvents") != "true":
                raise Invalid("The requested ordering is not available for the particular query.")
            size = min(int(params.get("maxResults", "250")), 2500)
            if size < 1:
                raise Invalid("Invalid value for: maxResults")
            wanted = [p.split("=", 1) for p in params.get_list("privateExtendedProperty")]
            deleted = params.get("showDeleted") == "true"
            items = [
                e
                for e in self.events.values()
                if (deleted or e["status"] != "cancelled")
                and all(e.get("extendedProperties", {}).get("private", {}).get(k) == v for k, v in wanted)
                and (low is None or self.span(e)[1] > low)
                and (high is None or self.span(e)[0] < high)
            ]
            items.sort(key=lambda e: (self.span(e)[0], e["id"]))
            token = params.get("pageToken", "page:0")
            if not token.startswith("page:") or not token[5:].isdigit():
                raise Invalid("Invalid page token value.")
            offset = int(token[5:])
            page = items[offset : offset + size]
            body: dict[str, Any] = events_list_body(*map(self.render, page), zone=self.zone.key)
            if offset + size < len(items):
                body["nextPageToken"] = f"page:{offset + size}"
            return httpx.Response(200, json=body)

        return await self._answer("list", work, request)


def _span(event: dict[str, Any], zone: ZoneInfo) -> tuple[datetime, datetime]:
    start, end = event["start"], event["end"]
    if "date" in start and "dateTime" not in start:  # all day: from the calendar zone's midnight to the next
        first, last = (datetime.fromisoformat(str(v["date"])).replace(tzinfo=zone) for v in (start, end))
        return first.astimezone(UTC), last.astimezone(UTC)
    return (
        _instant(start.get("dateTime"), "start.dateTime", zone=start.get("timeZone")),
        _instant(end.get("dateTime"), "end.dateTime", zone=end.get("timeZone")),
    )


def _blocks(event: dict[str, Any]) -> bool:
    if event.get("transparency") == "transparent" or event.get("eventType") == "workingLocation":
        return False
    owner = [a for a in event.get("attendees") or [] if a.get("self")]
    return not any(a.get("responseStatus") == "declined" for a in owner)


def _check_times(event: dict[str, Any], zone: ZoneInfo) -> None:
    if not isinstance(event.get("start"), dict) or not isinstance(event.get("end"), dict):
        raise Invalid("Missing time: start and end are required.")
    start, end = _span(event, zone)
    if end <= start:
        raise Invalid("The specified time range is empty.")
