"""Microsoft 365 calendars: the provider over Microsoft Graph (proxy/calendar/microsoft.py, graph.py) against a
fake Graph that validates every body with msgraph-sdk's models (tests/graph_fakes.py), and the five tools on it."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from proxy.calendar.graph import property_id
from proxy.calendar.locks import LocalUserLocks
from proxy.calendar.provider import NewEvent
from proxy.metrics import Metrics
from proxy.vapi.tools import answer_tool_calls
from tests.contract import assert_tool_calls_response
from tests.graph_fakes import FakeGraph, Invalid, check_event_body, graph_error, make_outlook
from tests.vapi.test_tools import NOW, ctx, message

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")
CONN = "conn-1"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=NY)


async def outlook_answer(msg: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    context = kwargs.pop("context", None) or ctx()
    async with httpx.AsyncClient() as http:
        calendar = make_outlook(http, sleep=kwargs.pop("sleep", None))
        result = await answer_tool_calls(msg, context, calendar, Metrics(), now=NOW, timeout=5.0, **kwargs)
    assert_tool_calls_response(result)
    results: list[dict[str, Any]] = result["results"]  # type: ignore[assignment]
    return results


def test_bodies_are_checked_against_msgraph_sdk_models() -> None:
    good = {"subject": "x", "start": {"dateTime": "2026-03-03T14:00:00", "timeZone": "Eastern Standard Time"}}
    check_event_body(good)
    for bad in ({**good, "summary": "x"}, {**good, "showAs": "blocked"}, {"start": "2026-03-03T14:00:00Z"}):
        with pytest.raises(Invalid):
            check_event_body(bad)


async def test_busy_counts_as_graph_shows_it() -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock)
        graph.add(at(3, 9), at(3, 10), show_as="busy")
        graph.add(at(3, 10), at(3, 11), show_as="tentative")
        graph.add(at(3, 11), at(3, 12), show_as="oof")
        graph.add(at(3, 12), at(3, 13), show_as="free")
        graph.add(at(3, 13), at(3, 14), show_as="workingElsewhere")
        graph.add(at(3, 14), at(3, 15), response="declined")
        graph.add(at(3, 15), at(3, 16), cancelled=True)
        graph.add(at(3, 16), at(3, 17), kind="occurrence")  # one occurrence of a weekly series
        graph.add(at(4, 0), at(5, 0), all_day=True)  # Wednesday, the user's whole local day
        busy = await make_outlook(http).free_busy(CONN, "primary", start=at(3, 0), end=at(6, 0))
        request = graph.view.calls.last.request
    assert busy == [
        (at(3, 9).astimezone(UTC), at(3, 10).astimezone(UTC)),
        (at(3, 10).astimezone(UTC), at(3, 11).astimezone(UTC)),
        (at(3, 11).astimezone(UTC), at(3, 12).astimezone(UTC)),
        (at(3, 16).astimezone(UTC), at(3, 17).astimezone(UTC)),
        (at(4, 0).astimezone(UTC), at(5, 0).astimezone(UTC)),
    ]
    # Through Nango only Nango-Proxy-* headers reach Graph; Nango itself is told not to retry.
    assert request.headers["nango-proxy-prefer"] == 'outlook.timezone="Eastern Standard Time"'
    assert "prefer" not in request.headers and request.headers["retries"] == "0"
    assert request.headers["provider-config-key"] == "outlook-calendar" and request.headers["connection-id"] == CONN
    assert request.url.path == "/proxy/v1.0/me/calendar/calendarView"


async def test_calendar_view_pages_through_next_links() -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock)
        for i in range(300):
            graph.add(at(3, 0) + timedelta(minutes=10 * i), at(3, 0) + timedelta(minutes=10 * i + 5))
        busy = await make_outlook(http).free_busy(CONN, "team-calendar-id", start=at(3, 0), end=at(6, 0))
    assert len(busy) == 300 and graph.view.call_count == 2
    assert graph.view.calls.last.request.url.params["$skip"] == "250"
    assert graph.view.calls.last.request.url.path == "/proxy/v1.0/me/calendars/team-calendar-id/calendarView"


async def test_a_repeated_create_with_the_same_key_makes_one_event() -> None:
    event = NewEvent("Appointment", "Booked.", at(3, 14).astimezone(UTC), at(3, 15).astimezone(UTC), NY, {"a": "b"})
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock)
        calendar = make_outlook(http)
        first = await calendar.create(CONN, "primary", event, key="k1", notify=False, budget=None)
        again = await calendar.create(CONN, "primary", event, key="k1", notify=False, budget=None)
        found = await calendar.read(CONN, "primary", "k1", budget=None)
    assert len(graph.events) == 1 and first.event.id == again.event.id
    assert found is not None and found.id == first.event.id and found.span() == (event.start, event.end)
    body = graph.bodies[0]
    assert body["transactionId"] == "k1" and body["start"] == {
        "dateTime": "2026-03-03T14:00:00",
        "timeZone": "Eastern Standard Time",
    }
    assert {"id": property_id("vapiBookingKey"), "value": "k1"} in body["singleValueExtendedProperties"]


async def test_book_cancel_and_reschedule_on_outlook() -> None:
    slot = {"start": "2026-03-03T14:00:00-05:00", "name": "Sam Caller", "email": "sam@example.com"}
    async with respx.mock(assert_all_called=False) as mock:
        graph = FakeGraph(mock)
        [booked] = await outlook_answer(message(("book_appointment", slot)))
        [again] = await outlook_answer(message(("book_appointment", slot)))
        events_after_retry = len(graph.events)
        move = {"new_start": "2026-03-03T15:00:00-05:00"}
        [moved] = await outlook_answer(message(("reschedule_appointment", move)))
        [cancelled] = await outlook_answer(message(("cancel_appointment", {})))
    assert booked["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 2 PM to 2:30 PM.")
    # The retried booking of the same call finds its event: one event, the same reference.
    assert again["metadata"]["alreadyExisted"] is True
    assert again["metadata"]["reference"] == booked["metadata"]["reference"]
    assert events_after_retry == 1
    assert moved["result"] == "Done: the appointment is now on Tuesday, March 3 from 3 PM to 3:30 PM."
    assert cancelled["result"] == "The appointment on Tuesday, March 3 at 3 PM is cancelled."
    assert graph.events == {}
    attendees = graph.bodies[0]["attendees"]
    assert attendees == [{"emailAddress": {"address": "sam@example.com", "name": "Sam Caller"}, "type": "required"}]


async def test_a_later_call_needs_the_reference_on_outlook() -> None:
    slot = {"start": "2026-03-03T14:00:00-05:00", "name": "Sam Caller"}
    async with respx.mock(assert_all_called=False) as mock:
        FakeGraph(mock)
        [booked] = await outlook_answer(message(("book_appointment", slot)))
        later = ctx(call_id="a-later-call")
        [refused] = await outlook_answer(message(("cancel_appointment", {})), context=later)
        reference = booked["metadata"]["reference"]
        [done] = await outlook_answer(message(("cancel_appointment", {"reference": reference})), context=later)
    assert "I need its booking reference" in refused["error"]
    assert done["result"] == "The appointment on Tuesday, March 3 at 2 PM is cancelled."


async def test_throttling_waits_for_retry_after_within_the_budget() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with respx.mock(assert_all_called=False) as mock:
        graph = FakeGraph(mock)
        graph.throttle["view"] = 1
        [found] = await outlook_answer(message(("find_open_slots", {})), sleep=sleep)
        graph.throttle["view"] = 5
        [failed] = await outlook_answer(message(("find_open_slots", {})), sleep=sleep)
    assert found["result"].startswith("The next open times are Monday, March 2 at 9 AM")
    assert waits[0] == 1.0 and len(waits) == 3  # one wait, then two (the third answer is the last try)
    assert failed["error"] == "I can't reach the calendar right now. Please try again in a moment."


@pytest.mark.parametrize(
    ("response", "spoken"),
    [
        (
            graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
            "Dr. Doe has to reconnect their Outlook calendar",
        ),
        (graph_error(403, "ErrorAccessDenied", "Access is denied."), "reconnect their Outlook calendar"),
        (
            graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted."),
            "The calendar didn't accept that request.",
        ),
        (graph_error(503, "ServiceUnavailable", "Service Unavailable"), "I can't reach the calendar right now."),
        (
            httpx.Response(400, json={"error": {"code": "server_error", "message": "Failed to get connection"}}),
            "reconnect their Outlook calendar",
        ),
    ],
)
async def test_graph_errors_become_speech(response: httpx.Response, spoken: str) -> None:
    async with respx.mock(assert_all_called=False) as mock:
        graph = FakeGraph(mock)
        graph.fail["view"] = response
        [result] = await outlook_answer(message(("find_open_slots", {})))
    assert spoken in result["error"]


async def test_not_connected_names_the_outlook_calendar() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        FakeGraph(mock)
        [result] = await outlook_answer(message(("find_open_slots", {})), context=ctx(connection_id=None))
    assert "needs to connect their Outlook calendar first" in result["error"]


async def test_two_replicas_racing_for_one_slot_on_outlook_never_double_book() -> None:
    """200 races: two replicas (each its own lock, so only the re-read keeps them apart) book one slot."""
    rng = random.Random(21)
    slot = {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"}
    double, winners = 0, []
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock, latency=lambda: rng.uniform(0.0, 0.002))

        async def book(call: str) -> dict[str, Any]:
            msg = message(("book_appointment", slot))
            msg["call"]["id"] = call
            answer = await answer_tool_calls(
                msg, ctx(call_id=call), make_outlook(http), Metrics(), now=NOW, locks=LocalUserLocks()
            )
            return answer["results"][0]  # type: ignore[index,no-any-return]

        for race in range(200):
            graph.events.clear()
            a, b = await asyncio.gather(book(f"race-{race}-a"), book(f"race-{race}-b"))
            double += len(graph.overlapping())
            winners.append(sum("result" in r and r["result"].startswith("Booked") for r in (a, b)))
            assert len(graph.events) <= 1
    assert double == 0 and winners.count(1) == 200


async def test_user_zone_without_a_windows_name_is_written_in_utc() -> None:
    event = NewEvent("x", "y", at(3, 14).astimezone(UTC), at(3, 15).astimezone(UTC), ZoneInfo("Antarctica/Troll"), {})
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock)
        made = await make_outlook(http, timezone=ZoneInfo("Europe/London")).create(
            CONN, "primary", event, key="k", notify=False, budget=None
        )
    start = graph.bodies[0]["start"]
    assert start == {"dateTime": "2026-03-03T19:00:00", "timeZone": "UTC"}
    assert made.event.span() == (event.start, event.end)


async def test_booking_bounds_hold_on_outlook() -> None:
    """The per-call bound (3 bookings) is counted from the calendar's marks, so it holds on Graph too."""
    async with respx.mock(assert_all_called=False) as mock:
        graph = FakeGraph(mock)
        results = []
        for hour in (9, 10, 11, 13):
            slot = {"start": f"2026-03-03T{hour:02d}:00:00-05:00", "name": "Sam Caller", "email": "sam@example.com"}
            [result] = await outlook_answer(message(("book_appointment", slot)))
            results.append(result)
    booked = [("result" in r and r["result"].startswith("Booked")) for r in results]
    # Two invitations to one address per call: the third booking with that email is refused, and the fourth.
    assert booked == [True, True, False, False] and len(graph.events) == 2
    assert "Anything more has to go through the office directly." in results[2]["result"]
