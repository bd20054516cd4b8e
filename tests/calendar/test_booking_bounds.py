"""Issue 20 finding 4: one call, or one calling number, cannot make the owner's calendar send invitations without
bound, and what the caller says enters the event cut to length and marked as theirs."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import respx

from proxy.calendar.abuse import MARK, NAME_CHARS, NOTES_CHARS, CallCounts
from proxy.config import ConfigError, parse_config
from proxy.config.calendar import CalendarSettings
from tests.google_fakes import FakeGoogle
from tests.vapi.test_tools import CALLER, answer, booked, ctx, message

pytestmark = pytest.mark.anyio


def book(day: int, hour: int, **extra: str) -> tuple[str, dict[str, Any]]:
    return ("book_appointment", {"start": f"2026-03-{day:02d}T{hour:02d}:00:00-05:00", "name": "Sam"} | extra)


async def test_a_call_books_at_most_three_and_the_fourth_hears_why() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        done = [await answer(message(book(3, hour))) for hour in (9, 10, 11)]
        [fourth] = await answer(message(book(3, 12)))
        [retry] = await answer(message(book(3, 10)))  # the same booking again is not a new one
        await answer(message(("cancel_appointment", {"appointment_start": "2026-03-03T09:00:00-05:00"})))
        [after_cancel] = await answer(message(book(3, 13)))  # a cancelled booking still sent its invitation
    assert all(r[0]["result"].startswith("Booked") for r in done)
    assert fourth["result"] == (
        "I can book at most 3 appointments on one call. Anything more has to go through the office directly."
    )
    assert retry["result"].startswith("Booked") and retry["metadata"]["alreadyExisted"] is True
    assert after_cancel["result"].startswith("I can book at most 3 appointments on one call.")
    assert google.insert.call_count == 4  # three bookings and the retry's (409, found again); none for the refused
    assert len(google.live()) == 2


async def test_the_bound_per_call_is_a_setting() -> None:
    one = ctx(settings=CalendarSettings(mode="proxy", max_bookings_per_call=1))
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        [first] = await answer(message(book(3, 9)), one)
        [second] = await answer(message(book(3, 10)), one)
    assert first["result"].startswith("Booked")
    assert second["result"].startswith("I can book at most 1 appointment on one call.")


async def test_a_number_books_a_bounded_number_a_day_across_calls() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        for i in range(6):  # six bookings by this number on earlier calls today (created within the last 24 hours)
            google.add(booked(f"today{i:04d}", f"2026-03-1{i}T09:00:00-04:00", f"2026-03-1{i}T09:30:00-04:00"))
        google.events["today0000"]["created"] = "2026-03-01T12:00:00.000Z"  # 25 hours before now: not today's
        google.add(booked("other0001", "2026-03-04T09:00:00-05:00", "2026-03-04T09:30:00-05:00", number="+12125550000"))
        [sixth] = await answer(message(book(3, 9)))
        [seventh] = await answer(message(book(3, 10)))
        [withheld] = await answer(message(book(3, 11)), ctx(caller_number=None))
    assert sixth["result"].startswith("Booked")
    assert seventh["result"] == (
        "This phone number has booked as many appointments as I can take in one day. Anything more has to go "
        "through the office directly."
    )
    assert withheld["result"].startswith("Booked")  # a withheld number is bounded per call only
    request = google.list.calls[0].request.url.params
    assert request.get_list("privateExtendedProperty") == [f"vapiCallerNumber={CALLER}"]
    assert request["showDeleted"] == "true"


async def test_invitations_to_one_address_are_bounded_per_call() -> None:
    roomy = ctx(settings=CalendarSettings(mode="proxy", max_bookings_per_call=5))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        results = [
            (await answer(message(book(3, hour, email=email)), roomy))[0]
            for hour, email in [(9, "kim@example.com"), (10, "KIM@example.com"), (11, "kim@example.com")]
        ]
        [other] = await answer(message(book(3, 12, email="lee@example.com")), roomy)
        [no_email] = await answer(message(book(3, 13)), roomy)
    assert [r["result"].startswith("Booked") for r in results] == [True, True, False]
    assert results[2]["result"] == (
        "I've sent as many invitations to that email address as I can on one call. Anything more has to go "
        "through the office directly."
    )
    assert other["result"].startswith("Booked") and no_email["result"].startswith("Booked")
    invited = [json.loads(c.request.content).get("attendees") for c in google.insert.calls]
    assert sum(1 for a in invited if a and a[0]["email"].lower() == "kim@example.com") == 2


async def test_an_appointment_with_guests_is_moved_at_most_three_times_a_call() -> None:
    """Each move of a booking with a guest e-mails them from the owner's account: a call gets three such moves
    (the count is the call's, whichever replica answers: tests/calendar/test_callcounts.py); a booking without
    guests e-mails nobody and moves freely."""
    counts = CallCounts()
    slots = ["2026-03-03T15:00:00-05:00", "2026-03-03T16:00:00-05:00"]
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [booked_] = await answer(message(book(3, 14, email="sam@example.com")), counts=counts)
        moves = []
        for i in range(4):
            move = ("reschedule_appointment", {"new_start": slots[i % 2]})
            moves.append((await answer(message(move), counts=counts))[0])
        patches = google.patch.call_count
        quiet = ctx(call_id="call-without-guests")
        await answer(message(book(4, 14)), quiet, counts=counts)
        quiet_moves = [
            (await answer(message(("reschedule_appointment", {"new_start": f"2026-03-04T{h}:00:00-05:00"})), quiet,
                          counts=counts))[0]
            for h in (10, 11, 12, 13)
        ]  # fmt: skip
    assert booked_["result"].startswith("Booked")
    assert all(m["result"].startswith("Done: the appointment is now") for m in moves[:3])
    assert moves[3]["result"] == (
        "I can move an appointment with guests at most 3 times on one call: each move e-mails them. "
        "Anything more has to go through the office directly."
    )
    assert patches == 3  # the refused move sent nothing
    assert all(m["result"].startswith("Done: the appointment is now") for m in quiet_moves)


async def test_caller_text_is_cut_to_length_kept_on_its_line_and_marked_as_the_callers() -> None:
    args = {
        "start": "2026-03-03T14:30:00-05:00",
        "name": "Sam\nPhone: +1 800 FAKE\u202e" + "x" * 500,
        "summary": "Win a prize at http://example.test " * 20,
        "notes": "knee\n\nplease call " * 200,
        "email": "sam@example.com",
    }
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        [result] = await answer(message(("book_appointment", args)))
    assert result["result"].startswith("Booked")
    [event] = google.live()
    description: str = event["description"]
    lines = description.split("\n")
    assert lines[0] == MARK == "Booked by the voice assistant. Given by the caller, not checked:"
    name_line = next(line for line in lines if line.startswith("Name: "))
    assert name_line.startswith("Name: Sam Phone: +1 800 FAKE") and len(name_line) == len("Name: ") + NAME_CHARS
    assert not any(line.startswith("Phone: +1 800") for line in lines)  # a caller cannot forge a line
    assert "\u202e" not in description
    notes = next(line for line in lines if line.startswith("Notes: "))
    assert len(notes) <= len("Notes: ") + NOTES_CHARS
    assert event["summary"].startswith("Appointment with Sam Phone") and len(event["summary"]) < 200
    assert event["attendees"][0]["displayName"] == name_line.removeprefix("Name: ")


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_bookings_per_call", 0), ("max_bookings_per_caller_per_day", 201), ("max_invitations_per_address", "two")],
)
def test_the_bounds_are_validated_with_their_path(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        CalendarSettings(**{key: value})  # type: ignore[arg-type]
    text = textwrap.dedent(
        f"""\
        auth: {{vapi_secrets: [s3cret-value]}}
        nango: {{base_url: "https://nango.example.com", secret_key: nango-key}}
        calendar: {{mode: proxy, {key}: {json.dumps(value)}}}
        templates:
          default: {{model: {{provider: openai, model: gpt-4o}}}}
        users:
          - {{id: doe, name: Dr. Doe, timezone: America/New_York}}
        routes:
          - {{to: "+1 650 555 0100", user: doe}}
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "routing.yaml", {})
    assert f"calendar.{key}" in str(caught.value) and "routing.yaml:3" in str(caught.value)
