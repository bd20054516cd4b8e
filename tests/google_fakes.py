"""Factories for Google Calendar's documented JSON shapes (relayed by Nango's proxy) and a client to receive them."""

from __future__ import annotations

from typing import Any

import httpx

from proxy.gcal import GoogleCalendar
from proxy.metrics import Metrics
from proxy.secret import Secret
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


def events_list_body(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "calendar#events",
        "etag": '"p33c9vfnqtm4ng0g"',
        "summary": "jane@example.com",
        "updated": "2026-03-02T15:00:00.000Z",
        "timeZone": "America/New_York",
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


def make_calendar(http: httpx.AsyncClient, metrics: Metrics | None = None, timeout: float = 5.0) -> GoogleCalendar:
    return GoogleCalendar(
        http,
        nango_base_url=BASE_URL + "/",
        secret_key=Secret(SECRET_KEY),
        integration_id=INTEGRATION,
        timeout=timeout,
        metrics=metrics,
    )
