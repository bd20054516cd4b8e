"""Calendar tools in proxy mode: Vapi `function` tool definitions, and the answer to `tool-calls`.

Each answer is `ToolCallResult`-shaped. Vapi adds `result`/`error` to the conversation, so the text is
short and speakable and also carries the exact ISO times the model needs for a follow-up call;
`metadata` (sent to Vapi clients, not the model) holds the same facts as structured data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from proxy.gcal import CalendarError, GoogleCalendar
from proxy.metrics import Metrics
from proxy.slots import (
    CalendarSettings,
    Interval,
    is_free,
    join_words,
    merge,
    open_slots,
    parse_time,
    speak_choices,
    speak_datetime,
    speak_range,
    speak_ranges,
    subtract,
    within_working_hours,
)

__all__ = ["TOOL_NAMES", "CalendarContext", "answer_tool_calls", "booking_id", "caller_of", "function_tools"]

logger = logging.getLogger(__name__)

TOOL_NAMES = (
    "check_availability",
    "find_open_slots",
    "book_appointment",
    "cancel_appointment",
    "reschedule_appointment",
)
# Writes run one at a time within a message, so two bookings in one batch cannot both pass the free check.
_WRITES = frozenset({"book_appointment", "cancel_appointment", "reschedule_appointment"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OFFSET_RULE = (
    "ISO 8601 date-time with an explicit UTC offset for the calendar's time zone on that date, "
    "e.g. 2026-03-10T14:30:00-04:00. Never omit the offset."
)
# freeBusy is read in windows: one request covers a usual horizon, a long one is read only as far as needed.
_WINDOW = timedelta(days=15)
UNREACHABLE = "I can't reach the calendar right now. Please try again in a moment."
TOO_SLOW = "I can't reach the calendar right now; it's taking too long to answer. Please try again in a moment."


@dataclass(frozen=True)
class CalendarContext:
    """Who the call is for and who is calling, resolved by the caller from the tool-calls message."""

    user_id: str
    user_name: str
    timezone: ZoneInfo
    connection_id: str | None
    settings: CalendarSettings
    call_id: str
    caller_number: str | None


def function_tools(server: Mapping[str, object]) -> list[dict[str, object]]:
    """The five Vapi `function` tools, each sending its `tool-calls` to `server` (a Vapi Server object)."""

    def when(text: str) -> dict[str, object]:
        return {"type": "string", "format": "date-time", "description": f"{text} {_OFFSET_RULE}"}

    def text(description: str) -> dict[str, object]:
        return {"type": "string", "description": description}

    which = {
        "appointment_start": when("Start of the caller's existing appointment, to pick it if they have several."),
        "event_id": text("Event id from an earlier booking result, if known."),
    }
    specs: list[tuple[str, str, dict[str, object], list[str]]] = [
        (
            "check_availability",
            "Check when the calendar owner is busy or free between two times.",
            {"start": when("Start of the time range."), "end": when("End of the time range.")},
            ["start", "end"],
        ),
        (
            "find_open_slots",
            "Find the next open appointment times in the owner's working hours. Offer the caller these exact "
            "times instead of guessing.",
            {
                "after": when("Earliest start wanted; omit for as soon as possible."),
                "before": when("Latest end wanted; omit for no limit."),
                "duration_minutes": {"type": "integer", "description": "Length in minutes; omit for the default."},
            },
            [],
        ),
        (
            "book_appointment",
            "Book an appointment at a time the caller agreed to, normally one from find_open_slots. The time "
            "is re-checked; if it was taken, the answer offers alternatives.",
            {
                "start": when("Start of the appointment."),
                "end": when("End of the appointment; omit for the default length."),
                "name": text("The caller's name."),
                "email": text("The caller's email for an invitation, if they gave one."),
                "phone": text("A callback number, if different from the number they are calling from."),
                "summary": text("A short title, e.g. 'Consultation'."),
                "notes": text("Anything the caller wants the owner to know."),
            },
            ["start", "name"],
        ),
        (
            "cancel_appointment",
            "Cancel an upcoming appointment booked from the caller's phone number.",
            dict(which),
            [],
        ),
        (
            "reschedule_appointment",
            "Move an upcoming appointment booked from the caller's phone number to a new time.",
            {
                "new_start": when("New start time."),
                "new_end": when("New end time; omit to keep the same length."),
                **which,
            },
            ["new_start"],
        ),
    ]
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            },
            "server": dict(server),
        }
        for name, description, properties, required in specs
    ]


def caller_of(message: Mapping[str, object]) -> tuple[str, str | None]:
    """The call id and the caller's number (None when withheld or SIP) of a Vapi server message."""
    call = message.get("call")
    call = call if isinstance(call, dict) else {}
    customer = message.get("customer") or call.get("customer")
    number = customer.get("number") if isinstance(customer, dict) else None
    call_id = call.get("id")
    return (call_id if isinstance(call_id, str) else "", number if isinstance(number, str) and number else None)


def booking_id(call_id: str, start: datetime, end: datetime, calendar_id: str) -> str:
    """A Google event id (base32hex, 52 chars) fixed by call and slot, so a retried booking is the same event."""
    key = "\n".join((call_id, _iso(start.astimezone(UTC)), _iso(end.astimezone(UTC)), calendar_id))
    return base64.b32hexencode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=").lower()


@dataclass(frozen=True)
class _Call:
    id: str
    name: str
    arguments: object


@dataclass(frozen=True)
class _Outcome:
    text: str
    label: str
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)


class _ArgError(ValueError):
    pass


async def answer_tool_calls(
    message: Mapping[str, object],
    ctx: CalendarContext,
    calendar: GoogleCalendar,
    metrics: Metrics,
    *,
    now: datetime,
    timeout: float = 10.0,
) -> dict[str, object]:
    """Answer every call of a `tool-calls` message, concurrently, within `timeout` seconds overall.

    Never raises: failures become speakable `error` results. Set `timeout` below the tool server's
    `timeoutSeconds` so Vapi gets the answer before it gives up.
    """
    calls = _calls_of(message)
    results: list[dict[str, object]] = [{} for _ in calls]
    writes = anyio.Lock()
    deadline = anyio.current_time() + timeout

    async def run(index: int, call: _Call) -> None:
        outcome = _Outcome(TOO_SLOW, "timeout", ok=False)
        with anyio.CancelScope(deadline=deadline):
            outcome = await _answer(call, ctx, calendar, now, writes)
        metrics.tool_calls.labels(tool=call.name if call.name in TOOL_NAMES else "unknown", result=outcome.label).inc()
        results[index] = _result(call, outcome)

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(run, index, call)
    return {"results": results}


def _calls_of(message: Mapping[str, object]) -> list[_Call]:
    items = message.get("toolCallList")
    if not isinstance(items, list) or not items:
        wrapped = message.get("toolWithToolCallList")
        items = [w.get("toolCall") for w in wrapped if isinstance(w, dict)] if isinstance(wrapped, list) else []
    calls = []
    for item in items:
        if not isinstance(item, dict):
            continue
        call_id, function = item.get("id"), item.get("function")
        if isinstance(call_id, str) and call_id and isinstance(function, dict):
            calls.append(_Call(call_id, str(function.get("name") or ""), function.get("arguments")))
    return calls


def _result(call: _Call, outcome: _Outcome) -> dict[str, object]:
    answer: dict[str, object] = {"toolCallId": call.id, "name": call.name or "unknown"}
    answer["result" if outcome.ok else "error"] = outcome.text
    if outcome.data:
        answer["metadata"] = outcome.data
    return answer


async def _answer(
    call: _Call, ctx: CalendarContext, calendar: GoogleCalendar, now: datetime, writes: anyio.Lock
) -> _Outcome:
    if call.name not in TOOL_NAMES:
        return _Outcome(f"Unknown tool {call.name!r}; this server handles {', '.join(TOOL_NAMES)}.", "unknown", False)
    if ctx.connection_id is None:
        text = (
            f"The calendar isn't connected yet, so I can't check or book times. "
            f"{ctx.user_name} needs to connect their Google Calendar first."
        )
        return _Outcome(text, "not_connected", ok=False)
    try:
        tools = _Tools(ctx, calendar, ctx.connection_id, now, _arguments(call.arguments))
        handler = {
            "check_availability": tools.check_availability,
            "find_open_slots": tools.find_open_slots,
            "book_appointment": tools.book_appointment,
            "cancel_appointment": tools.cancel_appointment,
            "reschedule_appointment": tools.reschedule_appointment,
        }[call.name]
        if call.name in _WRITES:
            async with writes:
                outcome = await handler()
        else:
            outcome = await handler()
        return outcome if not tools.assumed else _with_zone_note(outcome, ctx.timezone)
    except _ArgError as exc:
        return _Outcome(f"I couldn't use that request: {exc}.", "invalid_arguments", ok=False)
    except CalendarError as exc:
        logger.warning("tool %s for user %s failed: %s", call.name, ctx.user_id, exc)
        return _failure(exc, ctx)
    except Exception:
        logger.exception("tool %s for user %s crashed", call.name, ctx.user_id)
        return _Outcome(UNREACHABLE, "error", ok=False)


def _failure(exc: CalendarError, ctx: CalendarContext) -> _Outcome:
    texts = {
        "auth": (
            f"I can't open {ctx.user_name}'s calendar right now because its connection needs to be renewed. "
            f"{ctx.user_name} has to reconnect their Google Calendar; please try again later."
        ),
        "not_found": "I couldn't find that in the calendar.",
        "conflict": "The calendar changed while I was doing that. Please try again.",
        "invalid": "The calendar didn't accept that request.",
        "timeout": TOO_SLOW,
    }
    return _Outcome(texts.get(exc.kind, UNREACHABLE), exc.kind, ok=False)


def _with_zone_note(outcome: _Outcome, tz: ZoneInfo) -> _Outcome:
    note = f" (Times given without a UTC offset were read as {tz.key} time.)"
    return _Outcome(outcome.text + note, outcome.label, outcome.ok, outcome.data | {"assumedTimeZone": tz.key})


def _arguments(raw: object) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _ArgError("the arguments were not valid JSON") from None
    if not isinstance(raw, dict):
        raise _ArgError("the arguments must be a JSON object")
    return raw


class _Tools:
    """The five tools for one call; methods are named after the tools."""

    def __init__(
        self, ctx: CalendarContext, calendar: GoogleCalendar, connection: str, now: datetime, args: dict[str, Any]
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.ctx, self.cal, self.conn, self.args = ctx, calendar, connection, args
        self.s, self.tz, self.now = ctx.settings, ctx.timezone, now.astimezone(UTC)
        self.earliest = self.now + timedelta(minutes=self.s.min_notice_minutes)
        self.limit = self.now + timedelta(days=self.s.horizon_days)
        self.buffer = timedelta(minutes=self.s.buffer_minutes)
        self.assumed = False

    async def check_availability(self) -> _Outcome:
        start, end = self._time("start"), self._time("end")
        if end <= start or end - start > timedelta(days=31):
            raise _ArgError("the end must be after the start and at most 31 days later")
        busy = await self._busy(start, end)
        clipped = [(max(a, start), min(b, end)) for a, b in merge(busy) if a < end and b > start]
        data = {"timezone": self.tz.key, "busy": [_span(a, b) for a, b in clipped]}
        if not clipped:
            return _Outcome(f"{self.ctx.user_name} is free {speak_range(start, end, self.tz)}.", "ok", data=data)
        more = f", and {len(clipped) - 4} more times" if len(clipped) > 4 else ""
        spoken = speak_ranges(clipped[:4], self.tz)
        text = f"{self.ctx.user_name} is busy {spoken}{more}. The rest of that time is free."
        return _Outcome(text, "ok", data=data)

    async def find_open_slots(self) -> _Outcome:
        after, before = self._maybe_time("after"), self._maybe_time("before")
        length = timedelta(minutes=self._minutes("duration_minutes"))
        start, stop = max(self.earliest, after or self.earliest), min(self.limit, before or self.limit)
        if start >= stop:
            text = f"I can only offer times from {self._say(self.earliest)} to {self._say(self.limit)}."
            return _Outcome(text, "out_of_range")
        found = await self._search(start, stop, length)
        minutes = int(length.total_seconds() // 60)
        data: dict[str, Any] = {"timezone": self.tz.key, "durationMinutes": minutes, "slots": _spans(found)}
        if not found:
            text = f"There are no open {minutes}-minute times between {self._say(start)} and {self._say(stop)}."
            return _Outcome(text, "none", data=data)
        text = f"The next open times are {speak_choices([a for a, _ in found], self.tz)}. " + _exact(found, minutes)
        return _Outcome(text, "ok", data=data)

    async def book_appointment(self) -> _Outcome:
        start = self._time("start")
        end = self._maybe_time("end") or start + timedelta(minutes=self.s.slot_minutes)
        name, email = self._text("name", 100, required=True), self._text("email", 254)
        phone, notes = self._text("phone", 40) or self.ctx.caller_number, self._text("notes", 1000)
        if email and not _EMAIL.match(email):
            raise _ArgError("that email address doesn't look complete")
        self._check_length(start, end)
        event_id = booking_id(self.ctx.call_id, start, end, self.s.calendar_id)
        problem = self._problem(start, end)
        if problem is None:
            busy = await self._busy(start - self.buffer, end + self.buffer)
            if is_free(busy, start, end, buffer=self.buffer):
                lines = [notes, f"Name: {name}", f"Phone: {phone}" if phone else "", f"Email: {email}" if email else ""]
                private = {"vapiCallId": self.ctx.call_id}
                if self.ctx.caller_number:
                    private["vapiCallerNumber"] = self.ctx.caller_number
                event: dict[str, Any] = {
                    "summary": self._text("summary", 200) or f"Appointment with {name}",
                    "description": "\n".join(line for line in lines if line) + "\nBooked by the voice assistant.",
                    "start": self._google_time(start),
                    "end": self._google_time(end),
                    "extendedProperties": {"private": private},
                }
                if email:
                    event["attendees"] = [{"email": email, "displayName": name}]
                inserted = await self.cal.insert_event(
                    self.conn, self.s.calendar_id, event, event_id=event_id, send_updates="all" if email else "none"
                )
                return self._booked(event_id, start, end, created=inserted.created)
            existing = await self._event_or_none(event_id)
            if existing is not None and existing.get("status") != "cancelled":
                return self._booked(event_id, start, end, created=False)
            problem = "that time is already taken"
        return await self._refuse(f"I can't book {self._say(start)}: {problem}.", start, end - start)

    async def cancel_appointment(self) -> _Outcome:
        found = await self._find_booking(None)
        if isinstance(found, _Outcome):
            return found
        start, _ = _event_span(found)
        if found.get("status") != "cancelled":
            updates = "all" if found.get("attendees") else "none"
            await self.cal.delete_event(self.conn, self.s.calendar_id, str(found["id"]), send_updates=updates)
        data = {"cancelled": True, "eventId": found["id"], "start": _iso(start)}
        return _Outcome(f"The appointment on {self._say(start)} is cancelled.", "ok", data=data)

    async def reschedule_appointment(self) -> _Outcome:
        new_start = self._time("new_start")
        found = await self._find_booking(new_start)
        if isinstance(found, _Outcome):
            return found
        if found.get("status") == "cancelled":
            return _Outcome("That appointment was cancelled, so it can't be moved.", "not_found")
        old_start, old_end = _event_span(found)
        new_end = self._maybe_time("new_end") or new_start + (old_end - old_start)
        self._check_length(new_start, new_end)
        problem = self._problem(new_start, new_end)
        if problem is None:
            # freeBusy counts the appointment itself, which may overlap its own new time.
            busy = subtract(await self._busy(new_start - self.buffer, new_end + self.buffer), [(old_start, old_end)])
            if is_free(busy, new_start, new_end, buffer=self.buffer):
                changes = {"start": self._google_time(new_start), "end": self._google_time(new_end)}
                updates = "all" if found.get("attendees") else "none"
                await self.cal.patch_event(
                    self.conn, self.s.calendar_id, str(found["id"]), changes, send_updates=updates
                )
                data = {"rescheduled": True, "eventId": found["id"], **_span(new_start, new_end)}
                return _Outcome(
                    f"Done: the appointment is now {speak_range(new_start, new_end, self.tz)}.", "ok", data=data
                )
            problem = "that time is already taken"
        intro = f"I can't move the appointment to {self._say(new_start)}: {problem}."
        return await self._refuse(intro, new_start, new_end - new_start)

    async def _find_booking(self, also_at: datetime | None) -> dict[str, Any] | _Outcome:
        """The caller's appointment named by `event_id`, by `appointment_start`, or their only upcoming one."""
        event_id, when = self._text("event_id", 1024), self._maybe_time("appointment_start")
        if event_id:
            event = await self._event_or_none(event_id)
            if event is None:
                return _Outcome("I couldn't find that appointment.", "not_found")
            return event if self._owned(event) else _Outcome(_NOT_YOURS, "forbidden")
        by_caller = (
            {"vapiCallerNumber": self.ctx.caller_number} if self.ctx.caller_number else {"vapiCallId": self.ctx.call_id}
        )
        events = await self.cal.list_events(
            self.conn, self.s.calendar_id, start=self.now, end=self.now + timedelta(days=366), private=by_caller
        )
        mine = [e for e in events if self._owned(e) and e.get("status") != "cancelled"]
        matches = [e for e in mine if when is None or _event_span(e)[0] == when]
        if not matches and also_at is not None:  # a retried reschedule: the appointment already moved
            matches = [e for e in mine if _event_span(e)[0] == also_at]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            at = f" at {self._say(when)}" if when else ""
            return _Outcome(f"I couldn't find an upcoming appointment{at} booked from this phone number.", "not_found")
        spoken = join_words([self._say(_event_span(e)[0]) for e in matches], "and")
        data = {"appointments": [{"eventId": e.get("id"), **_span(*_event_span(e))} for e in matches]}
        return _Outcome(
            f"There are {len(matches)} appointments booked from this number: {spoken}. Which one?",
            "ambiguous",
            data=data,
        )

    async def _refuse(self, intro: str, around: datetime, length: timedelta) -> _Outcome:
        day_start = around.astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        start = max(self.earliest, day_start)
        found = await self._search(start, self.limit, length) if start < self.limit else []
        minutes = int(length.total_seconds() // 60)
        data = {"booked": False, "reason": intro, "alternatives": _spans(found)}
        if not found:
            return _Outcome(f"{intro} I couldn't find another open time soon.", "refused", data=data)
        offers = speak_choices([a for a, _ in found], self.tz)
        return _Outcome(f"{intro} The closest open times are {offers}. {_exact(found, minutes)}", "refused", data=data)

    def _booked(self, event_id: str, start: datetime, end: datetime, *, created: bool) -> _Outcome:
        data = {"booked": True, "eventId": event_id, "alreadyExisted": not created, **_span(start, end)}
        text = f"Booked with {self.ctx.user_name} {speak_range(start, end, self.tz)}. (Event id {event_id}.)"
        return _Outcome(text, "ok", data=data)

    def _problem(self, start: datetime, end: datetime) -> str | None:
        if start < self.now:
            return "that time has already passed"
        if start < self.earliest:
            return f"that's too soon, I need at least {_speak_minutes(self.s.min_notice_minutes)} notice"
        if end > self.limit:
            return f"I can only book up to {self.s.horizon_days} days ahead"
        if not within_working_hours(start, end, tz=self.tz, hours=self.s.working_hours):
            return f"that's outside {self.ctx.user_name}'s working hours"
        return None

    async def _search(self, start: datetime, stop: datetime, length: timedelta) -> list[Interval]:
        """Open slots in [start, stop), reading freeBusy a window at a time until enough are found."""
        busy: list[Interval] = []
        reached = start - self.buffer
        while True:
            window_end = min(stop, reached + _WINDOW)
            # Read a buffer past the window: a slot ending at the window's edge needs that much clear after it.
            busy += await self._busy(reached, window_end + self.buffer)
            found = open_slots(
                busy,
                tz=self.tz,
                hours=self.s.working_hours,
                start=start,
                length=length,
                count=self.s.max_slots,
                buffer=self.buffer,
                horizon=window_end - start,
            )
            if len(found) >= self.s.max_slots or window_end >= stop:
                return found
            reached = window_end

    async def _busy(self, start: datetime, end: datetime) -> list[Interval]:
        return await self.cal.free_busy(self.conn, self.s.calendar_id, start=start, end=end)

    async def _event_or_none(self, event_id: str) -> dict[str, Any] | None:
        try:
            return await self.cal.get_event(self.conn, self.s.calendar_id, event_id)
        except CalendarError as exc:
            if exc.kind == "not_found":
                return None
            raise

    def _owned(self, event: Mapping[str, Any]) -> bool:
        props = event.get("extendedProperties")
        private = props.get("private") if isinstance(props, dict) else None
        if not isinstance(private, dict):
            return False
        number = self.ctx.caller_number
        return private.get("vapiCallId") == self.ctx.call_id or (
            number is not None and private.get("vapiCallerNumber") == number
        )

    def _time(self, key: str) -> datetime:
        value = self._maybe_time(key)
        if value is None:
            raise _ArgError(f"{key} is missing")
        return value

    def _maybe_time(self, key: str) -> datetime | None:
        raw = self.args.get(key)
        if raw is None or raw == "":
            return None
        try:
            parsed = parse_time(raw, self.tz)
        except ValueError as exc:
            raise _ArgError(f"{key}: {exc}") from None
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
            raise _ArgError(f"{key} must be a whole number of minutes from 5 to 480")
        return raw

    def _text(self, key: str, limit: int, *, required: bool = False) -> str | None:
        raw = self.args.get(key)
        value = str(raw).strip()[:limit] if isinstance(raw, str | int | float) else ""
        if required and not value:
            raise _ArgError(f"{key} is missing")
        return value or None

    def _check_length(self, start: datetime, end: datetime) -> None:
        if not timedelta(0) < end - start <= timedelta(hours=8):
            raise _ArgError("an appointment must end after it starts and last at most 8 hours")

    def _google_time(self, moment: datetime) -> dict[str, str]:
        return {"dateTime": _iso(moment.astimezone(self.tz)), "timeZone": self.tz.key}

    def _say(self, moment: datetime) -> str:
        return speak_datetime(moment, self.tz)


_NOT_YOURS = "I can only change appointments that were booked from this phone number."


def _event_span(event: Mapping[str, Any]) -> Interval:
    def read(key: str) -> datetime:
        value = event.get(key)
        text = value.get("dateTime") if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise CalendarError("invalid", f"event has no {key}.dateTime")
        return datetime.fromisoformat(text)

    return read("start"), read("end")


def _exact(slots: Sequence[Interval], minutes: int) -> str:
    return f"(Each is {minutes} minutes; exact start times for booking: {', '.join(_iso(a) for a, _ in slots)}.)"


def _span(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": _iso(start), "end": _iso(end)}


def _spans(intervals: Sequence[Interval]) -> list[dict[str, str]]:
    return [_span(a, b) for a, b in intervals]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _speak_minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if rest or not hours:
        return f"{minutes} minutes'"
    return f"{hours} hour's" if hours == 1 else f"{hours} hours'"
