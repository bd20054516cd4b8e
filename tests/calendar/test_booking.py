"""Issue 10: proxy-mode bookings are never phantom, never double, and only the caller who booked can move them.

One regression test per finding, against the Google Calendar fake (tests/google_fakes.py), which validates
requests as Google's v3 API does. Findings 3, 4 and the tool-call bounds are in tests/calendar/test_tool_bounds.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from proxy.calendar.claim import booking_id, first_created
from proxy.calendar.google import to_event
from proxy.config.calendar import CalendarSettings
from proxy.metrics import Metrics
from tests.calendar.test_tool_bounds import CONFIG
from tests.contract import assert_tool_calls_response
from tests.google_fakes import FakeGoogle, make_calendar
from tests.helpers import VAPI_SECRET, config_from, proxy_client
from tests.vapi.test_tools import CALL_ID, answer, booked, ctx, message

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")


def starts_at(event: dict[str, Any]) -> str:
    return str(event["start"]["dateTime"])


# --- finding 1: a booking reported that is not in the calendar -------------------------------------------


async def test_rebooking_a_slot_whose_event_was_moved_away_books_it_again() -> None:
    one_pm = {"start": "2026-03-03T13:00:00-05:00", "name": "Sam Caller"}
    move = {"appointment_start": "2026-03-03T13:00:00-05:00", "new_start": "2026-03-03T15:00:00-05:00"}
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [first] = await answer(message(("book_appointment", one_pm)))
        [moved] = await answer(message(("reschedule_appointment", move)))
        [again] = await answer(message(("book_appointment", one_pm)))
    assert first["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 1 PM to 1:30 PM.")
    assert moved["result"] == "Done: the appointment is now on Tuesday, March 3 from 3 PM to 3:30 PM."
    # The slot's first id is held by the moved event: the booking takes the next id, and is really there.
    assert again["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 1 PM to 1:30 PM.")
    assert again["metadata"]["alreadyExisted"] is False
    assert sorted(starts_at(e) for e in google.live()) == ["2026-03-03T13:00:00-05:00", "2026-03-03T15:00:00-05:00"]
    start, end = datetime(2026, 3, 3, 18, tzinfo=UTC), datetime(2026, 3, 3, 18, 30, tzinfo=UTC)
    assert booking_id(CALL_ID, start, end, "primary", 1) in google.events


async def test_a_booking_is_never_reported_when_no_event_holds_the_slot() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        start, end = datetime(2026, 3, 3, 18, tzinfo=UTC), datetime(2026, 3, 3, 18, 30, tzinfo=UTC)
        for attempt in range(4):  # every id this call could use is held by an event moved elsewhere
            event_id = booking_id(CALL_ID, start, end, "primary", attempt)
            google.add(
                booked(
                    event_id,
                    f"2026-03-0{4 + attempt}T10:00:00-05:00",
                    f"2026-03-0{4 + attempt}T10:30:00-05:00",
                    call_id=CALL_ID,
                )
            )
        roomy = ctx(settings=CalendarSettings(mode="proxy", max_bookings_per_call=10))  # past the per-call bound
        [result] = await answer(
            message(("book_appointment", {"start": "2026-03-03T13:00:00-05:00", "name": "Sam"})), roomy
        )
    assert "Booked" not in json.dumps(result)
    assert result["error"] == "The calendar changed while I was doing that. Please try again."
    assert not any(starts_at(e).startswith("2026-03-03T13:00") for e in google.live())


# --- finding 2: double booking ---------------------------------------------------------------------------


def tool_call_body(call_id: str, start: str) -> dict[str, Any]:
    arguments = json.dumps({"start": start, "name": f"Caller {call_id}"})
    return {
        "message": {
            "type": "tool-calls",
            "toolCallList": [
                {
                    "id": f"tc-{call_id}",
                    "type": "function",
                    "function": {"name": "book_appointment", "arguments": arguments},
                }
            ],
            "call": {"id": call_id, "customer": {"number": f"+1415555{abs(hash(call_id)) % 10000:04d}"}},
            "phoneNumber": {"id": "pn-1", "number": "+16505550100"},
        }
    }


async def book_via(client: httpx.AsyncClient, call_id: str, start: str) -> dict[str, Any]:
    content = json.dumps(tool_call_body(call_id, start)).encode()
    response = await client.post("/vapi", content=content, headers={"X-Vapi-Secret": VAPI_SECRET})
    assert response.status_code == 200
    answer_ = response.json()
    assert_tool_calls_response(answer_)
    result: dict[str, Any] = answer_["results"][0]
    return result


def a_bookable_slot() -> str:
    """10 AM New York time on a weekday at least two days from now (the apps run on the real clock)."""
    day = datetime.now(NY).date() + timedelta(days=2)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, tzinfo=NY).isoformat()


async def test_two_replicas_racing_for_one_slot_never_double_book() -> None:
    rounds, doubles, winners = 200, 0, []
    noise = random.Random(10)
    slot = a_bookable_slot()
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock, latency=lambda: noise.uniform(0, 0.004))
        async with proxy_client(config_from(CONFIG)) as replica_a, proxy_client(config_from(CONFIG)) as replica_b:
            for i in range(rounds):
                google.events.clear()
                a, b = await asyncio.gather(book_via(replica_a, f"a{i}", slot), book_via(replica_b, f"b{i}", slot))
                doubles += len(google.overlapping())
                said = [r.get("result", "") for r in (a, b)]
                winners.append(sum(text.startswith("Booked") for text in said))
                assert len(google.live()) == sum(text.startswith("Booked") for text in said), said
                for text in said:
                    assert text.startswith("Booked") or "someone else just booked it" in text or "already taken" in text
    print(f"two-replica race: {rounds} rounds, {doubles} double bookings, winners per round {set(winners)}")
    assert doubles == 0
    assert set(winners) == {1}  # exactly one caller hears "Booked" each time, and that booking is in the calendar


async def test_two_calls_racing_on_one_replica_are_serialised_before_the_insert() -> None:
    slot = a_bookable_slot()
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock, latency=0.01)
        async with proxy_client(config_from(CONFIG)) as replica:
            a, b = await asyncio.gather(book_via(replica, "call-a", slot), book_via(replica, "call-b", slot))
    results = sorted([a["result"], b["result"]], key=lambda text: not text.startswith("Booked"))
    assert results[0].startswith("Booked with Dr. Jane Doe")
    assert "that time is already taken. The closest open times are" in results[1]
    assert google.insert.call_count == 1 and len(google.live()) == 1


async def test_the_winner_rule_is_earliest_created_then_smallest_id() -> None:
    events = [
        to_event({"id": "bbbbb", "created": "2026-03-02T16:00:00.002Z"}),
        to_event({"id": "ccccc", "created": "2026-03-02T16:00:00.001Z"}),
        to_event({"id": "aaaaa", "created": "2026-03-02T16:00:00.001Z"}),
        to_event({"id": "00000"}),  # no creation time: never the winner
    ]
    assert first_created(events) == events[2]
    assert first_created(reversed(events)) == events[2]


async def test_a_loser_deletes_its_own_event_and_offers_the_nearest_times() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        # Another replica's event lands between our free check and our insert (freeBusy did not show it yet).
        google.fail["freebusy"] = httpx.Response(
            200, json={"kind": "calendar#freeBusy", "calendars": {"primary": {"busy": []}}}
        )
        google.add(booked("rival0001", "2026-03-03T14:00:00-05:00", "2026-03-03T14:30:00-05:00", number="+12125550000"))
        [result] = await answer(message(("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"})))
        del google.fail["freebusy"]
    assert result["result"].startswith("I can't book Tuesday, March 3 at 2 PM: someone else just booked it.")
    assert result["metadata"]["done"] is False
    assert [e["id"] for e in google.live()] == ["rival0001"] and google.delete.call_count == 1


# --- finding 6: more than 10 upcoming bookings --------------------------------------------------------


async def test_bookings_past_the_first_page_are_reached() -> None:
    first = datetime(2026, 3, 3, 9, tzinfo=NY)
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        for i in range(300):  # Google pages by 250
            start = first + timedelta(hours=i)
            google.add(
                booked(f"mine{i:05d}", start.isoformat(), (start + timedelta(minutes=30)).isoformat(), call_id=CALL_ID)
            )
        last = (first + timedelta(hours=299)).isoformat()
        [result] = await answer(message(("cancel_appointment", {"appointment_start": last})))
    assert result["result"] == "The appointment on Sunday, March 15 at 8 PM is cancelled."
    assert google.list.call_count == 2 and google.list.calls.last.request.url.params["pageToken"]
    assert google.events["mine00299"]["status"] == "cancelled"


async def test_listing_stops_at_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        google = FakeGoogle(mock)
        for i in range(7):
            google.add(
                booked(
                    f"evt{i:05d}", f"2026-03-0{3 + i % 5}T1{i}:00:00-05:00", f"2026-03-0{3 + i % 5}T1{i}:30:00-05:00"
                )
            )
        with caplog.at_level(logging.WARNING):
            events = await make_calendar(http).list_events(
                "conn-1",
                "primary",
                start=datetime(2026, 3, 2, tzinfo=UTC),
                end=datetime(2026, 4, 1, tzinfo=UTC),
                page_size=2,
                max_events=5,
            )
    assert len(events) == 5 and google.list.call_count == 3
    assert "stopped at 5 events" in caplog.text


# --- finding 8: a weekend search ----------------------------------------------------------------------


async def test_an_empty_weekend_offers_mondays_openings() -> None:
    weekend = {"after": "2026-03-07T00:00:00-05:00", "before": "2026-03-09T00:00:00-04:00"}
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [result] = await answer(message(("find_open_slots", weekend)))
    assert result["result"] == (
        "There are no open 30-minute times on Saturday, March 7 or Sunday, March 8. The next open times are "
        "Monday, March 9 at 9 AM, 9:30 AM, or 10 AM. (Each is 30 minutes; exact start times for booking: "
        "2026-03-09T09:00:00-04:00, 2026-03-09T09:30:00-04:00, 2026-03-09T10:00:00-04:00.)"
    )
    assert result["metadata"]["requestedRangeEmpty"] is True


async def test_how_far_ahead_to_look_is_a_setting() -> None:
    weekend = {"after": "2026-03-07T00:00:00-05:00", "before": "2026-03-09T00:00:00-04:00"}
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [result] = await answer(
            message(("find_open_slots", weekend)), ctx(settings=CalendarSettings(mode="proxy", search_ahead_days=0))
        )
    assert result["result"] == (
        "There are no open 30-minute times on Saturday, March 7 or Sunday, March 8, and none in the days after "
        "that I can book."
    )


# --- finding 9: a slow insert --------------------------------------------------------------------------


async def test_an_insert_answering_too_late_is_read_back_and_the_truth_told() -> None:
    metrics = Metrics()
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.stall["insert"] = 5.0  # stored at once, answered after the tool's time is up
        [result] = await answer(
            message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"})),
            timeout=1.0,
            metrics=metrics,
        )
    assert result["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 2:30 PM to 3 PM.")
    assert len(google.live()) == 1 and google.get.called
    assert metrics.bookings_unconfirmed._value.get() == 0


async def test_an_insert_that_cannot_be_confirmed_says_so_logs_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.stall["insert"] = 5.0
        google.fail["get"] = httpx.Response(503, json={"error": {"code": 503, "message": "Backend Error"}})
        with caplog.at_level(logging.WARNING):
            [result] = await answer(
                message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"})),
                timeout=1.0,
                metrics=metrics,
            )
    assert result["error"] == (
        "I'm not sure the booking on Tuesday, March 3 from 2:30 PM to 3 PM went through: the calendar is answering "
        "too slowly. Ask me to book the same time again in a moment; that will not book it twice."
    )
    assert metrics.bookings_unconfirmed._value.get() == 1
    assert "vapi_proxy_bookings_unconfirmed_total 1.0" in metrics.render().decode()
    assert CALL_ID in caplog.text and "unconfirmed" in caplog.text


async def test_a_reschedule_onto_a_slot_just_booked_elsewhere_moves_back() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00", call_id=CALL_ID))
        # Another replica's booking of 2 PM lands after our free check (freeBusy did not show it yet).
        google.fail["freebusy"] = httpx.Response(
            200, json={"kind": "calendar#freeBusy", "calendars": {"primary": {"busy": []}}}
        )
        google.add(booked("rival0001", "2026-03-04T14:00:00-05:00", "2026-03-04T14:30:00-05:00", number="+12125550000"))
        [result] = await answer(message(("reschedule_appointment", {"new_start": "2026-03-04T14:00:00-05:00"})))
    assert result["result"].startswith(
        "I can't move the appointment to Wednesday, March 4 at 2 PM: someone else just booked it."
    )
    assert google.events["mine00001"]["start"]["dateTime"] == "2026-03-04T10:00:00-05:00"
    assert google.overlapping() == []


async def test_a_booking_whose_slot_cannot_be_re_read_is_unconfirmed_and_a_retry_settles_it() -> None:
    metrics = Metrics()
    msg = message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"}))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        insert = google.insert.side_effect

        async def insert_then_fail_lists(request: httpx.Request, calendar_id: str) -> httpx.Response:
            google.fail["list"] = httpx.Response(503, json={"error": {"code": 503, "message": "Backend Error"}})
            return await insert(request, calendar_id)

        google.insert.side_effect = insert_then_fail_lists  # the re-read of the slot fails, nothing before it
        [first] = await answer(msg, metrics=metrics)
        google.insert.side_effect = insert
        del google.fail["list"]
        [retry] = await answer(msg, metrics=metrics)
    assert first["error"].startswith("I'm not sure the booking on Tuesday, March 3 from 2:30 PM to 3 PM went through")
    assert retry["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 2:30 PM to 3 PM.")
    assert len(google.live()) == 1 and metrics.bookings_unconfirmed._value.get() == 1
