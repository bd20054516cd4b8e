"""What one caller may do through the calendar owner's account, and how caller-given text enters an event (pure).

A booking with an e-mail makes the owner's calendar send an invitation from the owner's account, with a title
and notes the caller chose. Caller ID is spoofable, so nothing about a caller is trusted; what is bounded is
what a call, and a calling number, can make the calendar do:

- bookings per call (`max_bookings_per_call`) and per calling number in any 24 hours
  (`max_bookings_per_caller_per_day`), cancelled ones included (each sent its invitation and cancellation);
- invitations to one address per call (`max_invitations_per_address`);
- caller-given text: single lines where a line is expected, every field cut to a length, and the whole marked
  in the event as given by the caller and not checked.

The counts come from the calendar itself (the bookings' private extended properties), so every replica sees
the same ones; `recent_filter` says what to list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from proxy.calendar.claim import event_span, private_of
from proxy.calendar.google import CalendarError
from proxy.config.calendar import CalendarSettings

__all__ = ["RECENT", "CallerText", "booking_refusal", "event_text", "recent_filter"]

Event = Mapping[str, Any]
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
    calls = [e for e in events if private_of(e).get("vapiCallId") == call_id]
    if any(_spans(e, start, end) for e in calls):
        return None
    if len(_ids(calls)) >= settings.max_bookings_per_call:
        n = settings.max_bookings_per_call
        return f"I can book at most {n} appointment{'s' if n != 1 else ''} on one call."
    if number is not None:
        since = now - RECENT
        today = [e for e in events if private_of(e).get("vapiCallerNumber") == number and _created(e) >= since]
        if len(_ids(today)) >= settings.max_bookings_per_caller_per_day:
            return "This phone number has booked as many appointments as I can take in one day."
    if email:
        invited = [e for e in calls if email.casefold() in _attendees(e)]
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


def event_text(text: CallerText) -> dict[str, str]:
    """The event's summary and description: the caller's words, each labelled, under a line saying whose."""
    summary = f"Appointment with {text.name}" + (f": {text.title}" if text.title else "")
    fields = [("Name", text.name), ("Phone", text.phone), ("Email", text.email), ("Title", text.title)]
    lines = [MARK, *(f"{label}: {value}" for label, value in fields if value)]
    if text.notes:
        lines.append(f"Notes: {text.notes}")
    return {"summary": summary, "description": "\n".join(lines)}


def _line(raw: object, limit: int) -> str | None:
    """One line of at most `limit` characters: control and direction characters dropped, whitespace joined."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    value = _SPACES.sub(" ", _CONTROL.sub("", str(raw))).strip()[:limit].strip()
    return value or None


def _spans(event: Event, start: datetime, end: datetime) -> bool:
    try:
        return event_span(event) == (start, end)
    except CalendarError:
        return False


def _ids(events: Iterable[Event]) -> set[str]:
    return {str(e.get("id")) for e in events}


def _attendees(event: Event) -> set[str]:
    attendees = event.get("attendees")
    items = attendees if isinstance(attendees, list) else []
    return {str(a.get("email", "")).casefold() for a in items if isinstance(a, dict)}


def _created(event: Event) -> datetime:
    try:
        created = datetime.fromisoformat(str(event.get("created")))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown age: counted as recent
    return created if created.tzinfo is not None else created.replace(tzinfo=UTC)
