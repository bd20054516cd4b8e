from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
import respx
from vapi.types import CreateFunctionToolDto, OpenAiModelToolsItem_Function, ServerMessageToolCalls

from proxy.calendar.abuse import CallCounts
from proxy.calendar.google import GoogleCalendar
from proxy.config.calendar import CalendarSettings, WorkingHours
from proxy.metrics import Metrics
from proxy.vapi.tools import (
    NOT_SERVED,
    TOOL_NAMES,
    CalendarContext,
    answer_tool_calls,
    booking_id,
    caller_of,
    function_tools,
)
from tests.contract import assert_tool_calls_response, unknown_keys
from tests.google_fakes import (
    DELETED,
    INVALID_CREDENTIALS,
    REFRESH_FAILED,
    FakeGoogle,
    google_event,
    make_calendar,
)
from tests.nango_fakes import BASE_URL

NY = ZoneInfo("America/New_York")
CALLER = "+14155550123"
CALL_ID = "0198c3a1-5e2f-7d41-9b8e-2a6c1f0e4d37"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=NY)  # Monday 08:00 EST: earliest bookable is 09:00
SERVER = {"url": "https://voice.example.com/vapi/webhook", "timeoutSeconds": 15, "credentialId": "cred_123"}
EVENTS_PATH = r"^/proxy/calendar/v3/calendars/primary/events"


def ctx(**overrides: Any) -> CalendarContext:
    values: dict[str, Any] = {
        "user_id": "usr_1",
        "user_name": "Dr. Doe",
        "timezone": NY,
        "connection_id": "conn-1",
        "settings": CalendarSettings(mode="proxy"),
        "call_id": CALL_ID,
        "caller_number": CALLER,
    }
    values.update(overrides)
    return CalendarContext(**values)


def message(*calls: tuple[str, dict[str, Any]], raw_arguments: bool = False) -> dict[str, Any]:
    """A tool-calls message as Vapi sends it; `arguments` is a JSON string as the SDK types it."""
    items: list[dict[str, Any]] = [
        {
            "id": f"toolu_{i}",
            "type": "function",
            "function": {"name": name, "arguments": args if raw_arguments else json.dumps(args)},
        }
        for i, (name, args) in enumerate(calls)
    ]
    return {
        "type": "tool-calls",
        "timestamp": 1772456400000,
        "toolCallList": items,
        "toolWithToolCallList": [
            {"type": "function", "function": {"name": c["function"]["name"]}, "server": SERVER, "toolCall": c}
            for c in items
        ],
        "call": {
            "id": CALL_ID,
            "orgId": "6b1f0c2e-9a7d-4e3b-8c51-0f2d9e7a4b10",
            "createdAt": "2026-03-02T13:00:00.000Z",
            "updatedAt": "2026-03-02T13:00:00.000Z",
            "type": "inboundPhoneCall",
            "phoneNumberId": "4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01",
            "customer": {"number": CALLER},
        },
        "customer": {"number": CALLER},
        "phoneNumber": {"id": "4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01", "number": "+16505550100"},
    }


REFERENCE = "246813"


def booked(
    event_id: str,
    start: str,
    end: str,
    *,
    number: str = CALLER,
    call_id: str = "earlier-call",
    reference: str = REFERENCE,
) -> dict[str, Any]:
    private = {"vapiCallId": call_id, "vapiCallerNumber": number, "vapiBookingRef": reference}
    return google_event(event_id, start, end, private=private)


async def answer(
    msg: dict[str, Any],
    context: CalendarContext | None = None,
    *,
    metrics: Metrics | None = None,
    timeout: float = 5.0,
    calendar: GoogleCalendar | None = None,
    counts: CallCounts | None = None,
) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        result = await answer_tool_calls(
            msg,
            context or ctx(),
            calendar or make_calendar(http),
            metrics or Metrics(),
            now=NOW,
            timeout=timeout,
            counts=counts,
        )
    assert_tool_calls_response(result)
    results: list[dict[str, Any]] = result["results"]  # type: ignore[assignment]
    return results


# --- tool definitions ------------------------------------------------------------------------


def test_function_tools_are_valid_vapi_function_tools() -> None:
    tools = function_tools(SERVER)
    assert [t["function"]["name"] for t in tools] == list(TOOL_NAMES)  # type: ignore[index]
    for tool in tools:
        parsed = OpenAiModelToolsItem_Function.model_validate(tool)
        assert unknown_keys(parsed) == [], tool
        # The create-tool DTO has no `type` (the model's tools list discriminates on it).
        dto = CreateFunctionToolDto.model_validate({k: v for k, v in tool.items() if k != "type"})
        assert unknown_keys(dto) == []
        assert parsed.server is not None and parsed.server.url == SERVER["url"]
        assert parsed.function is not None and parsed.function.parameters is not None
        for name, prop in parsed.function.parameters.properties.items():
            if prop.format == "date-time":
                assert prop.description is not None and "explicit UTC offset" in prop.description, name
            assert prop.description


def test_function_tools_copy_the_server() -> None:
    server = dict(SERVER)
    tools = function_tools(server)
    server["url"] = "changed"
    assert tools[0]["server"] == SERVER


def test_the_test_message_is_what_vapi_sends() -> None:
    ServerMessageToolCalls.model_validate(message(("find_open_slots", {})))


def test_caller_of_reads_call_id_and_number() -> None:
    assert caller_of(message()) == (CALL_ID, CALLER)
    assert caller_of({"call": {"id": "c", "customer": {"number": "+1"}}}) == ("c", "+1")
    assert caller_of({"call": {"id": "c", "customer": {"sipUri": "sip:x@y"}}}) == ("c", None)
    assert caller_of({}) == ("", None)


def test_booking_id_is_deterministic_base32hex() -> None:
    start, end = datetime(2026, 3, 2, 9, tzinfo=NY), datetime(2026, 3, 2, 9, 30, tzinfo=NY)
    first = booking_id(CALL_ID, start, end, "primary")
    assert first == booking_id(CALL_ID, start.astimezone(UTC), end, "primary")
    assert re.fullmatch(r"[0-9a-v]{52}", first)
    assert first != booking_id(CALL_ID, start, end + timedelta(minutes=15), "primary")
    assert first != booking_id("another-call", start, end, "primary")


# --- reading the calendar --------------------------------------------------------------------


@pytest.mark.anyio
async def test_check_availability_speaks_busy_times_in_the_user_zone() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.other_busy = [("2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z")]
        args = {"start": "2026-03-02T09:00:00-05:00", "end": "2026-03-02T17:00:00-05:00"}
        [result] = await answer(message(("check_availability", args)))
    assert result["toolCallId"] == "toolu_0" and result["name"] == "check_availability"
    assert result["result"] == (
        "Dr. Doe is busy on Monday, March 2 from 10 AM to 11 AM. The rest of that time is free."
    )
    assert result["metadata"]["busy"] == [{"start": "2026-03-02T10:00:00-05:00", "end": "2026-03-02T11:00:00-05:00"}]


@pytest.mark.anyio
async def test_check_availability_when_free_and_with_a_naive_time() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        args = {"start": "2026-03-03T09:00:00", "end": "2026-03-03T12:00:00-05:00"}
        [result] = await answer(message(("check_availability", args)))
    assert result["result"].startswith("Dr. Doe is free on Tuesday, March 3 from 9 AM to 12 PM.")
    assert "read as America/New_York time" in result["result"]
    assert result["metadata"]["assumedTimeZone"] == "America/New_York"


@pytest.mark.anyio
async def test_find_open_slots_offers_exact_times_after_busy_and_notice() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.other_busy = [("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z")]  # 09:00-10:00 local
        [result] = await answer(message(("find_open_slots", {})))
    assert result["result"].startswith("The next open times are Monday, March 2 at 10 AM, 10:30 AM, or 11 AM.")
    assert "2026-03-02T10:00:00-05:00" in result["result"]
    assert [s["start"] for s in result["metadata"]["slots"]] == [
        "2026-03-02T10:00:00-05:00",
        "2026-03-02T10:30:00-05:00",
        "2026-03-02T11:00:00-05:00",
    ]
    assert google.freebusy.call_count == 1


@pytest.mark.anyio
async def test_find_open_slots_respects_after_and_duration() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        args = {"after": "2026-03-04T16:00:00-05:00", "duration_minutes": "90"}
        [result] = await answer(message(("find_open_slots", args)))
    assert result["metadata"]["durationMinutes"] == 90
    assert [s["start"] for s in result["metadata"]["slots"]] == [
        "2026-03-05T09:00:00-05:00",
        "2026-03-05T10:30:00-05:00",
        "2026-03-05T12:00:00-05:00",
    ]


# --- booking ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_book_appointment_creates_one_event_marked_with_the_caller() -> None:
    args = {"start": "2026-03-03T14:30:00-05:00", "name": "Sam Caller", "email": "sam@example.com", "notes": "Knee"}
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [result] = await answer(message(("book_appointment", args)))
    event_id = booking_id(
        CALL_ID, datetime(2026, 3, 3, 19, 30, tzinfo=UTC), datetime(2026, 3, 3, 20, tzinfo=UTC), "primary"
    )
    reference = google.events[event_id]["extendedProperties"]["private"]["vapiBookingRef"]
    assert re.fullmatch(r"[0-9]{6}", reference)
    spoken = f"{' '.join(reference[:3])}, {' '.join(reference[3:])}"
    assert result["result"] == (
        f"Booked with Dr. Doe on Tuesday, March 3 from 2:30 PM to 3 PM. Booking reference: {spoken}. "
        "Tell the caller: they need it to change or cancel on a later call."
    )
    assert event_id not in json.dumps(result)  # no long ids for the model to read out
    assert result["metadata"] == {
        "booked": True,
        "reference": reference,
        "alreadyExisted": False,
        "start": "2026-03-03T14:30:00-05:00",
        "end": "2026-03-03T15:00:00-05:00",
    }
    request = google.insert.calls.last.request
    assert request.url.params["sendUpdates"] == "all"
    body = json.loads(request.content)
    assert body["id"] == event_id
    assert body["start"] == {"dateTime": "2026-03-03T14:30:00-05:00", "timeZone": "America/New_York"}
    assert body["extendedProperties"] == {
        "private": {
            "vapiCallId": CALL_ID,
            "vapiCallerNumber": CALLER,
            "vapiBookingRef": reference,
            "vapiGuest": hashlib.sha256(b"sam@example.com").hexdigest()[:20],  # counts invitations per address
        }
    }
    assert body["attendees"] == [{"email": "sam@example.com", "displayName": "Sam Caller"}]
    assert "Knee" in body["description"] and CALLER in body["description"]
    assert [e["id"] for e in google.live()] == [event_id]


@pytest.mark.anyio
async def test_double_booking_is_refused_with_alternatives() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("other0001", "2026-03-03T14:00:00-05:00", "2026-03-03T15:00:00-05:00", number="+12125550000"))
        args = {"start": "2026-03-03T14:30:00-05:00", "name": "Sam Caller"}
        [result] = await answer(message(("book_appointment", args)))
    assert result["result"].startswith(
        "I can't book Tuesday, March 3 at 2:30 PM: that time is already taken. The closest open times are "
        "Tuesday, March 3 at 9 AM, 9:30 AM, or 10 AM."
    )
    assert result["metadata"]["done"] is False and result["metadata"]["reason"] == "that time is already taken"
    assert len(result["metadata"]["alternatives"]) == 3
    assert not google.insert.called
    assert [e["id"] for e in google.live()] == ["other0001"]


@pytest.mark.anyio
async def test_buffer_blocks_a_slot_next_to_a_meeting() -> None:
    settings = CalendarSettings(mode="proxy", buffer_minutes=15)
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.other_busy = [("2026-03-03T19:00:00Z", "2026-03-03T19:30:00Z")]  # 14:00-14:30 local
        args = {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"}
        [result] = await answer(message(("book_appointment", args)), ctx(settings=settings))
    assert "already taken" in result["result"] and not google.insert.called


@pytest.mark.anyio
async def test_the_same_tool_call_twice_makes_one_event() -> None:
    msg = message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam Caller"}))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [first] = await answer(msg)
        [second] = await answer(msg)
    assert first["result"] == second["result"] and first["result"].startswith("Booked")
    assert second["metadata"]["alreadyExisted"] is True
    assert len(google.live()) == 1


@pytest.mark.anyio
async def test_a_retry_after_a_lost_insert_answer_finds_the_event() -> None:
    msg = message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam Caller"}))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.fail["insert_after_store"] = httpx.ReadTimeout("answer lost")
        [first] = await answer(msg)
        del google.fail["insert_after_store"]
        # Google's freeBusy can lag behind a fresh insert: the retry then reaches insert and gets a 409.
        google.fail["freebusy"] = httpx.Response(
            200, json={"kind": "calendar#freeBusy", "calendars": {"primary": {"busy": []}}}
        )
        [second] = await answer(msg)
    # The lost answer is read back by the event's id: the caller hears the truth, and the retry adds nothing.
    assert first["result"].startswith("Booked") and first["metadata"]["alreadyExisted"] is False
    assert second["result"].startswith("Booked") and second["metadata"]["alreadyExisted"] is True
    assert second["metadata"]["reference"] == first["metadata"]["reference"]
    assert len(google.live()) == 1 and google.insert.call_count == 2


@pytest.mark.anyio
async def test_rebooking_a_slot_cancelled_in_the_same_call_restores_the_event() -> None:
    book = message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"}))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        await answer(book)
        [cancel] = await answer(message(("cancel_appointment", {})))
        [again] = await answer(book)
    assert "is cancelled" in cancel["result"]
    assert again["result"].startswith("Booked") and len(google.live()) == 1 and google.patch.called


@pytest.mark.anyio
async def test_booking_across_the_spring_forward_jump_lasts_the_real_slot_length() -> None:
    night = CalendarSettings(mode="proxy", working_hours=WorkingHours.parse({"default": ["00:00-04:00"]}))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [result] = await answer(
            message(("book_appointment", {"start": "2026-03-08T01:30", "name": "Sam"})), ctx(settings=night)
        )
    body = json.loads(google.insert.calls.last.request.content)
    assert body["start"]["dateTime"] == "2026-03-08T01:30:00-05:00"
    assert body["end"]["dateTime"] == "2026-03-08T03:00:00-04:00"  # 30 real minutes: 02:00-03:00 does not exist
    assert result["result"].startswith("Booked with Dr. Doe on Sunday, March 8 from 1:30 AM to 3 AM.")
    assert "read as America/New_York time" in result["result"]


@pytest.mark.anyio
async def test_a_time_offered_at_the_notice_edge_stays_bookable_for_a_while() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [offer] = await answer(message(("find_open_slots", {})))
        first = offer["metadata"]["slots"][0]["start"]
        async with httpx.AsyncClient() as http:
            later = await answer_tool_calls(
                message(("book_appointment", {"start": first, "name": "Sam"})),
                ctx(),
                make_calendar(http),
                Metrics(),
                now=NOW + timedelta(minutes=5),
            )
    assert first == "2026-03-02T09:00:00-05:00"
    assert later["results"][0]["result"].startswith("Booked")  # type: ignore[index]


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        ("2026-03-02T08:30:00-05:00", "that's too soon, I need at least 1 hour's notice"),
        ("2026-03-01T10:00:00-05:00", "that time has already passed"),
        ("2026-03-07T10:00:00-05:00", "that's outside Dr. Doe's working hours"),
        ("2026-04-01T10:00:00-04:00", "I can only book up to 14 days ahead"),
    ],
)
@pytest.mark.anyio
async def test_booking_refusals_explain_and_offer_times(start: str, reason: str) -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [result] = await answer(message(("book_appointment", {"start": start, "name": "Sam"})))
    assert reason in result["result"] and "result" in result
    assert not google.insert.called


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"name": "Sam"}, "start is missing"),
        ({"start": "next tuesday", "name": "Sam"}, "start: 'next tuesday' is not an ISO 8601"),
        ({"start": "2026-03-03T14:30:00-05:00"}, "name is missing"),
        ({"start": "2026-03-03T14:30:00-05:00", "end": "2026-03-03T14:00:00-05:00", "name": "S"}, "must end after"),
        ({"start": "2026-03-03T14:30:00-05:00", "name": "S", "email": "sam@"}, "email address"),
    ],
)
@pytest.mark.anyio
async def test_bad_arguments_get_a_speakable_error(args: dict[str, Any], problem: str) -> None:
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [result] = await answer(message(("book_appointment", args)))
    assert result["error"].startswith("I couldn't use that request:") and problem in result["error"]


# --- cancel and reschedule -------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_with_the_reference_finds_the_callers_appointment() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        google.add(booked("mine00002", "2026-03-05T10:00:00-05:00", "2026-03-05T10:30:00-05:00", reference="900001"))
        google.add(booked("theirs001", "2026-03-04T11:00:00-05:00", "2026-03-04T11:30:00-05:00", number="+12125550000"))
        [result] = await answer(message(("cancel_appointment", {"reference": "246 813"})))
    assert result["result"] == "The appointment on Wednesday, March 4 at 10 AM is cancelled."
    params = google.list.calls.last.request.url.params
    assert sorted(params.get_list("privateExtendedProperty")) == [
        f"vapiBookingRef={REFERENCE}",
        f"vapiCallerNumber={CALLER}",
    ]
    assert sorted(e["id"] for e in google.live()) == ["mine00002", "theirs001"]


@pytest.mark.anyio
async def test_cancel_by_reference_is_idempotent() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        msg = message(("cancel_appointment", {"reference": REFERENCE}))
        [first] = await answer(msg)
        [second] = await answer(msg)
    assert first["result"] == second["result"] == "The appointment on Wednesday, March 4 at 10 AM is cancelled."
    assert google.delete.call_count == 1


@pytest.mark.anyio
async def test_cancel_410_from_a_concurrent_delete_still_succeeds() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        google.delete.mock(return_value=httpx.Response(410, json=DELETED))
        [result] = await answer(message(("cancel_appointment", {"reference": REFERENCE})))
    assert result["result"].endswith("is cancelled.")


@pytest.mark.anyio
async def test_a_spoofed_caller_number_alone_can_neither_change_nor_hear_a_booking() -> None:
    """Issue 10 finding 5: caller ID is spoofable; the reference from the booking call is also needed."""
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        [cancel] = await answer(message(("cancel_appointment", {})))
        move = {"new_start": "2026-03-05T10:00:00-05:00", "appointment_start": "2026-03-04T10:00:00-05:00"}
        [reschedule] = await answer(message(("reschedule_appointment", move)))
        [guess] = await answer(message(("cancel_appointment", {"reference": "111111"})))
    assert (
        cancel["error"]
        == reschedule["error"]
        == (
            "To change an appointment booked on an earlier call, I need its booking reference: the six-digit number "
            "given when it was booked. Ask the caller for it."
        )
    )
    assert (
        guess["error"] == "That booking reference doesn't match an upcoming appointment booked from this phone number."
    )
    for result in (cancel, reschedule, guess):
        assert "March 4" not in json.dumps(result) and "10 AM" not in json.dumps(result)
    assert not google.delete.called and not google.patch.called
    assert google.events["mine00001"]["start"]["dateTime"] == "2026-03-04T10:00:00-05:00"


@pytest.mark.anyio
async def test_three_wrong_references_end_the_guessing_for_that_call() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        counts = CallCounts()
        async with httpx.AsyncClient() as http:
            calendar = make_calendar(http)
            results = []
            for reference in ("111111", "222222", "333333", REFERENCE):
                msg = message(("cancel_appointment", {"reference": reference}))
                answer_ = await answer_tool_calls(msg, ctx(), calendar, Metrics(), now=NOW, counts=counts)
                results.append(answer_["results"][0]["error"])  # type: ignore[index]
    assert (
        results[2]
        == results[3]
        == (
            "That booking reference didn't match again, so I can't change appointments on this call. "
            "Please contact the office directly."
        )
    )
    assert not google.delete.called and len(google.live()) == 1


@pytest.mark.anyio
async def test_the_booking_call_itself_needs_no_reference() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("earlier01", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        google.add(booked("thiscall1", "2026-03-05T10:00:00-05:00", "2026-03-05T10:30:00-05:00", call_id=CALL_ID))
        [result] = await answer(message(("cancel_appointment", {})))
    assert google.list.calls.last.request.url.params["privateExtendedProperty"] == f"vapiCallId={CALL_ID}"
    assert result["result"] == "The appointment on Thursday, March 5 at 10 AM is cancelled."
    assert {e["id"] for e in google.live()} == {"earlier01"}


@pytest.mark.anyio
async def test_withheld_number_can_only_touch_this_calls_bookings() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("earlier01", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        [result] = await answer(message(("cancel_appointment", {"reference": REFERENCE})), ctx(caller_number=None))
    assert google.list.calls.last.request.url.params["privateExtendedProperty"] == f"vapiCallId={CALL_ID}"
    assert "doesn't match" in result["error"]
    assert {e["id"] for e in google.live()} == {"earlier01"}


@pytest.mark.anyio
async def test_several_appointments_of_this_call_ask_which_one() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00", call_id=CALL_ID))
        google.add(booked("mine00002", "2026-03-05T10:00:00-05:00", "2026-03-05T10:30:00-05:00", call_id=CALL_ID))
        [ask] = await answer(message(("cancel_appointment", {})))
        [pick] = await answer(message(("cancel_appointment", {"appointment_start": "2026-03-05T15:00:00Z"})))
    assert ask["result"] == (
        "There are 2 appointments booked on this call: Wednesday, March 4 at 10 AM and "
        "Thursday, March 5 at 10 AM. Which one?"
    )
    assert "Thursday, March 5" in pick["result"] and [e["id"] for e in google.live()] == ["mine00001"]


@pytest.mark.anyio
async def test_reschedule_moves_the_event_even_onto_its_own_time() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        # Overlaps the appointment's current time, which freeBusy reports as busy.
        msg = message(("reschedule_appointment", {"new_start": "2026-03-04T10:15:00-05:00", "reference": REFERENCE}))
        [first] = await answer(msg)
        [retry] = await answer(msg)
    assert (
        first["result"]
        == retry["result"]
        == "Done: the appointment is now on Wednesday, March 4 from 10:15 AM to 10:45 AM."
    )
    assert google.events["mine00001"]["start"]["dateTime"] == "2026-03-04T10:15:00-05:00"
    assert google.events["mine00001"]["end"]["dateTime"] == "2026-03-04T10:45:00-05:00"


@pytest.mark.anyio
async def test_reschedule_onto_a_taken_time_is_refused() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        google.add(booked("theirs001", "2026-03-04T11:00:00-05:00", "2026-03-04T12:00:00-05:00", number="+12125550000"))
        move = {"new_start": "2026-03-04T11:30:00-05:00", "reference": REFERENCE}
        [result] = await answer(message(("reschedule_appointment", move)))
    assert result["result"].startswith(
        "I can't move the appointment to Wednesday, March 4 at 11:30 AM: that time is already taken."
    )
    assert not google.patch.called


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(424, json=REFRESH_FAILED), httpx.Response(401, json=INVALID_CREDENTIALS)],
    ids=["nango-refresh-failed", "google-401"],
)
@pytest.mark.anyio
async def test_token_failures_ask_for_a_reconnect(failure: httpx.Response) -> None:
    metrics = Metrics()
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.fail["freebusy"] = failure
        [result] = await answer(message(("find_open_slots", {})), metrics=metrics)
    assert result["error"] == (
        "I can't open Dr. Doe's calendar right now because its connection needs to be renewed. "
        "Dr. Doe has to reconnect their Google Calendar; please try again later."
    )
    assert metrics.tool_calls.labels(tool="find_open_slots", result="auth")._value.get() == 1


@pytest.mark.anyio
async def test_unreachable_google_is_speakable() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.fail["freebusy"] = httpx.Response(503)
        [result] = await answer(message(("find_open_slots", {})))
    assert result["error"] == "I can't reach the calendar right now. Please try again in a moment."


class SlowCalendar(GoogleCalendar):
    async def free_busy(self, connection_id: str, calendar_id: str, *, start: datetime, end: datetime) -> list[Any]:
        await anyio.sleep(10)
        return []


@pytest.mark.anyio
async def test_the_overall_timeout_answers_every_call() -> None:
    metrics = Metrics()
    msg = message(("find_open_slots", {}), ("check_availability", {"start": "2026-03-03", "end": "2026-03-04"}))
    async with httpx.AsyncClient() as http:
        slow = SlowCalendar(
            http, nango_base_url=BASE_URL, secret_key=make_calendar(http)._secret, integration_id="g", timeout=1
        )
        with anyio.fail_after(2):
            results = await answer(msg, calendar=slow, timeout=0.2, metrics=metrics)
    assert [r["toolCallId"] for r in results] == ["toolu_0", "toolu_1"]
    assert all("taking too long" in r["error"] for r in results)
    assert metrics.tool_calls.labels(tool="check_availability", result="timeout")._value.get() == 1


@pytest.mark.anyio
async def test_not_connected_is_speakable_and_calls_nothing() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [result] = await answer(message(("find_open_slots", {})), ctx(connection_id=None))
    assert result["error"].startswith("The calendar isn't connected yet, so I can't check or book times.")
    assert not google.freebusy.called


@pytest.mark.anyio
async def test_unknown_tools_get_an_error_and_known_ones_still_run() -> None:
    metrics = Metrics()
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        unknown, known = await answer(message(("transfer_call", {}), ("find_open_slots", {})), metrics=metrics)
    assert unknown["name"] == "transfer_call" and unknown["error"] == NOT_SERVED
    assert known["result"].startswith("The next open times")
    assert metrics.tool_calls.labels(tool="unknown", result="not_served")._value.get() == 1


@pytest.mark.anyio
async def test_tool_with_tool_call_list_and_object_arguments_are_tolerated() -> None:
    msg = message(
        ("check_availability", {"start": "2026-03-03T09:00:00-05:00", "end": "2026-03-03T10:00:00-05:00"}),
        raw_arguments=True,
    )
    del msg["toolCallList"]
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [result] = await answer(msg)
    assert result["result"].startswith("Dr. Doe is free on Tuesday, March 3")


@pytest.mark.anyio
async def test_invalid_json_arguments_and_calls_without_an_id() -> None:
    msg = message(("find_open_slots", {}))
    msg["toolCallList"][0]["function"]["arguments"] = "{not json"
    msg["toolCallList"].append({"type": "function", "function": {"name": "find_open_slots", "arguments": "{}"}})
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        results = await answer(msg)
    assert len(results) == 1 and "not valid JSON" in results[0]["error"]


@pytest.mark.anyio
async def test_two_bookings_of_one_slot_in_one_message_make_one_event() -> None:
    long = CalendarSettings(mode="proxy", slot_minutes=60)
    a = {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"}
    b = {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"}
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        results = await answer(message(("book_appointment", a), ("book_appointment", b)), ctx(settings=long))
    assert sum(r["result"].startswith("Booked") for r in results) == 1
    assert len(google.live()) == 1


@pytest.mark.anyio
async def test_custom_working_hours_and_calendar_id_are_used() -> None:
    settings = CalendarSettings(
        mode="proxy",
        calendar_id="team@group.calendar.google.com",
        working_hours=WorkingHours.parse({"default": ["07:00-08:30"]}),
        min_notice_minutes=0,
        max_slots=2,
    )
    async with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"{BASE_URL}/proxy/calendar/v3/freeBusy").respond(
            200, json={"kind": "calendar#freeBusy", "calendars": {"team@group.calendar.google.com": {"busy": []}}}
        )
        [result] = await answer(message(("find_open_slots", {})), replace(ctx(), settings=settings))
    assert json.loads(route.calls.last.request.content)["items"] == [{"id": "team@group.calendar.google.com"}]
    assert [s["start"] for s in result["metadata"]["slots"]] == [
        "2026-03-02T08:00:00-05:00",
        "2026-03-03T07:00:00-05:00",
    ]
