"""The Google Calendar fake refuses what Google's v3 API refuses, so tests against it catch wrong requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from tests.google_fakes import FakeGoogle, google_event, invitation, working_location
from tests.nango_fakes import BASE_URL

pytestmark = pytest.mark.anyio

EVENTS = f"{BASE_URL}/proxy/calendar/v3/calendars/primary/events"
HEADERS = {"Connection-Id": "conn-1", "Provider-Config-Key": "google-calendar"}


def event(
    event_id: str | None = "abcde12345", start: str = "2026-03-03T10:00:00-05:00", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"start": {"dateTime": start}, "end": {"dateTime": "2026-03-03T10:30:00-05:00"}}
    return body | ({"id": event_id} if event_id else {}) | extra


async def test_the_fake_validates_like_google() -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient(headers=HEADERS) as http:
        google = FakeGoogle(mock)
        assert (await http.post(EVENTS, json=event())).status_code == 200
        assert (await http.post(EVENTS, json=event())).status_code == 409  # duplicate id
        assert (await http.post(EVENTS, json=event("Not-Base32hex"))).status_code == 400  # id rules
        assert (await http.post(EVENTS, json=event("abc"))).status_code == 400  # at least 5 characters
        naive = event("abcde00001", start="2026-03-03T10:00:00")
        assert (await http.post(EVENTS, json=naive)).status_code == 400  # RFC 3339 needs an offset...
        zoned = naive | {"start": {"dateTime": "2026-03-03T10:00:00", "timeZone": "America/New_York"}}
        assert (await http.post(EVENTS, json=zoned)).status_code == 200  # ...unless timeZone names the zone
        backwards = event("abcde00002", start="2026-03-03T11:00:00-05:00")
        assert (await http.post(EVENTS, json=backwards)).status_code == 400  # empty time range
        assert (await http.delete(f"{EVENTS}/abcde12345")).status_code == 204
        assert (await http.delete(f"{EVENTS}/abcde12345")).status_code == 410  # deleted
        assert (await http.get(f"{EVENTS}/abcde12345")).json()["status"] == "cancelled"
        assert (await http.post(EVENTS, json=event())).status_code == 409  # a deleted event's id stays used
        assert (await http.get(EVENTS, headers={"Connection-Id": ""})).status_code == 400  # Nango needs it
        bad_time = {"timeMin": "2026-03-03T10:00:00", "timeMax": "2026-03-04T10:00:00Z"}
        assert (await http.get(EVENTS, params=bad_time)).status_code == 400
        unordered = {"orderBy": "startTime"}
        assert (await http.get(EVENTS, params=unordered)).status_code == 400  # needs singleEvents=true
    created = [e["created"] for e in google.events.values()]
    assert created == sorted(created) and len(set(created)) == len(created)
    assert all(datetime.fromisoformat(c).tzinfo == UTC for c in created)


async def test_the_fake_pages_with_page_tokens() -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient(headers=HEADERS) as http:
        FakeGoogle(mock)
        for i in range(5):
            await http.post(EVENTS, json=event(f"page{i:06d}", start=f"2026-03-03T0{i}:00:00-05:00"))
        seen, token, pages = [], None, 0
        while True:
            params = {"maxResults": "2", "singleEvents": "true", "orderBy": "startTime"}
            answer = (await http.get(EVENTS, params=params | ({"pageToken": token} if token else {}))).json()
            seen += [e["id"] for e in answer["items"]]
            pages += 1
            token = answer.get("nextPageToken")
            if not token:
                break
        assert (await http.get(EVENTS, params={"pageToken": "made-up"})).status_code == 400
    assert pages == 3 and seen == [f"page{i:06d}" for i in range(5)]


async def test_the_fakes_free_busy_counts_busy_as_google_does() -> None:
    day = {"timeMin": "2026-03-03T00:00:00Z", "timeMax": "2026-03-04T00:00:00Z", "items": [{"id": "primary"}]}
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient(headers=HEADERS) as http:
        google = FakeGoogle(mock)
        for hour, response in enumerate(["declined", "tentative", "needsAction", "accepted"]):
            start, end = f"2026-03-03T1{hour}:00:00Z", f"2026-03-03T1{hour}:30:00Z"
            google.add(invitation(f"invite{hour:04d}", start, end, response))
        google.add(working_location("where0001", "2026-03-03T14:00:00Z", "2026-03-03T15:00:00Z"))
        google.add(google_event("allday001") | {"start": {"date": "2026-03-03"}, "end": {"date": "2026-03-04"}})
        google.events["allday001"]["transparency"] = "transparent"
        busy = (await http.post(f"{BASE_URL}/proxy/calendar/v3/freeBusy", json=day)).json()
        too_long = day | {"timeMax": "2026-06-02T00:00:01Z"}  # past 90 days
        refused = await http.post(f"{BASE_URL}/proxy/calendar/v3/freeBusy", json=too_long)
    assert [b["start"] for b in busy["calendars"]["primary"]["busy"]] == [
        "2026-03-03T11:00:00.000Z",
        "2026-03-03T12:00:00.000Z",
        "2026-03-03T13:00:00.000Z",
    ]
    assert refused.status_code == 400 and refused.json()["error"]["errors"][0]["reason"] == "timeRangeTooLong"
