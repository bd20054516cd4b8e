"""Claiming a slot in a shared calendar so that one booking holds it, whatever runs at the same time.

No calendar service offers a conditional insert, and several replicas (or a person in the calendar UI) write
to it. So a booking is a small protocol every replica follows the same way, on any provider
(`proxy.calendar.provider`):

1. Create under a key fixed by call, slot and attempt (`booking_id`): a retried request finds its own event
   instead of making a second one. An event already under that key is an earlier attempt of this call: it
   counts only if it still holds exactly this slot; otherwise (a reschedule moved it) the next attempt's key
   is used.
2. If the create's answer does not come in time, read the event back by its key within the time left.
3. Re-read the slot. When other busy events overlap it, the one created first (then the smaller id) keeps
   the slot. Every replica computes the same winner from the same calendar, so a loser deletes its own event
   and nobody has to coordinate. A create committed before ours is visible to our re-read (the providers'
   events are read-after-write consistent per calendar), so two bookings cannot both see themselves as first.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from proxy.calendar.provider import CalendarError, CalendarProvider, Event, NewEvent

__all__ = [
    "Claim",
    "booking_id",
    "claim_slot",
    "contested",
    "first_created",
    "holds_slot",
    "rivals",
]

logger = logging.getLogger(__name__)

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
    """The idempotency key fixed by call, slot and attempt, so a retry is the same event: 52 chars of base32hex
    (a-v, 0-9), which Google accepts as an event id."""
    parts = [call_id, _iso(start.astimezone(UTC)), _iso(end.astimezone(UTC)), calendar_id]
    key = "\n".join(parts + ([str(attempt)] if attempt else []))
    return base64.b32hexencode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=").lower()


def holds_slot(event: Event, call_id: str, start: datetime, end: datetime) -> bool:
    """Whether `event` is this call's live booking of exactly [start, end)."""
    if event.marks.get("vapiCallId") != call_id or event.cancelled:
        return False
    return (event.start, event.end) == (start.astimezone(UTC), end.astimezone(UTC))


def rivals(events: Iterable[Event], low: datetime, high: datetime, *, exclude: str) -> list[Event]:
    """The busy timed events overlapping [low, high), other than the one with id `exclude`."""
    return [e for e in events if e.id != exclude and e.busy and not e.cancelled and _overlaps(e, low, high)]


def first_created(events: Iterable[Event]) -> Event | None:
    """The event every replica agrees keeps a contested slot: earliest `created`, then smallest id."""
    # An unknown age never beats a known one.
    return min(events, key=lambda e: (e.created or datetime.max.replace(tzinfo=UTC), e.id), default=None)


async def claim_slot(
    calendar: CalendarProvider,
    connection_id: str,
    calendar_id: str,
    event: NewEvent,
    *,
    call_id: str,
    buffer: timedelta,
    notify: bool,
    time_left: Callable[[], float],
) -> Claim:
    """Create `event` for its slot and settle any race for the slot (see the module doc).

    `time_left()` is the seconds this tool call has left; the create gets what remains after a reserve for
    reading back. CalendarError for failures other than a late answer.
    """
    start, end = event.start, event.end
    mine: Event | None = None
    existed = False
    for attempt in range(ID_ATTEMPTS):
        key = booking_id(call_id, start, end, calendar_id, attempt)
        try:
            created = await calendar.create(
                connection_id, calendar_id, event, key=key, notify=notify, budget=_insert_budget(time_left())
            )
        except CalendarError as exc:
            if exc.kind != "timeout":
                raise
            found = await _read_back(calendar, connection_id, calendar_id, key, time_left())
            if found is None or not holds_slot(found, call_id, start, end):
                return Claim("unconfirmed")
            mine = found
            break
        if holds_slot(created.event, call_id, start, end):
            mine, existed = created.event, not created.created
            break
    if mine is None:
        raise CalendarError("conflict", f"{ID_ATTEMPTS} booking ids of this call are held by moved appointments")
    try:
        around = await calendar.events(
            connection_id, calendar_id, start=start - buffer, end=end + buffer, budget=max(time_left(), 0.0)
        )
        # The re-read copy is the calendar's truth: a provider whose create answer lacks the marks (Graph) or that
        # answered a repeated create with the first event shows its real booking reference here.
        stored = next((e for e in around if e.id == mine.id and e.marks), None)
        if stored is not None:
            existed = existed or stored.marks.get("vapiBookingRef") != event.marks.get("vapiBookingRef")
            mine = stored
        contenders = [*rivals(around, start - buffer, end + buffer, exclude=mine.id), mine]
        winner = first_created(contenders)
        if winner is not None and winner.id != mine.id:
            logger.info("booking %s lost its slot to an earlier event; deleting it", mine.id)
            await calendar.cancel(connection_id, calendar_id, mine.id, notify=notify)
            return Claim("lost", mine)
    except CalendarError as exc:
        # The event exists but whether it keeps the slot is unknown: a retry of the same booking settles it.
        logger.warning("booking %s made but its slot could not be re-read: %s", mine.id, exc)
        return Claim("unconfirmed", mine)
    return Claim("existed" if existed else "booked", mine)


async def contested(
    calendar: CalendarProvider, connection_id: str, calendar_id: str, event_id: str, low: datetime, high: datetime
) -> bool:
    """Whether another busy event overlaps [low, high) besides `event_id` (checked after moving it there)."""
    around = await calendar.events(connection_id, calendar_id, start=low, end=high)
    return bool(rivals(around, low, high, exclude=event_id))


async def _read_back(
    calendar: CalendarProvider, connection_id: str, calendar_id: str, key: str, seconds: float
) -> Event | None:
    if seconds <= 0.05:
        return None
    try:
        return await calendar.read(connection_id, calendar_id, key, budget=seconds / 2)
    except CalendarError:
        return None  # not there yet, or no answer: either way the truth is unknown


def _insert_budget(seconds: float) -> float:
    return max(seconds - READ_BACK_RESERVE, seconds / 2, 0.0)


def _overlaps(event: Event, low: datetime, high: datetime) -> bool:
    if event.start is None or event.end is None:
        return False  # all-day events: freeBusy already weighed them before the insert
    return event.start < high and event.end > low


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
