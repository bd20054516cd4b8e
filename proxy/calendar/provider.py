"""The calendar provider seam: the few calendar operations the tools and booking rules need, provider-neutral.

The booking rules (claim, re-read, winner, reference, bounds; `proxy.calendar.claim` and `.booking`) and
the speech are written once against `CalendarProvider`. Each calendar service is one module implementing it
(`proxy.calendar.google` for Google Calendar, `proxy.calendar.microsoft` for Microsoft Graph), and maps its
own event format to `Event` and its own failures to `CalendarError` there, so nothing above sees a
provider's JSON. What a provider must guarantee for the booking rules to hold:

- `create` is idempotent per `key`: a retry with the same key finds the event the first attempt made
  (`Created.created` False) instead of making a second one, and `read` finds it by that key;
- an event written is visible to the next `events` or `free_busy` read of the same calendar;
- `Event.created` is the service's own creation time, the same for every reader (the winner rule uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

__all__ = ["CalendarError", "CalendarProvider", "Created", "ErrorKind", "Event", "Guest", "Interval", "NewEvent"]

ErrorKind = Literal["auth", "not_found", "conflict", "unavailable", "timeout", "invalid"]
Interval = tuple[datetime, datetime]


class CalendarError(Exception):
    """A calendar call failed. `detail` is safe to log: it never holds a secret key or a token."""

    def __init__(self, kind: ErrorKind, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ErrorKind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Event:
    """One calendar event as the booking rules see it.

    `start`/`end` are UTC instants, None for an all-day event (or one whose times cannot be read): such an
    event is weighed by `free_busy`, never claimed or moved. `busy` says whether it blocks its time exactly as
    the provider's `free_busy` counts it (the re-read after a booking must agree with the read before it).
    `marks` are the private properties the proxy writes on its bookings (call id, caller number, booking
    reference); `guests` whether it has attendees to notify."""

    id: str
    start: datetime | None
    end: datetime | None
    cancelled: bool = False
    busy: bool = True
    created: datetime | None = None
    marks: Mapping[str, str] = field(default_factory=dict)
    guests: bool = False

    def span(self) -> Interval:
        """Start and end; CalendarError for an all-day or unreadable event."""
        if self.start is None or self.end is None:
            raise CalendarError("invalid", f"event {self.id} has no start and end time of day")
        return self.start, self.end


@dataclass(frozen=True)
class Guest:
    email: str
    name: str


@dataclass(frozen=True)
class NewEvent:
    """A booking to write: times are instants, `timezone` the zone they are shown in on the calendar."""

    summary: str
    description: str
    start: datetime
    end: datetime
    timezone: ZoneInfo
    marks: Mapping[str, str]
    guest: Guest | None = None


@dataclass(frozen=True)
class Created:
    """The event as stored; `created` is False when a retry found the event already there."""

    event: Event
    created: bool


class CalendarProvider(Protocol):
    """One calendar service, per connection. `budget` bounds one operation's wait in seconds (None: the
    provider's own timeout); `notify` asks the service to email the event's guests."""

    @property
    def product(self) -> str:
        """How callers and users hear the calendar named: "Google Calendar", "Outlook calendar"."""
        ...

    async def free_busy(
        self, connection_id: str, calendar_id: str, *, start: datetime, end: datetime
    ) -> list[Interval]:
        """Busy intervals (UTC) of one calendar between two instants."""
        ...

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
        """Events overlapping [start, end) whose marks include all of `marks`, in start order (bounded)."""
        ...

    async def create(
        self, connection_id: str, calendar_id: str, event: NewEvent, *, key: str, notify: bool, budget: float | None
    ) -> Created:
        """Write `event` once per `key` (see the module doc)."""
        ...

    async def read(self, connection_id: str, calendar_id: str, key: str, *, budget: float | None) -> Event | None:
        """The event `create` made under `key`, or None when there is none."""
        ...

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
        """Give the event new times; the answer is the event as stored."""
        ...

    async def cancel(self, connection_id: str, calendar_id: str, event_id: str, *, notify: bool) -> bool:
        """Cancel the event; False when it was already gone, so a retried cancel still succeeds."""
        ...
