"""The calendar tools behind proxy mode: availability, open slots, and booking, cancelling and moving appointments.

A `CalendarTools` answers one tool call: it reads the call's arguments, asks the calendar (any provider behind
`proxy.calendar.provider`), and returns an
`Outcome` whose text is short and speakable yet carries the exact ISO times the model needs for a follow-up
call, with the same facts as structured data. `proxy.vapi.tools` turns outcomes into Vapi tool results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from proxy.calendar.abuse import (
    NO_MORE_MOVES,
    RECENT,
    CallCounts,
    CallerText,
    booking_refusal,
    new_booking,
    recent_filter,
)
from proxy.calendar.claim import Claim, booking_id, claim_slot, contested, holds_slot
from proxy.calendar.context import CalendarContext
from proxy.calendar.parallel import both, every
from proxy.calendar.provider import CalendarProvider, Event
from proxy.calendar.references import NEED_REFERENCE, NO_MORE_TRIES, WRONG_REFERENCE, normalise, speak_reference
from proxy.calendar.slots import Interval, is_free, merge, open_slots, parse_time, subtract, within_working_hours
from proxy.calendar.speech import Voice, join_words, speak_minutes

__all__ = ["ArgError", "CalendarTools", "Outcome", "booking_id"]


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# freeBusy is read in windows: the first alone covers a usual horizon; past it, the rest at once, in windows well
# within the range Google's freeBusy accepts (it documents none and refuses past about 90 days).
_FIRST_WINDOW = timedelta(days=15)
_WINDOW = timedelta(days=60)
# The longest appointment (`_check_length`): a reschedule reads this far past the new start before it knows the end.
_LONGEST = timedelta(hours=8)
# A time offered at the edge of the notice window stays bookable while the caller makes up their mind.
_NOTICE_GRACE = timedelta(minutes=15)


@dataclass(frozen=True)
class Outcome:
    """What a tool call came to: `text` for the model, `label` for metrics, `data` as Vapi metadata."""

    text: str
    label: str
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)


class ArgError(ValueError):
    """Arguments a tool can't use; the message says why, in words fit to read to the caller."""


class CalendarTools:
    """The five tools for one call; methods are named after the tools."""

    def __init__(
        self,
        ctx: CalendarContext,
        calendar: CalendarProvider,
        connection: str,
        now: datetime,
        args: dict[str, Any],
        *,
        time_left: Callable[[], float] = lambda: math.inf,
        counts: CallCounts | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.ctx, self.cal, self.conn, self.args = ctx, calendar, connection, args
        self.time_left = time_left
        self.counts = counts if counts is not None else CallCounts()
        self.s, self.tz, self.now = ctx.settings, ctx.timezone, now.astimezone(UTC)
        self.earliest = self.now + timedelta(minutes=self.s.min_notice_minutes)
        self.limit = self.now + timedelta(days=self.s.horizon_days)
        self.buffer = timedelta(minutes=self.s.buffer_minutes)
        self.assumed = False
        self.voice = Voice.at(self.tz, self.now)

    async def check_availability(self) -> Outcome:
        start, end = self._time("start"), self._time("end")
        if end <= start or end - start > timedelta(days=31):
            raise ArgError("the end must be after the start and at most 31 days later")
        busy = await self._busy(start, end)
        clipped = [(max(a, start), min(b, end)) for a, b in merge(busy) if a < end and b > start]
        data = {"timezone": self.tz.key, "busy": [self._span(a, b) for a, b in clipped]}
        if not clipped:
            return Outcome(f"{self.ctx.user_name} is free {self.voice.span(start, end)}.", "ok", data=data)
        more = f", and {len(clipped) - 4} more times" if len(clipped) > 4 else ""
        spoken = self.voice.ranges(clipped[:4])
        text = f"{self.ctx.user_name} is busy {spoken}{more}. The rest of that time is free."
        return Outcome(text, "ok", data=data)

    async def find_open_slots(self) -> Outcome:
        after, before = self._maybe_time("after"), self._maybe_time("before")
        length = timedelta(minutes=self._minutes("duration_minutes"))
        start, stop = max(self.earliest, after or self.earliest), min(self.limit, before or self.limit)
        if start >= stop:
            text = f"I can only offer times from {self._say(self.earliest)} to {self._say(self.limit)}."
            return Outcome(text, "out_of_range")
        found = await self._search(start, stop, length)
        minutes = int(length.total_seconds() // 60)
        data: dict[str, Any] = {"timezone": self.tz.key, "durationMinutes": minutes, "slots": self._spans(found)}
        if found:
            text = f"The next open times are {self.voice.choices([a for a, _ in found])}. "
            return Outcome(text + self._exact(found, minutes), "ok", data=data)
        nothing = f"There are no open {minutes}-minute times {self.voice.period(start, stop)}"
        # Nothing in the asked-for range (a weekend, a full day): offer the next days that have openings.
        ahead = min(self.limit, stop + timedelta(days=self.s.search_ahead_days))
        later = await self._search(stop, ahead, length) if stop < ahead else []
        if not later:
            return Outcome(f"{nothing}, and none in the days after that I can book.", "none", data=data)
        data |= {"slots": self._spans(later), "requestedRangeEmpty": True}
        text = f"{nothing}. The next open times are {self.voice.choices([a for a, _ in later])}. "
        return Outcome(text + self._exact(later, minutes), "ok", data=data)

    async def book_appointment(self) -> Outcome:
        start = self._time("start")
        end = self._maybe_time("end") or start + timedelta(minutes=self.s.slot_minutes)
        text = CallerText(self.args, self.ctx.caller_number)
        if not text.name:
            raise ArgError("name is missing")
        if text.email and not _EMAIL.match(text.email):
            raise ArgError("that email address doesn't look complete")
        self._check_length(start, end)
        problem = self._problem(start, end)
        if problem is None:
            call_id, number = self.ctx.call_id, self.ctx.caller_number
            busy, recent = await both(
                lambda: self._busy(start - self.buffer, end + self.buffer),
                lambda: self.cal.events(
                    self.conn,
                    self.s.calendar_id,
                    start=self.now - RECENT,
                    end=self.limit + timedelta(days=1),
                    marks=recent_filter(call_id, number),
                    include_cancelled=True,
                ),
            )
            # Busy may be this call's own earlier booking of the slot (a retry): claiming finds it again.
            if is_free(busy, start, end, buffer=self.buffer) or any(holds_slot(e, call_id, start, end) for e in recent):
                limit = booking_refusal(
                    recent, self.s, call_id=call_id, number=number, email=text.email, start=start, end=end, now=self.now
                )
                if limit is not None:
                    return Outcome(f"{limit} Anything more has to go through the office directly.", "limited")
                claim = await claim_slot(
                    self.cal,
                    self.conn,
                    self.s.calendar_id,
                    new_booking(text, start, end, self.tz, call_id=call_id, number=number),
                    call_id=call_id,
                    buffer=self.buffer,
                    notify=bool(text.email),
                    time_left=self.time_left,
                )
                return await self._claimed(claim, start, end)
            problem = "that time is already taken"
        return await self._refuse(f"book {self._say(start)}", problem, start, end - start)

    async def _claimed(self, claim: Claim, start: datetime, end: datetime) -> Outcome:
        when = self.voice.span(start, end)
        if claim.state == "unconfirmed":
            text = (
                f"I'm not sure the booking {when} went through: the calendar is answering too slowly. "
                "Ask me to book the same time again in a moment; that will not book it twice."
            )
            return Outcome(text, "unconfirmed", ok=False, data={"booked": None, **self._span(start, end)})
        if claim.state == "lost":
            return await self._refuse(f"book {self._say(start)}", "someone else just booked it", start, end - start)
        assert claim.event is not None
        reference = claim.event.marks.get("vapiBookingRef")
        data: dict[str, Any] = {"booked": True, "alreadyExisted": claim.state == "existed", **self._span(start, end)}
        text = f"Booked with {self.ctx.user_name} {when}."
        if isinstance(reference, str) and reference:
            data["reference"] = reference
            text += (
                f" Booking reference: {speak_reference(reference)}. Tell the caller: they need it to change or "
                "cancel on a later call."
            )
        return Outcome(text, "ok", data=data)

    async def cancel_appointment(self) -> Outcome:
        found = await self._find_booking(None)
        if isinstance(found, Outcome):
            return found
        start, _ = found.span()
        if not found.cancelled:
            await self.cal.cancel(self.conn, self.s.calendar_id, found.id, notify=found.guests)
        data = {"cancelled": True, "start": self._iso(start)}
        return Outcome(f"The appointment on {self._say(start)} is cancelled.", "ok", data=data)

    async def reschedule_appointment(self) -> Outcome:
        new_start, given_end = self._time("new_start"), self._maybe_time("new_end")
        # The free check is read beside the appointment's lookup, over the longest it can be when no end is given.
        read_to = given_end if given_end is not None and new_start < given_end <= new_start + _LONGEST else None
        read_to = (read_to or new_start + _LONGEST) + self.buffer
        found, around = await both(
            lambda: self._find_booking(new_start), lambda: self._busy(new_start - self.buffer, read_to)
        )
        if isinstance(found, Outcome):
            return found
        if found.cancelled:
            return Outcome("That appointment was cancelled, so it can't be moved.", "not_found")
        old_start, old_end = found.span()
        new_end = given_end or new_start + (old_end - old_start)
        self._check_length(new_start, new_end)
        problem = self._problem(new_start, new_end)
        if problem is None:
            # freeBusy counts the appointment itself, which may overlap its own new time.
            busy = subtract(around, [(old_start, old_end)])
            if is_free(busy, new_start, new_end, buffer=self.buffer):
                event_id, notify = found.id, found.guests
                if notify and not await self.counts.take(self.ctx.call_id, "notified_move"):
                    return Outcome(NO_MORE_MOVES, "limited")  # each move e-mails every guest: so many a call
                await self._move(event_id, new_start, new_end, notify=notify)
                low, high = new_start - self.buffer, new_end + self.buffer
                if not await contested(self.cal, self.conn, self.s.calendar_id, event_id, low, high):
                    data = {"rescheduled": True, **self._span(new_start, new_end)}
                    text = f"Done: the appointment is now {self.voice.span(new_start, new_end)}."
                    return Outcome(text, "ok", data=data)
                # A booking landed there meanwhile (another replica): it keeps the time, this one moves back.
                await self._move(event_id, old_start, old_end, notify=notify)
                problem = "someone else just booked it"
            else:
                problem = "that time is already taken"
        action = f"move the appointment to {self._say(new_start)}"
        return await self._refuse(action, problem, new_start, new_end - new_start)

    async def _move(self, event_id: str, start: datetime, end: datetime, *, notify: bool) -> None:
        await self.cal.move(
            self.conn, self.s.calendar_id, event_id, start=start, end=end, timezone=self.tz, notify=notify
        )

    async def _find_booking(self, also_at: datetime | None) -> Event | Outcome:
        """The appointment to change: one booked on this call, or one booked from this number whose booking
        reference the caller gave. Times of other bookings are never said before the reference matched."""
        when = self._maybe_time("appointment_start")
        call_id, number = self.ctx.call_id, self.ctx.caller_number
        raw_reference = self.args.get("reference")
        reference = normalise(raw_reference)
        if raw_reference not in (None, "") and reference is None:
            raise ArgError("the booking reference is the six-digit number given at booking")
        if reference is not None and await self.counts.exhausted(call_id, "wrong_reference"):
            return Outcome(NO_MORE_TRIES, "forbidden", ok=False)
        if reference is not None and number is not None:
            wanted = {"vapiCallerNumber": number, "vapiBookingRef": reference}
        else:
            wanted = {"vapiCallId": call_id}
        horizon = self.now + timedelta(days=366)
        # With deleted ones: a retried cancel finds its appointment cancelled, not a wrong reference.
        events = await self.cal.events(
            self.conn, self.s.calendar_id, start=self.now, end=horizon, marks=wanted, include_cancelled=True
        )
        mine = [e for e in events if reference is not None or not e.cancelled]
        if reference is not None and not mine:
            await self.counts.record(call_id, "wrong_reference")
            exhausted = await self.counts.exhausted(call_id, "wrong_reference")
            return Outcome(NO_MORE_TRIES if exhausted else WRONG_REFERENCE, "forbidden", ok=False)
        matches = [e for e in mine if when is None or e.span()[0] == when]
        if not matches and also_at is not None:  # a retried reschedule: the appointment already moved
            matches = [e for e in mine if e.span()[0] == also_at]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            if reference is None and number is not None:
                return Outcome(NEED_REFERENCE, "reference_needed", ok=False)
            at = f" at {self._say(when)}" if when else ""
            return Outcome(f"I couldn't find an upcoming appointment{at} booked on this call.", "not_found")
        spoken = join_words([self._say(e.span()[0]) for e in matches], "and")
        data = {"appointments": [self._span(*e.span()) for e in matches]}
        return Outcome(
            f"There are {len(matches)} appointments booked on this call: {spoken}. Which one?", "ambiguous", data=data
        )

    async def _refuse(self, action: str, problem: str, around: datetime, length: timedelta) -> Outcome:
        """Say why `action` can't be done and offer the open times nearest to `around` (same day first)."""
        intro = f"I can't {action}: {problem}."
        day_start = around.astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        start = max(self.earliest, day_start)
        found = await self._search(start, self.limit, length) if start < self.limit else []
        minutes = int(length.total_seconds() // 60)
        data = {"done": False, "reason": problem, "alternatives": self._spans(found)}
        if not found:
            return Outcome(f"{intro} I couldn't find another open time soon.", "refused", data=data)
        offers = self.voice.choices([a for a, _ in found])
        return Outcome(
            f"{intro} The closest open times are {offers}. {self._exact(found, minutes)}", "refused", data=data
        )

    def _problem(self, start: datetime, end: datetime) -> str | None:
        if start < self.now:
            return "that time has already passed"
        if start < self.earliest - _NOTICE_GRACE:
            return f"that's too soon, I need at least {speak_minutes(self.s.min_notice_minutes)} notice"
        if end > self.limit:
            return f"I can only book up to {self.s.horizon_days} days ahead"
        if not within_working_hours(start, end, tz=self.tz, hours=self.s.working_hours):
            return f"that's outside {self.ctx.user_name}'s working hours"
        return None

    async def _search(self, start: datetime, stop: datetime, length: timedelta) -> list[Interval]:
        """Open slots in [start, stop): the first window alone; when it has too few, the rest all at once."""
        low = start - self.buffer
        reached = min(stop, low + _FIRST_WINDOW)
        # Read a buffer past a window: a slot ending at the window's edge needs that much clear after it.
        busy = await self._busy(low, reached + self.buffer)
        found = self._open(busy, start, reached, length)
        if len(found) >= self.s.max_slots or reached >= stop:
            return found
        edges = [(at, min(stop, at + _WINDOW)) for at in _steps(reached, stop, _WINDOW)]
        reads = await every([partial(self._busy, a, b + self.buffer) for a, b in edges])
        return self._open([*busy, *(interval for read in reads for interval in read)], start, stop, length)

    def _open(self, busy: list[Interval], start: datetime, stop: datetime, length: timedelta) -> list[Interval]:
        hours, count, buffer = self.s.working_hours, self.s.max_slots, self.buffer
        found = open_slots(
            busy, tz=self.tz, hours=hours, start=start, length=length, count=count, buffer=buffer, horizon=stop - start
        )
        return found

    async def _busy(self, start: datetime, end: datetime) -> list[Interval]:
        return await self.cal.free_busy(self.conn, self.s.calendar_id, start=start, end=end)

    def _time(self, key: str) -> datetime:
        value = self._maybe_time(key)
        if value is None:
            raise ArgError(f"{key} is missing")
        return value

    def _maybe_time(self, key: str) -> datetime | None:
        raw = self.args.get(key)
        if raw is None or raw == "":
            return None
        try:
            parsed = parse_time(raw, self.tz)
        except ValueError as exc:
            raise ArgError(f"{key}: {exc}") from None
        self.assumed = self.assumed or parsed.assumed_zone
        return parsed.value

    def _minutes(self, key: str) -> int:
        raw = self.args.get(key)
        if raw is None or raw == "":
            return self.s.slot_minutes
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw)
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or not 5 <= raw <= 480:
            raise ArgError(f"{key} must be a whole number of minutes from 5 to 480")
        return raw

    def _check_length(self, start: datetime, end: datetime) -> None:
        if not timedelta(0) < end - start <= _LONGEST:
            raise ArgError("an appointment must end after it starts and last at most 8 hours")

    def _say(self, moment: datetime) -> str:
        return self.voice.when(moment)

    def _iso(self, moment: datetime) -> str:
        """Times go out in the user's local offset: what the model should send back, and easier to check."""
        return _iso(moment.astimezone(self.tz))

    def _span(self, start: datetime, end: datetime) -> dict[str, str]:
        return {"start": self._iso(start), "end": self._iso(end)}

    def _spans(self, intervals: Sequence[Interval]) -> list[dict[str, str]]:
        return [self._span(a, b) for a, b in intervals]

    def _exact(self, slots: Sequence[Interval], minutes: int) -> str:
        starts = ", ".join(self._iso(a) for a, _ in slots)
        return f"(Each is {minutes} minutes; exact start times for booking: {starts}.)"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _steps(start: datetime, stop: datetime, step: timedelta) -> list[datetime]:
    count = math.ceil((stop - start) / step)
    return [start + step * i for i in range(count)]
