"""Calendar tools in proxy mode: Vapi `function` tool definitions, and the answer to `tool-calls`.

Each answer is `ToolCallResult`-shaped. Vapi adds `result`/`error` to the conversation, so the text is
short and speakable and also carries the exact ISO times the model needs for a follow-up call;
`metadata` (sent to Vapi clients, not the model) holds the same facts as structured data. The tools
themselves, which read and write the calendar, are in `proxy.calendar.booking`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from proxy.calendar.abuse import CallCounts
from proxy.calendar.booking import ArgError, CalendarTools, Outcome
from proxy.calendar.claim import booking_id
from proxy.calendar.context import CalendarContext
from proxy.calendar.locks import LocalUserLocks, LockTimeout, UserLocks
from proxy.calendar.provider import CalendarError, CalendarProvider
from proxy.metrics import Metrics

__all__ = [
    "TOOL_NAMES",
    "CalendarContext",
    "answer_tool_calls",
    "booking_id",
    "caller_of",
    "failed_results",
    "function_tools",
    "not_served_results",
    "owns_any",
]

logger = logging.getLogger(__name__)

TOOL_NAMES = (
    "check_availability",
    "find_open_slots",
    "book_appointment",
    "cancel_appointment",
    "reschedule_appointment",
)
# Writes of one user run one at a time (proxy.calendar.locks), so two bookings cannot both pass the free check.
_WRITES = frozenset({"book_appointment", "cancel_appointment", "reschedule_appointment"})
_OFFSET_RULE = (
    "ISO 8601 date-time with an explicit UTC offset for the calendar's time zone on that date, "
    "e.g. 2026-03-10T14:30:00-04:00. Never omit the offset."
)
UNREACHABLE = "I can't reach the calendar right now. Please try again in a moment."
# Vapi's tool-calls answer has one result per call; each runs calendar requests, so a message gets a bounded
# share of the shared request cap. Past it a call is answered with an error at once (server.max_tool_calls).
MAX_TOOL_CALLS = 16
# Calls handled between two yields to the event loop: about 1 ms of work on a slow core.
_CALLS_PER_STEP = 128
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The tool's name is the model's choice and not speakable: the text does not repeat it.
NOT_SERVED = "Sorry, I can't do that on this call: that action isn't available here."
TOO_SLOW = "I can't reach the calendar right now; it's taking too long to answer. Please try again in a moment."


def function_tools(server: Mapping[str, object]) -> list[dict[str, object]]:
    """The five Vapi `function` tools, each sending its `tool-calls` to `server` (a Vapi Server object)."""

    def when(text: str) -> dict[str, object]:
        return {"type": "string", "format": "date-time", "description": f"{text} {_OFFSET_RULE}"}

    def text(description: str) -> dict[str, object]:
        return {"type": "string", "description": description}

    which = {
        "appointment_start": when("Start of the caller's existing appointment, to pick it if they have several."),
        "reference": text(
            "The six-digit booking reference the caller was given when they booked, digits only. Needed for "
            "an appointment booked on an earlier call; ask the caller for it."
        ),
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
            "Cancel an upcoming appointment the caller booked (on this call, or on an earlier one with its "
            "booking reference).",
            dict(which),
            [],
        ),
        (
            "reschedule_appointment",
            "Move an upcoming appointment the caller booked (on this call, or on an earlier one with its "
            "booking reference) to a new time.",
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


_NOT_SERVED = Outcome(NOT_SERVED, "not_served", ok=False)


@dataclass(frozen=True)
class _Call:
    id: str
    name: str
    arguments: object


async def answer_tool_calls(
    message: Mapping[str, object],
    ctx: CalendarContext,
    calendar: CalendarProvider,
    metrics: Metrics,
    *,
    now: datetime,
    timeout: float = 10.0,
    max_calls: int = MAX_TOOL_CALLS,
    locks: UserLocks | None = None,
    counts: CallCounts | None = None,
) -> dict[str, object]:
    """Answer every call of a `tool-calls` message, in order, within `timeout` seconds overall.

    The first `max_calls` of this proxy's tools run concurrently; every other call (past the cap, or a tool
    this proxy does not serve) gets its own speakable error, because Vapi sends a tool call only to the
    tool's server and nobody else will answer it. Never raises. Set `timeout` below the tool server's
    `timeoutSeconds` so Vapi gets the answer before it gives up.
    """
    results: list[dict[str, object]] = []
    writes = locks if locks is not None else LocalUserLocks()
    counted = counts if counts is not None else CallCounts()
    deadline = anyio.current_time() + timeout

    async def run(index: int, call: _Call) -> None:
        outcome = Outcome(TOO_SLOW, "timeout", ok=False)
        with anyio.CancelScope(deadline=deadline):
            outcome = await _answer(call, ctx, calendar, now, writes, deadline, counted)
        metrics.tool_calls.labels(tool=call.name, result=outcome.label).inc()
        if outcome.label == "unconfirmed":
            # The event may exist without the caller knowing: an admin alerts on this and checks the calendar.
            metrics.bookings_unconfirmed.inc()
            logger.warning(
                "booking for user %s on call %s unconfirmed: the calendar did not answer in time",
                ctx.user_id,
                ctx.call_id,
            )
        results[index] = _result(call, outcome)

    running = 0
    refused: Counter[tuple[str, str]] = Counter()  # counted once per message: a flood costs one inc per label
    too_many = Outcome(
        f"That was more than {max_calls} requests at once, so I skipped this one. Please ask for it again.",
        "too_many_calls",
        ok=False,
    )
    async with anyio.create_task_group() as group:
        for index, call in enumerate(_iter_calls(message)):
            if index % _CALLS_PER_STEP == _CALLS_PER_STEP - 1:
                await anyio.sleep(0)  # a flood of calls must not hold the event loop (issue 9: < 50 ms at a time)
            if call.name in TOOL_NAMES and running < max_calls:
                running += 1
                results.append({})
                group.start_soon(run, index, call)
                continue
            outcome = too_many if call.name in TOOL_NAMES else _NOT_SERVED
            refused[call.name if call.name in TOOL_NAMES else "unknown", outcome.label] += 1
            results.append(_result(call, outcome))
        for (tool, label), count in refused.items():
            metrics.tool_calls.labels(tool=tool, result=label).inc(count)
    return {"results": results}


def _iter_calls(message: Mapping[str, object]) -> Iterator[_Call]:
    items = message.get("toolCallList")
    if not isinstance(items, list) or not items:
        wrapped = message.get("toolWithToolCallList")
        items = [w.get("toolCall") for w in wrapped if isinstance(w, dict)] if isinstance(wrapped, list) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        call_id, function = item.get("id"), item.get("function")
        if isinstance(call_id, str) and call_id and isinstance(function, dict):
            yield _Call(call_id, _name_of(function.get("name")), function.get("arguments"))


def _calls_of(message: Mapping[str, object]) -> list[_Call]:
    return list(_iter_calls(message))


def _name_of(raw: object) -> str:
    """A function name as OpenAI and Vapi allow it (letters, digits, _ and -, at most 64), else "".

    Only a string is looked at: formatting anything else (a list nested 1,000 deep) could recurse."""
    return raw if isinstance(raw, str) and _FUNCTION_NAME.fullmatch(raw) else ""


def owns_any(message: Mapping[str, object]) -> bool:
    """Whether any call of a tool-calls message is for one of this proxy's tools."""
    return any(call.name in TOOL_NAMES for call in _iter_calls(message))


def failed_results(message: Mapping[str, object], text: str = UNREACHABLE) -> dict[str, object]:
    """The same speakable error for every call of a message: the answer when something unforeseen broke."""
    return {"results": [_result(call, Outcome(text, "error", False)) for call in _calls_of(message)]}


async def not_served_results(message: Mapping[str, object]) -> dict[str, object]:
    """A speakable error for each call of a message that names none of this proxy's tools."""
    results = []
    for index, call in enumerate(_iter_calls(message)):
        if index % _CALLS_PER_STEP == _CALLS_PER_STEP - 1:
            await anyio.sleep(0)
        results.append(_result(call, _NOT_SERVED))
    return {"results": results}


def _result(call: _Call, outcome: Outcome) -> dict[str, object]:
    answer: dict[str, object] = {"toolCallId": call.id, "name": call.name or "unknown"}
    answer["result" if outcome.ok else "error"] = outcome.text
    if outcome.data:
        answer["metadata"] = outcome.data
    return answer


async def _answer(
    call: _Call,
    ctx: CalendarContext,
    calendar: CalendarProvider,
    now: datetime,
    writes: UserLocks,
    deadline: float,
    counts: CallCounts,
) -> Outcome:
    if not ctx.user_id:
        text = "This phone number isn't set up with a calendar, so I can't check or book times on this call."
        return Outcome(text, "no_route", ok=False)
    if ctx.connection_id is None:
        text = (
            f"The calendar isn't connected yet, so I can't check or book times. "
            f"{ctx.user_name or 'The calendar owner'} needs to connect their {calendar.product} first."
        )
        return Outcome(text, "not_connected", ok=False)
    try:
        tools = CalendarTools(
            ctx,
            calendar,
            ctx.connection_id,
            now,
            _arguments(call.arguments),
            time_left=lambda: deadline - anyio.current_time(),
            counts=counts,
        )
        handler = {
            "check_availability": tools.check_availability,
            "find_open_slots": tools.find_open_slots,
            "book_appointment": tools.book_appointment,
            "cancel_appointment": tools.cancel_appointment,
            "reschedule_appointment": tools.reschedule_appointment,
        }[call.name]
        if call.name in _WRITES:
            # One user's check-then-write steps never interleave: not within a message, not across messages.
            key = f"{ctx.connection_id}\n{ctx.settings.calendar_id}"
            async with writes.hold(key, timeout=deadline - anyio.current_time()):
                outcome = await handler()
        else:
            outcome = await handler()
        return outcome if not tools.assumed else _with_zone_note(outcome, ctx.timezone)
    except ArgError as exc:
        return Outcome(f"I couldn't use that request: {exc}.", "invalid_arguments", ok=False)
    except CalendarError as exc:
        logger.warning("tool %s for user %s failed: %s", call.name, ctx.user_id, exc)
        return _failure(exc, ctx, calendar.product)
    except LockTimeout:
        return Outcome(TOO_SLOW, "timeout", ok=False)
    except Exception:
        logger.exception("tool %s for user %s crashed", call.name, ctx.user_id)
        return Outcome(UNREACHABLE, "error", ok=False)


def _failure(exc: CalendarError, ctx: CalendarContext, product: str) -> Outcome:
    texts = {
        "auth": (
            f"I can't open {ctx.user_name}'s calendar right now because its connection needs to be renewed. "
            f"{ctx.user_name} has to reconnect their {product}; please try again later."
        ),
        "not_found": "I couldn't find that in the calendar.",
        "conflict": "The calendar changed while I was doing that. Please try again.",
        "invalid": "The calendar didn't accept that request.",
        "timeout": TOO_SLOW,
    }
    return Outcome(texts.get(exc.kind, UNREACHABLE), exc.kind, ok=False)


def _with_zone_note(outcome: Outcome, tz: ZoneInfo) -> Outcome:
    note = f" (Times given without a UTC offset were read as {tz.key} time.)"
    return Outcome(outcome.text + note, outcome.label, outcome.ok, outcome.data | {"assumedTimeZone": tz.key})


def _arguments(raw: object) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ArgError("the arguments were not valid JSON") from None
        except RecursionError:
            raise ArgError("the arguments were nested too deeply") from None
    if not isinstance(raw, dict):
        raise ArgError("the arguments must be a JSON object")
    return raw
