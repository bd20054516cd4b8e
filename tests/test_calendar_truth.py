"""Issue 20: what the tools say and do matches the calendar, as Google counts it and as a caller hears it.

One regression test per finding, against the Google Calendar fake (tests/google_fakes.py). The booking bounds
(finding 4) are in tests/test_booking_bounds.py; the round trips (finding 6) in tests/test_round_trips.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from proxy.calendar.context import CalendarContext
from proxy.config.calendar import CalendarSettings, WorkingHours
from proxy.metrics import Metrics
from proxy.vapi.tools import answer_tool_calls
from tests.contract import assert_tool_calls_response
from tests.google_fakes import FakeGoogle, make_calendar
from tests.test_tools import NY, answer, ctx, message

pytestmark = pytest.mark.anyio

NIGHT = WorkingHours.parse({"default": ["00:00-04:00"]})


async def answer_at(msg: dict[str, Any], context: CalendarContext, now: datetime) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        result = await answer_tool_calls(msg, context, make_calendar(http), Metrics(), now=now)
    assert_tool_calls_response(result)
    results: list[dict[str, Any]] = result["results"]  # type: ignore[assignment]
    return results


# --- finding 2: two 1 AMs on the day the clocks go back -----------------------------------------------


async def test_times_in_the_repeated_hour_are_told_apart() -> None:
    night = ctx(settings=CalendarSettings(mode="proxy", working_hours=NIGHT, max_slots=5, min_notice_minutes=0))
    now = datetime(2026, 10, 30, 12, tzinfo=NY)
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [offer] = await answer_at(message(("find_open_slots", {"after": "2026-11-01T00:30:00-04:00"})), night, now)
        second_one_am = offer["metadata"]["slots"][3]["start"]
        [booked] = await answer_at(message(("book_appointment", {"start": second_one_am, "name": "Sam"})), night, now)
    assert offer["result"].startswith(
        "The next open times are Sunday, November 1 at 12:30 AM, 1 AM EDT, 1:30 AM EDT, 1 AM EST, or 1:30 AM EST."
    )
    assert second_one_am == "2026-11-01T01:00:00-05:00"
    assert booked["result"].startswith("Booked with Dr. Doe on Sunday, November 1 from 1 AM EST to 1:30 AM EST.")


# --- finding 3: no year ---------------------------------------------------------------------------------


async def test_a_year_long_search_says_its_years() -> None:
    year = ctx(settings=CalendarSettings(mode="proxy", horizon_days=366))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.other_busy = [("2026-03-01T00:00:00Z", "2027-04-01T00:00:00Z")]
        [nothing] = await answer(message(("find_open_slots", {})), year)
        [far] = await answer(
            message(("check_availability", {"start": "2027-01-12T09:00:00-05:00", "end": "2027-01-12T17:00:00-05:00"}))
        )
    assert nothing["result"] == (
        "There are no open 30-minute times between Monday, March 2, 2026 at 9 AM and Wednesday, March 3, 2027 at "
        "8 AM, and none in the days after that I can book."
    )
    assert far["result"] == (
        "Dr. Doe is busy on Tuesday, January 12, 2027 from 9 AM to 5 PM. The rest of that time is free."
    )


# --- finding 5: a restored booking keeps a stale attendee -----------------------------------------------


async def test_rebooking_a_cancelled_slot_without_an_email_invites_nobody() -> None:
    slot = "2026-03-03T14:30:00-05:00"
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        await answer(message(("book_appointment", {"start": slot, "name": "Sam", "email": "sam@example.com"})))
        await answer(message(("cancel_appointment", {})))
        [again] = await answer(message(("book_appointment", {"start": slot, "name": "Kim"})))
    assert again["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 2:30 PM to 3 PM.")
    [event] = google.live()
    assert not event.get("attendees")
    restore = google.patch.calls.last.request
    assert restore.url.params["sendUpdates"] == "none"
    assert json.loads(restore.content)["attendees"] == []
    assert event["start"]["dateTime"] == slot and datetime.fromisoformat(event["created"]).tzinfo == UTC
