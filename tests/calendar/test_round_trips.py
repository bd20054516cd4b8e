"""The calendar requests each tool waits for one after another (what a caller hears as silence is that many
round trips), on Google and on Microsoft Graph. Counted by the fakes (`in_sequence`); bench/round_trips.py
measures the same at 150 ms per request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from proxy.config.calendar import CalendarSettings
from proxy.metrics import Metrics
from proxy.vapi.tools import answer_tool_calls
from tests.google_fakes import FakeGoogle
from tests.graph_fakes import FakeGraph, make_outlook
from tests.vapi.test_tools import NOW, REFERENCE, answer, booked, ctx, message

pytestmark = pytest.mark.anyio

LATENCY = 0.01  # long enough that a request sent after another's answer is told from one sent beside it


async def requests_in_sequence(
    call: tuple[str, dict[str, Any]], settings: CalendarSettings | None = None, *, busy: bool = False
) -> tuple[int, dict[str, Any], FakeGoogle]:
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock, latency=LATENCY)
        google.add(booked("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00"))
        if busy:
            google.other_busy = [("2026-03-01T00:00:00Z", "2027-04-01T00:00:00Z")]
        [result] = await answer(message(call), ctx(settings=settings or CalendarSettings(mode="proxy")))
    return google.in_sequence(), result, google


@pytest.mark.parametrize(
    ("call", "most"),
    [
        (("check_availability", {"start": "2026-03-03T09:00:00-05:00", "end": "2026-03-03T17:00:00-05:00"}), 1),
        (("find_open_slots", {}), 1),
        (("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"}), 3),
        (("reschedule_appointment", {"new_start": "2026-03-05T11:00:00-05:00", "reference": REFERENCE}), 3),
        (("cancel_appointment", {"reference": REFERENCE}), 2),
    ],
    ids=["check", "find", "book", "reschedule", "cancel"],
)
async def test_each_tool_waits_for_few_requests_in_sequence(call: tuple[str, dict[str, Any]], most: int) -> None:
    sequential, result, _ = await requests_in_sequence(call)
    assert "result" in result and not result["result"].startswith("I can't"), result
    assert sequential == most


async def test_a_year_of_busy_calendar_is_searched_in_two_steps_within_freebusys_range() -> None:
    year = CalendarSettings(mode="proxy", horizon_days=366)
    sequential, result, google = await requests_in_sequence(("find_open_slots", {}), year, busy=True)
    assert result["result"].startswith("There are no open 30-minute times between Monday, March 2, 2026")
    assert sequential == 2
    assert google.freebusy.call_count == 7  # 15 days, then six windows of at most 60 days at once
    # Every window within the range freeBusy accepts (the fake refuses past FREEBUSY_MAX_DAYS, as Google does).
    assert google.most_in_flight == 6 and all(c.response.status_code == 200 for c in google.freebusy.calls)


OUTLOOK_STEPS: list[tuple[tuple[str, dict[str, Any]], int]] = [
    (("check_availability", {"start": "2026-03-03T09:00:00-05:00", "end": "2026-03-03T17:00:00-05:00"}), 1),
    (("find_open_slots", {}), 1),
    (("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"}), 3),
    (("reschedule_appointment", {"new_start": "2026-03-03T15:00:00-05:00"}), 3),
    (("cancel_appointment", {}), 2),
]


async def test_each_tool_waits_for_as_few_requests_on_graph_as_on_google() -> None:
    """Issue 21: the same targets on Microsoft Graph; each step works on what the one before left (the
    reschedule and cancel find the booking this call made)."""
    counted: list[int] = []
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        graph = FakeGraph(mock, latency=LATENCY)
        for call, _ in OUTLOOK_STEPS:
            graph.log.clear()
            answer = await answer_tool_calls(message(call), ctx(), make_outlook(http), Metrics(), now=NOW, timeout=5)
            [result] = answer["results"]  # type: ignore[index]
            assert "result" in result and not result["result"].startswith("I can't"), result
            counted.append(graph.in_sequence())
    assert counted == [most for _, most in OUTLOOK_STEPS]
