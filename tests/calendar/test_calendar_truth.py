"""Issue 20: what the tools say and do matches the calendar, as Google counts it and as a caller hears it.

One regression test per finding, against the Google Calendar fake (tests/google_fakes.py). The booking
bounds (finding 4) are in tests/calendar/test_booking_bounds.py; the round trips (finding 6) in
tests/calendar/test_round_trips.py.
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
from tests.google_fakes import FakeGoogle, google_event, invitation, make_calendar, working_location
from tests.vapi.test_tools import CALL_ID, NY, answer, booked, ctx, message

pytestmark = pytest.mark.anyio

NIGHT = WorkingHours.parse({"default": ["00:00-04:00"]})
EMPTY_FREEBUSY = httpx.Response(200, json={"kind": "calendar#freeBusy", "calendars": {"primary": {"busy": []}}})


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


# --- finding 1: busy as Google counts it -----------------------------------------------------------------


async def test_a_declined_invitation_leaves_its_time_bookable() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(invitation("declined01", "2026-03-02T09:00:00-05:00", "2026-03-02T10:00:00-05:00", "declined"))
        [offer] = await answer(message(("find_open_slots", {})))
        first = offer["metadata"]["slots"][0]["start"]
        [booked_it] = await answer(message(("book_appointment", {"start": first, "name": "Sam"})))
    assert first == "2026-03-02T09:00:00-05:00"
    assert booked_it["result"].startswith("Booked with Dr. Doe on Monday, March 2 from 9 AM to 9:30 AM.")
    assert len(google.live()) == 2 and not google.delete.called


async def test_a_reschedule_onto_a_declined_invitation_stays() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00", call_id=CALL_ID))
        google.add(invitation("declined02", "2026-03-04T14:00:00-05:00", "2026-03-04T15:00:00-05:00", "declined"))
        [moved] = await answer(message(("reschedule_appointment", {"new_start": "2026-03-04T14:00:00-05:00"})))
    assert moved["result"] == "Done: the appointment is now on Wednesday, March 4 from 2 PM to 2:30 PM."
    assert google.events["mine00001"]["start"]["dateTime"] == "2026-03-04T14:00:00-05:00"
    assert google.patch.call_count == 1  # moved once, not moved back


@pytest.mark.parametrize("response", ["tentative", "needsAction", "accepted"])
async def test_tentative_and_unanswered_invitations_are_busy(response: str) -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(invitation("invited01", "2026-03-03T14:00:00-05:00", "2026-03-03T15:00:00-05:00", response))
        [result] = await answer(message(("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"})))
    assert result["result"].startswith("I can't book Tuesday, March 3 at 2 PM: that time is already taken.")
    assert not google.insert.called


async def test_a_working_location_and_a_free_event_do_not_block() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.add(working_location("where0001", "2026-03-03T09:00:00-05:00", "2026-03-03T17:00:00-05:00"))
        google.add(google_event("free00001", "2026-03-03T14:00:00-05:00", "2026-03-03T15:00:00-05:00"))
        google.events["free00001"]["transparency"] = "transparent"
        google.fail["freebusy"] = EMPTY_FREEBUSY  # freeBusy lags: only the re-read sees these events
        [result] = await answer(message(("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"})))
    assert result["result"].startswith("Booked") and not google.delete.called


async def test_an_event_made_in_the_calendar_meanwhile_takes_the_slot_whenever_it_was_made() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        google.fail["freebusy"] = EMPTY_FREEBUSY  # typed in after our free check; freeBusy does not show it yet
        typed = google_event("typed0001", "2026-03-03T14:00:00-05:00", "2026-03-03T15:00:00-05:00")
        google.add(typed | {"created": "2026-03-02T17:00:00.000Z"})  # after our insert's `created`
        [result] = await answer(message(("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"})))
    assert result["result"].startswith("I can't book Tuesday, March 3 at 2 PM: someone else just booked it.")
    assert [e["id"] for e in google.live()] == ["typed0001"] and google.delete.call_count == 1


# --- finding 7: a calendar whose own zone is not the user's --------------------------------------------


async def test_a_calendar_in_london_serves_a_new_york_user_in_new_york_time() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock, calendar_zone="Europe/London")
        london = google_event("london001", "2026-03-03T19:00:00", "2026-03-03T20:00:00")  # 2-3 PM in New York
        london |= {k: {"dateTime": london[k]["dateTime"], "timeZone": "Europe/London"} for k in ("start", "end")}
        google.add(london)
        pacific = google_event("pacific01", "2026-03-03T08:00:00-08:00", "2026-03-03T08:30:00-08:00")  # 11 AM NY
        google.add(pacific | {k: {"dateTime": pacific[k]["dateTime"]} for k in ("start", "end")})  # no timeZone
        free = google_event("pacific02", "2026-03-03T12:00:00-08:00", "2026-03-03T13:00:00-08:00")  # 3-4 PM NY
        google.add(
            free | {k: {"dateTime": free[k]["dateTime"]} for k in ("start", "end")} | {"transparency": "transparent"}
        )
        [offer] = await answer(message(("find_open_slots", {"after": "2026-03-03T10:30:00-05:00"})))
        [taken] = await answer(message(("book_appointment", {"start": "2026-03-03T14:30:00-05:00", "name": "Sam"})))
        [booked_it] = await answer(message(("book_appointment", {"start": "2026-03-03T15:00:00-05:00", "name": "Sam"})))
        listed = google.list.calls.last.response.json()
        [cancelled] = await answer(message(("cancel_appointment", {"appointment_start": "2026-03-03T20:00:00Z"})))
    assert [s["start"] for s in offer["metadata"]["slots"]] == [
        "2026-03-03T10:30:00-05:00",
        "2026-03-03T11:30:00-05:00",
        "2026-03-03T12:00:00-05:00",
    ]
    assert "that time is already taken" in taken["result"]
    assert booked_it["result"].startswith("Booked with Dr. Doe on Tuesday, March 3 from 3 PM to 3:30 PM.")
    assert listed["timeZone"] == "Europe/London"
    # The re-read around 3 PM got the free Pacific event back in the calendar's zone, ours in the user's.
    shown = {e["id"]: e["start"]["dateTime"] for e in listed["items"]}
    assert shown["pacific02"] == "2026-03-03T20:00:00+00:00" and "2026-03-03T15:00:00-05:00" in shown.values()
    assert cancelled["result"] == "The appointment on Tuesday, March 3 at 3 PM is cancelled."
