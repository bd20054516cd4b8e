"""What one caller may do through the calendar owner's account, and how caller-given text enters an event (pure).

A booking with an e-mail makes the owner's calendar send an invitation from the owner's account, with a title
and notes the caller chose. Caller ID is spoofable, so nothing about a caller is trusted; what is bounded is
what a call, and a calling number, can make the calendar do:

- bookings per call (`max_bookings_per_call`) and per calling number in any 24 hours
  (`max_bookings_per_caller_per_day`), cancelled ones included (each sent its invitation and cancellation);
- invitations to one address per call (`max_invitations_per_address`);
- per call, wherever its tool calls land (`CallCounts`): wrong booking references (`MAX_WRONG_PER_CALL`, see
  `proxy.calendar.references`) and reschedules that e-mail the guests (`MAX_NOTIFIED_MOVES_PER_CALL`: each
  sends every guest an update from the owner's account);
- caller-given text: single lines where a line is expected, every field cut to a length, and the whole marked
  in the event as given by the caller and not checked.

The counts come from the calendar itself (the bookings' private extended properties), so every replica sees
the same ones; `recent_filter` says what to list. An invitation is counted by its booking's `vapiGuest` mark.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from cachetools import TTLCache

from proxy.calendar.provider import Event, Guest, NewEvent
from proxy.calendar.references import MAX_WRONG_PER_CALL, new_reference
from proxy.config.calendar import CalendarSettings

__all__ = [
    "MARK",
    "MAX_NOTIFIED_MOVES_PER_CALL",
    "NO_MORE_MOVES",
    "PER_CALL_LIMITS",
    "RECENT",
    "CallCounts",
    "CallerText",
    "Counted",
    "booking_refusal",
    "new_booking",
    "recent_filter",
]

MAX_NOTIFIED_MOVES_PER_CALL = 3
Counted = Literal["wrong_reference", "notified_move"]
NO_MORE_MOVES = (
    f"I can move an appointment with guests at most {MAX_NOTIFIED_MOVES_PER_CALL} times on one call: each move "
    "e-mails them. Anything more has to go through the office directly."
)
PER_CALL_LIMITS: dict[Counted, int] = {
    "wrong_reference": MAX_WRONG_PER_CALL,
    "notified_move": MAX_NOTIFIED_MOVES_PER_CALL,
}

# How far back a calling number's bookings count.
RECENT = timedelta(hours=24)
# Lengths of caller-given fields, in characters.
NAME_CHARS, TITLE_CHARS, PHONE_CHARS, EMAIL_CHARS, NOTES_CHARS = 80, 80, 40, 254, 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u200b-\u200f\u202a-\u202e]")
_SPACES = re.compile(r"\s+")
MARK = "Booked by the voice assistant. Given by the caller, not checked:"


def recent_filter(call_id: str, number: str | None) -> dict[str, str]:
    """The private properties that find a caller's bookings: by number (this call's included), else by call."""
    return {"vapiCallerNumber": number} if number else {"vapiCallId": call_id}


def booking_refusal(
    events: Iterable[Event],
    settings: CalendarSettings,
    *,
    call_id: str,
    number: str | None,
    email: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
) -> str | None:
    """Why a new booking of [start, end) is past a bound, in words for the caller; None when it is within them.

    `events` are the caller's bookings as listed with `recent_filter` (cancelled ones included). A booking this
    call already made of exactly this slot (a retry, or booking a slot again after cancelling it) is the same
    booking, not a new one."""
    calls = [e for e in events if e.marks.get("vapiCallId") == call_id]
    if any((e.start, e.end) == (start, end) for e in calls):
        return None
    if len(_ids(calls)) >= settings.max_bookings_per_call:
        n = settings.max_bookings_per_call
        return f"I can book at most {n} appointment{'s' if n != 1 else ''} on one call."
    if number is not None:
        since = now - RECENT
        today = [e for e in events if e.marks.get("vapiCallerNumber") == number and _recent(e, since)]
        if len(_ids(today)) >= settings.max_bookings_per_caller_per_day:
            return "This phone number has booked as many appointments as I can take in one day."
    if email:
        invited = [e for e in calls if e.marks.get("vapiGuest") == guest_mark(email)]
        if len(_ids(invited)) >= settings.max_invitations_per_address:
            return "I've sent as many invitations to that email address as I can on one call."
    return None


class CallerText:
    """The caller-given fields of a booking, cleaned and cut to length."""

    def __init__(self, args: Mapping[str, object], fallback_phone: str | None) -> None:
        self.name = _line(args.get("name"), NAME_CHARS)
        self.title = _line(args.get("summary"), TITLE_CHARS)
        self.phone = _line(args.get("phone"), PHONE_CHARS) or fallback_phone
        self.email = _line(args.get("email"), EMAIL_CHARS)
        self.notes = _line(args.get("notes"), NOTES_CHARS)


def new_booking(
    text: CallerText, start: datetime, end: datetime, tz: ZoneInfo, *, call_id: str, number: str | None
) -> NewEvent:
    """The event a booking writes: the caller's words, each labelled, under a line saying whose they are; marks
    that find it again (call, number, reference) and count its invitation (`guest_mark`)."""
    summary = f"Appointment with {text.name}" + (f": {text.title}" if text.title else "")
    fields = [("Name", text.name), ("Phone", text.phone), ("Email", text.email), ("Title", text.title)]
    fields.append(("Notes", text.notes))
    lines = [MARK, *(f"{label}: {value}" for label, value in fields if value)]
    marks = {"vapiCallId": call_id, "vapiBookingRef": new_reference()}
    if number:
        marks["vapiCallerNumber"] = number
    guest = None
    if text.email:
        marks["vapiGuest"] = guest_mark(text.email)
        guest = Guest(text.email, text.name or text.email)
    return NewEvent(summary, "\n".join(lines), start, end, tz, marks, guest)


def guest_mark(email: str) -> str:
    """Who a booking invited, as a mark: a digest of the address (the address itself is in the attendees)."""
    return hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:20]


def _line(raw: object, limit: int) -> str | None:
    """One line of at most `limit` characters: control and direction characters dropped, whitespace joined."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    value = _SPACES.sub(" ", _CONTROL.sub("", str(raw))).strip()[:limit].strip()
    return value or None


def _ids(events: Iterable[Event]) -> set[str]:
    return {e.id for e in events}


def _recent(event: Event, since: datetime) -> bool:
    return event.created is None or event.created >= since  # an unknown age counts as recent


class CallCounts:
    """What each call did that is bounded per call (`PER_CALL_LIMITS`), for an hour; at most `max_calls` calls
    remembered (oldest dropped). In this process; `proxy.shared.callcounts` counts across replicas."""

    def __init__(self, max_calls: int = 10_000, ttl: float = 3600.0) -> None:
        self._counts: TTLCache[tuple[Counted, str], int] = TTLCache(maxsize=max_calls, ttl=ttl)

    async def exhausted(self, call_id: str, kind: Counted) -> bool:
        return self._counts.get((kind, call_id), 0) >= PER_CALL_LIMITS[kind]

    async def record(self, call_id: str, kind: Counted) -> None:
        """One more of `kind` for the call."""
        self._counts[kind, call_id] = self._counts.get((kind, call_id), 0) + 1

    async def take(self, call_id: str, kind: Counted) -> bool:
        """Count one more of `kind` if the call has any left; False (nothing counted) when it has none."""
        if await self.exhausted(call_id, kind):
            return False
        await self.record(call_id, kind)
        return True
