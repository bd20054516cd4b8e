"""Google Calendar through Nango's proxy: the proxy holds no OAuth token, Nango injects and refreshes it.

Every call is `{METHOD} {nango}/proxy/calendar/v3/...` with `Connection-Id`, `Provider-Config-Key` and
the Nango secret key. Failures, Nango's own or Google's passed through, become one `CalendarError`
whose `kind` says what the caller can do about it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret

__all__ = ["CalendarError", "ErrorKind", "GoogleCalendar", "Inserted", "classify"]

logger = logging.getLogger(__name__)

ErrorKind = Literal["auth", "not_found", "conflict", "unavailable", "timeout", "invalid"]
Event = dict[str, Any]

# events.list: Google's default page size, and how many events one listing reads at most (documented in
# docs/booking.md): a caller's own upcoming appointments, or the events around one slot.
LIST_PAGE_SIZE = 250
MAX_LISTED_EVENTS = 1000
# Google answers 403 both for "no access" and for quota; only the quota reasons go away by waiting.
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})
# Nango codes meaning the user's connection is gone or its token refresh failed: the user must reconnect.
_NANGO_RECONNECT_CODES = frozenset({"invalid_credentials", "connection_refresh_backoff", "failed_to_get_connection"})


class CalendarError(Exception):
    """A calendar call failed. `detail` is safe to log: it never holds the secret key or a token."""

    def __init__(self, kind: ErrorKind, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ErrorKind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Inserted:
    """The event as stored; `created` is False when a retry found the event already there."""

    event: Event
    created: bool


class GoogleCalendar:
    """The five-and-a-bit Google Calendar calls the tools need, per Nango connection."""

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
        self._http = http
        self._base = nango_base_url.rstrip("/") + "/proxy/calendar/v3"
        self._secret = secret_key
        self._integration = integration_id
        self._timeout = httpx.Timeout(timeout)
        self._metrics = metrics
        # Without a shared gate (tests, tools) the calendar gets its own, bounded the same way.
        self._gate = gate if gate is not None else RequestGate(total_timeout=max(timeout * 2, 1.0))

    def __repr__(self) -> str:
        return f"GoogleCalendar(base={self._base!r}, integration_id={self._integration!r})"

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
            created = await self._call(
                "insert",
                "POST",
                path,
                connection_id,
                json=body,
                params=[("sendUpdates", send_updates)],
                budget=budget,
            )
            return Inserted(created, created=True)
        except CalendarError as exc:
            if exc.kind != "conflict":
                raise
        existing = await self.get_event(connection_id, calendar_id, event_id)
        if existing.get("status") != "cancelled":
            return Inserted(existing, created=False)
        # A patch keeps what it does not name: an attendee of the cancelled booking would be kept (and notified)
        # unless the new booking's list, empty or not, replaces it.
        changes = {key: value for key, value in body.items() if key != "id"} | {"status": "confirmed"}
        changes.setdefault("attendees", [])
        restored = await self.patch_event(connection_id, calendar_id, event_id, changes, send_updates=send_updates)
        return Inserted(restored, created=True)

    async def get_event(
        self, connection_id: str, calendar_id: str, event_id: str, *, budget: float | None = None
    ) -> Event:
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
    ) -> list[Event]:
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
        events: list[Event] = []
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
    ) -> Event:
        """Change some fields of an event; the answer is the whole updated event."""
        path = _event_path(calendar_id, event_id)
        return await self._call(
            "patch", "PATCH", path, connection_id, json=dict(changes), params=[("sendUpdates", send_updates)]
        )

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
    ) -> Event:
        headers = {
            "Authorization": f"Bearer {self._secret}",
            "Connection-Id": connection_id,
            "Provider-Config-Key": self._integration,
        }
        try:
            async with self._gate.turn(budget):
                response = await self._http.request(
                    method, self._base + path, headers=headers, json=json, params=tuple(params), timeout=self._timeout
                )
        except (httpx.TimeoutException, TimeoutError):
            self._count(operation, "timeout")
            raise CalendarError("timeout", f"{operation}: no answer from Nango in time") from None
        except httpx.TransportError as exc:
            self._count(operation, "connection_error")
            raise CalendarError("unavailable", f"{operation}: cannot reach Nango ({type(exc).__name__})") from None
        body = _json(response)
        if response.is_success:
            self._count(operation, "ok")
            return body if isinstance(body, dict) else {}
        error = classify(response.status_code, body)
        self._count(operation, error.kind)
        detail = error.detail.replace(str(self._secret), "**********") if self._secret else error.detail
        logger.debug("calendar %s failed: %s %s", operation, error.kind, detail)
        raise CalendarError(error.kind, f"{operation}: {detail}", status=error.status)

    def _count(self, operation: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.nango_requests.labels(operation=f"calendar_{operation}", result=result).inc()


def classify(status: int, body: object) -> CalendarError:
    """Map an error answer to a CalendarError. Nango's own errors carry a string `error.code`, Google's
    (passed through verbatim by the proxy) an integer one."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, message = error.get("code"), str(error.get("message") or "")[:200]
    if isinstance(code, str):
        return _classify_nango(status, code, message)
    reasons = {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}
    detail = f"Google answered {status}" + (f" ({', '.join(sorted(reasons))})" if reasons else "") + f": {message}"
    if (status == 403 and reasons & _RATE_LIMIT_REASONS) or status == 429 or status >= 500:
        return CalendarError("unavailable", detail, status=status)
    if status in (401, 403):
        return CalendarError("auth", detail + "; the user must reconnect their Google Calendar", status=status)
    if status in (404, 410):
        return CalendarError("not_found", detail, status=status)
    if status in (409, 412):
        return CalendarError("conflict", detail, status=status)
    if status in (400, 422):
        return CalendarError("invalid", detail, status=status)
    return CalendarError("unavailable", detail, status=status)


def _classify_nango(status: int, code: str, message: str) -> CalendarError:
    detail = f"Nango answered {status} {code}: {message}"
    # Nango reports a missing connection (400) and a failed token refresh (424) as `server_error` 4xx.
    if code in _NANGO_RECONNECT_CODES or status == 424 or (code == "server_error" and status < 500):
        return CalendarError("auth", detail + "; the user must reconnect their Google Calendar", status=status)
    if status in (401, 403):
        # Nango refusing our own secret key: reconnecting would not help, the operator must fix the key.
        return CalendarError("unavailable", detail + "; check the Nango secret key and its scopes", status=status)
    if code == "unknown_provider_config":
        return CalendarError("invalid", detail + "; check the Nango integration id", status=status)
    if status in (400, 422):
        return CalendarError("invalid", detail, status=status)
    return CalendarError("unavailable", detail, status=status)


def _json(response: httpx.Response) -> object:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _seg(value: str) -> str:
    return quote(value, safe="")


def _event_path(calendar_id: str, event_id: str) -> str:
    return f"/calendars/{_seg(calendar_id)}/events/{_seg(event_id)}"


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_instant(text: object) -> datetime:
    if not isinstance(text, str):
        raise CalendarError("unavailable", "freeBusy answer has a malformed busy interval")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CalendarError("unavailable", "freeBusy answer has a malformed busy interval") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
