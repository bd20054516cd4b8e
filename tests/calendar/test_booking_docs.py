"""docs/booking.md for a business owner stays true: what a booking puts in the calendar, and which of the
page's numbers are settings and which are fixed in the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import respx

from proxy.calendar.abuse import MAX_NOTIFIED_MOVES_PER_CALL, CallCounts
from proxy.calendar.claim import ID_ATTEMPTS, READ_BACK_RESERVE
from proxy.calendar.google import MAX_LISTED_EVENTS
from proxy.calendar.references import MAX_WRONG_PER_CALL, new_reference
from proxy.config.calendar import CalendarSettings, WorkingHours
from proxy.config.schema import json_schema
from proxy.nango.client import MAX_CONCURRENT_REQUESTS
from proxy.vapi.service import TOOL_CALLS_TIMEOUT_SECONDS
from tests.google_fakes import FakeGoogle
from tests.vapi.test_tools import CALL_ID, CALLER, answer, message

pytestmark = pytest.mark.anyio

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "booking.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return PAGE.split(f"### {title}", 1)[1].split("\n#", 1)[0]


def bullet(text: str, label: str) -> str:
    return text.split(f"- **{label}", 1)[1].split("\n- ", 1)[0]


async def test_what_a_booking_puts_in_the_calendar_is_what_the_page_says() -> None:
    stored = section("What a booking puts in the calendar")
    booking = {"start": "2026-03-03T13:00:00-05:00", "name": "Sam Caller", "notes": "Knee pain", "summary": "Knee"}
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        await answer(message(("book_appointment", booking)))
        await answer(
            message(("book_appointment", booking | {"start": "2026-03-03T14:00:00-05:00", "email": "sam@example.com"}))
        )
        sent_updates = [request.url.params["sendUpdates"] for request, _ in google.insert.calls]
    quiet, invited = sorted(google.live(), key=lambda event: str(event["start"]["dateTime"]))
    # Title and description.
    assert '("Appointment with Sam Lee: Consultation")' in bullet(stored, "Title")
    assert quiet["summary"] == "Appointment with Sam Caller: Knee"
    description = bullet(stored, "Description")
    (first_line,) = re.findall(r'the line "([^"]+)"', " ".join(description.split()))
    assert invited["description"].splitlines()[0] == first_line
    labels = re.findall(r"`(\w+):`", description)
    assert [line.split(":")[0] for line in invited["description"].splitlines()[1:]] == labels
    assert f"Phone: {CALLER}" in quiet["description"]  # no number given: the one they call from
    # The hidden marks, exactly: `vapiGuest` only on the booking that sent an invitation.
    marks = re.findall(r"`(vapi\w+)`", bullet(stored, "Hidden marks"))
    assert sorted(invited["extendedProperties"]["private"]) == sorted(marks)
    assert sorted(quiet["extendedProperties"]["private"]) == sorted(set(marks) - {"vapiGuest"})
    assert quiet["extendedProperties"]["private"]["vapiCallId"] == CALL_ID
    # Nobody invited without an email; with one, the caller alone, and Google tells them.
    assert "attendees" not in quiet and sent_updates == ["none", "all"]
    assert [a["email"] for a in invited["attendees"]] == ["sam@example.com"]


def test_the_numbers_fixed_in_the_code_are_the_codes() -> None:
    table = section("Which numbers are settings")
    (fixed,) = [row for row in table.splitlines() if row.endswith("| fixed in the code, not settings |")]
    remembered = inspect.signature(CallCounts).parameters
    facts = [
        f"{TOOL_CALLS_TIMEOUT_SECONDS:g} s for one tool-calls message",
        f"the insert's {READ_BACK_RESERVE:g} s margin",
        f"{ID_ATTEMPTS} attempts per call and slot",
        f"{len(new_reference())}-digit references",
        f"{MAX_WRONG_PER_CALL} wrong references and {MAX_NOTIFIED_MOVES_PER_CALL} moves of an appointment with "
        "guests per call",
        f"remembered an hour, for {remembered['max_calls'].default:,} calls",
        f"{MAX_CONCURRENT_REQUESTS} Google and Nango requests in flight",
        f"{MAX_LISTED_EVENTS:,} events read per listing",
    ]
    assert remembered["ttl"].default == 3600
    for fact in facts:
        assert fact in fixed, fact


def test_the_settings_the_page_names_exist_with_the_defaults_it_gives() -> None:
    table = section("Which numbers are settings")
    schema = json_schema()["$defs"]
    for name in re.findall(r"`calendar\.(\w+)`|, `(\w+)`", table):
        key = name[0] or name[1]
        assert key in schema["CalendarLayer"]["properties"] or key == "tool_server", key
    assert "`server.max_tool_calls`" in table and "max_tool_calls" in schema["ServerSettings"]["properties"]
    assert schema["ServerSettings"]["properties"]["max_tool_calls"]["default"] == 16 and "(16)" in table
    defaults = CalendarSettings()
    assert defaults.working_hours == WorkingHours.default() and "(Mon-Fri 09:00-17:00)" in table
    for value in (
        f"appointment length ({defaults.slot_minutes} min)",
        f"buffer ({defaults.buffer_minutes})",
        f"times offered at once ({defaults.max_slots})",
        f"how far ahead ({defaults.horizon_days} days)",
        f"earliest booking from now ({defaults.min_notice_minutes} min)",
        f"days searched past an empty range ({defaults.search_ahead_days})",
        f"bookings per call ({defaults.max_bookings_per_call})",
        f"per calling number in any 24 hours ({defaults.max_bookings_per_caller_per_day})",
        f"invitations per address per call ({defaults.max_invitations_per_address})",
    ):
        assert value in table, value
    assert "TOOL_CALLS_TIMEOUT_SECONDS" not in PAGE  # a constant, not something to set
