"""Microsoft Graph's calendar JSON, both ways: events to the provider interface's `Event`, bookings to Graph's
event body, error answers to `CalendarError` (pure functions; the calls are in `proxy.calendar.microsoft`).

Field names are Graph v1.0's `event` resource (https://learn.microsoft.com/en-us/graph/api/resources/event),
the same that msgraph-sdk's generated models declare (the tests check every body against them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from proxy.calendar.nangoproxy import classify_nango, status_error
from proxy.calendar.provider import CalendarError, Event, Interval, NewEvent
from proxy.calendar.windowszones import windows_name, zone_named

__all__ = [
    "KEY_MARK",
    "MARKS_EXPAND",
    "PRODUCT",
    "busy_span",
    "classify",
    "event_body",
    "graph_time",
    "mark_filter",
    "next_page",
    "retry_after",
    "to_event",
    "utc_text",
    "windows_name",
    "with_marks",
]

PRODUCT = "Outlook calendar"
GRAPH_ROOT = "https://graph.microsoft.com/v1.0/"
# The proxy's own property set: every mark is a single-value String property named in it.
PROPERTY_SET = "{7e395d99-673b-4e1d-aa4a-de49aac2f084}"
KEY_MARK = "vapiBookingKey"  # the booking's idempotency key (also its transactionId), for reading it back
MARK_NAMES = ("vapiCallId", "vapiBookingRef", "vapiCallerNumber", "vapiGuest", KEY_MARK)
FREE_SHOW_AS = frozenset({"free", "workingElsewhere"})
# Graph's error codes are camelCase or PascalCase; Nango's own are snake_case ("unknown_provider_config").
_NANGO_CODE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+|forbidden|unauthorized")
_FRACTION = re.compile(r"(\.\d{1,6})\d*$")


def property_id(name: str) -> str:
    return f"String {PROPERTY_SET} Name {name}"


MARKS_EXPAND = (
    "singleValueExtendedProperties($filter=" + " or ".join(f"id eq '{property_id(n)}'" for n in MARK_NAMES) + ")"
)


def mark_filter(name: str, value: str) -> str:
    """`$filter` for events carrying the mark `name` with `value` (quotes doubled, as OData escapes them)."""
    quoted = value.replace("'", "''")
    return f"singleValueExtendedProperties/Any(ep: ep/id eq '{property_id(name)}' and ep/value eq '{quoted}')"


def utc_text(moment: datetime) -> str:
    """calendarView's startDateTime/endDateTime: ISO 8601, here in UTC with Z."""
    if moment.tzinfo is None:
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def graph_time(moment: datetime, zone: ZoneInfo) -> dict[str, str]:
    """A dateTimeTimeZone in the user's zone by its Windows name (accepted by every Graph method); a zone
    Windows has no name for is written in UTC, the same instant."""
    name = windows_name(zone)
    local = moment.astimezone(zone if name != "UTC" else UTC)
    return {"dateTime": local.replace(tzinfo=None).isoformat(timespec="seconds"), "timeZone": name}


def read_time(value: object) -> datetime | None:
    """A dateTimeTimeZone as a UTC instant, read in the zone it names; None when unreadable."""
    if not isinstance(value, dict):
        return None
    text, zone_name = value.get("dateTime"), value.get("timeZone")
    if not isinstance(text, str):
        return None
    zone = zone_named(zone_name) if isinstance(zone_name, str) else ZoneInfo("UTC")
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()))
    except ValueError:
        return None
    if moment.tzinfo is None:
        if zone is None:
            return None
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def busy_span(item: Mapping[str, Any]) -> Interval | None:
    """The time an event of calendarView blocks (all-day ones too), None when it blocks none."""
    if not _blocks(item):
        return None
    start, end = read_time(item.get("start")), read_time(item.get("end"))
    return (start, end) if start is not None and end is not None and start < end else None


def to_event(item: Mapping[str, Any]) -> Event:
    """A Graph event as the booking rules see it (all-day events have no span there)."""
    timed = item.get("isAllDay") is not True
    start, end = read_time(item.get("start")), read_time(item.get("end"))
    has_span = timed and start is not None and end is not None
    return Event(
        id=str(item.get("id", "")),
        start=start if has_span else None,
        end=end if has_span else None,
        cancelled=item.get("isCancelled") is True,
        busy=_blocks(item),
        created=_stamp(item.get("createdDateTime")),
        marks=_marks(item.get("singleValueExtendedProperties")),
        guests=bool(item.get("attendees")),
    )


def with_marks(event: Event, marks: Mapping[str, str]) -> Event:
    return event if event.marks else replace(event, marks=dict(marks))


def event_body(event: NewEvent, key: str) -> dict[str, Any]:
    """The POST body of a booking: `transactionId` and the key mark make a repeated create find the first."""
    marks = {**event.marks, KEY_MARK: key}
    body: dict[str, Any] = {
        "subject": event.summary,
        "body": {"contentType": "text", "content": event.description},
        "start": graph_time(event.start, event.timezone),
        "end": graph_time(event.end, event.timezone),
        "showAs": "busy",
        "transactionId": key,
        "singleValueExtendedProperties": [{"id": property_id(k), "value": v} for k, v in marks.items()],
    }
    if event.guest is not None:
        address = {"address": event.guest.email, "name": event.guest.name}
        body["attendees"] = [{"emailAddress": address, "type": "required"}]
    return body


def next_page(link: object) -> tuple[str, list[tuple[str, str]]] | None:
    """`@odata.nextLink` as a path under /v1.0 and its query, to send through Nango's proxy like the first page;
    None for no next page, or a link that leaves Graph v1.0 (it is never followed elsewhere)."""
    if not isinstance(link, str) or not link.startswith(GRAPH_ROOT):
        return None
    url = httpx.URL(link)
    return url.path.removeprefix("/v1.0"), list(url.params.multi_items())


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Graph sends whole seconds); None when absent or not a number."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def classify(status: int, body: object) -> CalendarError:
    """Map an error answer to a CalendarError: Nango's own (snake_case codes) or Graph's passed through
    (`{"error": {"code": "ErrorItemNotFound", "message": ...}}`)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    if isinstance(code, str) and _NANGO_CODE.fullmatch(code):
        nango = classify_nango(status, body, PRODUCT)
        if nango is not None:
            return nango
    message = str(error.get("message") or "")[:200]
    detail = f"Graph answered {status}" + (f" ({code})" if isinstance(code, str) else "") + f": {message}"
    if status == 429 or status >= 500:
        return CalendarError("unavailable", detail, status=status)
    if code == "MailboxNotEnabledForRESTAPI":
        return CalendarError("invalid", detail + "; the account has no Exchange Online mailbox", status=status)
    return status_error(status, detail, PRODUCT)


def _blocks(item: Mapping[str, Any]) -> bool:
    status = item.get("responseStatus")
    response = status.get("response") if isinstance(status, dict) else None
    return item.get("isCancelled") is not True and response != "declined" and item.get("showAs") not in FREE_SHOW_AS


def _marks(props: object) -> dict[str, str]:
    marks: dict[str, str] = {}
    for prop in props if isinstance(props, list) else []:
        pid, value = (prop.get("id"), prop.get("value")) if isinstance(prop, dict) else (None, None)
        if isinstance(pid, str) and isinstance(value, str):
            head, _, name = pid.rpartition(" Name ")
            if head.lower() == f"string {PROPERTY_SET}".lower() and name in MARK_NAMES:
                marks[name] = value
    return marks


def _stamp(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text.removesuffix("Z")))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
