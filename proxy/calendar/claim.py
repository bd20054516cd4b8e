"""Claiming a slot in a shared Google calendar so that one booking holds it, whatever runs at the same time.

Google Calendar has no conditional insert, and several replicas (or a person in the calendar UI) write to it.
So a booking is a small protocol every replica follows the same way:

1. Insert under an id fixed by call, slot and attempt (`booking_id`): a retried request finds its own event
   instead of making a second one. A 409 on that id means an earlier attempt of this call: it counts only
   if it still holds exactly this slot; otherwise (a reschedule moved it) the next attempt's id is used.
2. If the insert's answer does not come in time, read the event back by its id within the time left.
3. Re-read the slot. When other busy events overlap it, the one created first (then the smaller id) keeps
   the slot. Every replica computes the same winner from the same calendar, so a loser deletes its own event
   and nobody has to coordinate. An insert committed before ours is visible to our re-read (Google's events
   are read-after-write consistent per calendar), so two bookings cannot both see themselves as first.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from proxy.calendar.google import CalendarError, GoogleCalendar

__all__ = [
    "Claim",
    "booking_id",
    "claim_slot",
    "contested",
    "event_span",
    "first_created",
    "holds_slot",
    "private_of",
    "rivals",
]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
ClaimState = Literal["booked", "existed", "lost", "unconfirmed"]
# Ids one call may use for one slot: each reschedule of an earlier booking of that slot costs one.
ID_ATTEMPTS = 4
# Time kept back from the insert for reading the event back and re-reading the slot.
READ_BACK_RESERVE = 1.5


@dataclass(frozen=True)
class Claim:
    """How a claim ended: booked (new), existed (an earlier attempt of this call), lost (another booking
    came first; ours is deleted again), unconfirmed (the calendar did not say in time)."""

    state: ClaimState
    event: Event | None = None


def booking_id(call_id: str, start: datetime, end: datetime, calendar_id: str, attempt: int = 0) -> str:
    """A Google event id (base32hex, 52 chars) fixed by call, slot and attempt, so a retry is the same event."""
    parts = [call_id, _iso(start.astimezone(UTC)), _iso(end.astimezone(UTC)), calendar_id]
    key = "\n".join(parts + ([str(attempt)] if attempt else []))
    return base64.b32hexencode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=").lower()


def event_span(event: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """Start and end of a timed event in UTC; CalendarError for an all-day or malformed one."""

    def read(key: str) -> datetime:
        value = event.get(key)
        text = value.get("dateTime") if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise CalendarError("invalid", f"event has no {key}.dateTime")
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:
            raise CalendarError("invalid", f"event has a malformed {key}.dateTime") from None

    return read("start"), read("end")


def private_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's private extended properties (where bookings keep call id, caller number and reference)."""
    props = event.get("extendedProperties")
    private = props.get("private") if isinstance(props, dict) else None
    return private if isinstance(private, dict) else {}


def holds_slot(event: Mapping[str, Any], call_id: str, start: datetime, end: datetime) -> bool:
    """Whether `event` is this call's live booking of exactly [start, end)."""
    if private_of(event).get("vapiCallId") != call_id or event.get("status") == "cancelled":
        return False
    try:
        return event_span(event) == (start.astimezone(UTC), end.astimezone(UTC))
    except CalendarError:
        return False


def rivals(events: Iterable[Mapping[str, Any]], low: datetime, high: datetime, *, exclude: str) -> list[Event]:
    """The busy timed events overlapping [low, high), other than the one with id `exclude`."""
    return [dict(e) for e in events if e.get("id") != exclude and _busy(e) and _overlaps(e, low, high)]


def first_created(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The event every replica agrees keeps a contested slot: earliest `created`, then smallest id."""
    return min(events, key=lambda e: (_created(e), str(e.get("id", ""))), default=None)


async def claim_slot(
    calendar: GoogleCalendar,
    connection_id: str,
    calendar_id: str,
    event: Mapping[str, Any],
    *,
    call_id: str,
    start: datetime,
    end: datetime,
    buffer: timedelta,
    send_updates: str,
    time_left: Callable[[], float],
) -> Claim:
    """Insert `event` for [start, end) and settle any race for the slot (see the module doc).

    `time_left()` is the seconds this tool call has left; the insert gets what remains after a reserve for
    reading back. CalendarError for failures other than a late answer.
    """
    mine: Event | None = None
    existed = False
    for attempt in range(ID_ATTEMPTS):
        event_id = booking_id(call_id, start, end, calendar_id, attempt)
        try:
            inserted = await calendar.insert_event(
                connection_id,
                calendar_id,
                event,
                event_id=event_id,
                send_updates=send_updates,
                budget=_insert_budget(time_left()),
            )
        except CalendarError as exc:
            if exc.kind != "timeout":
                raise
            found = await _read_back(calendar, connection_id, calendar_id, event_id, time_left())
            if found is None or not holds_slot(found, call_id, start, end):
                return Claim("unconfirmed")
            mine = found
            break
        if holds_slot(inserted.event, call_id, start, end):
            mine, existed = inserted.event, not inserted.created
            break
    if mine is None:
        raise CalendarError("conflict", f"{ID_ATTEMPTS} booking ids of this call are held by moved appointments")
    try:
        around = await calendar.list_events(
            connection_id, calendar_id, start=start - buffer, end=end + buffer, budget=max(time_left(), 0.0)
        )
        contenders = [*rivals(around, start - buffer, end + buffer, exclude=str(mine.get("id"))), mine]
        winner = first_created(contenders)
        if winner is not None and winner.get("id") != mine.get("id"):
            logger.info("booking %s lost its slot to an earlier event; deleting it", mine.get("id"))
            await calendar.delete_event(connection_id, calendar_id, str(mine["id"]), send_updates=send_updates)
            return Claim("lost", mine)
    except CalendarError as exc:
        # The event exists but whether it keeps the slot is unknown: a retry of the same booking settles it.
        logger.warning("booking %s made but its slot could not be re-read: %s", mine.get("id"), exc)
        return Claim("unconfirmed", mine)
    return Claim("existed" if existed else "booked", mine)


async def contested(
    calendar: GoogleCalendar, connection_id: str, calendar_id: str, event_id: str, low: datetime, high: datetime
) -> bool:
    """Whether another busy event overlaps [low, high) besides `event_id` (checked after moving it there)."""
    around = await calendar.list_events(connection_id, calendar_id, start=low, end=high)
    return bool(rivals(around, low, high, exclude=event_id))


async def _read_back(
    calendar: GoogleCalendar, connection_id: str, calendar_id: str, event_id: str, seconds: float
) -> Event | None:
    if seconds <= 0.05:
        return None
    try:
        return await calendar.get_event(connection_id, calendar_id, event_id, budget=seconds / 2)
    except CalendarError:
        return None  # not there yet, or no answer: either way the truth is unknown


def _insert_budget(seconds: float) -> float:
    return max(seconds - READ_BACK_RESERVE, seconds / 2, 0.0)


def _busy(event: Mapping[str, Any]) -> bool:
    return event.get("status") != "cancelled" and event.get("transparency") != "transparent"


def _overlaps(event: Mapping[str, Any], low: datetime, high: datetime) -> bool:
    try:
        start, end = event_span(event)
    except CalendarError:
        return False  # all-day events: freeBusy already weighed them before the insert
    return start < high and end > low


def _created(event: Mapping[str, Any]) -> datetime:
    text = event.get("created")
    try:
        return datetime.fromisoformat(str(text)).astimezone(UTC)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown age never beats a known one


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
