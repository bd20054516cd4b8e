from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from proxy.calendar.google import CalendarError, classify
from proxy.metrics import Metrics
from tests.google_fakes import (
    DELETED,
    DUPLICATE,
    INVALID_CREDENTIALS,
    NOT_FOUND,
    REFRESH_FAILED,
    events_list_body,
    free_busy_body,
    google_error,
    google_event,
    make_calendar,
    nango_error,
)
from tests.nango_fakes import BASE_URL, INTEGRATION, SECRET_KEY

GCAL = f"{BASE_URL}/proxy/calendar/v3"
EVENTS = f"{GCAL}/calendars/primary/events"
CONN = "0c1e3e0a-conn"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- requests and happy paths --------------------------------------------------------------


@pytest.mark.anyio
async def test_free_busy_calls_nango_proxy_with_the_connection_headers() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        route = mock.post(f"{GCAL}/freeBusy").respond(
            200, json=free_busy_body(("2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z"))
        )
        busy = await make_calendar(http).free_busy(
            CONN, "primary", start=t("2026-03-02T09:00:00-05:00"), end=t("2026-03-03T09:00:00-05:00")
        )
    request = route.calls.last.request
    assert request.headers["Connection-Id"] == CONN
    assert request.headers["Provider-Config-Key"] == INTEGRATION
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert json.loads(request.content) == {
        "timeMin": "2026-03-02T14:00:00Z",
        "timeMax": "2026-03-03T14:00:00Z",
        "items": [{"id": "primary"}],
    }
    assert busy == [(datetime(2026, 3, 2, 15, tzinfo=UTC), datetime(2026, 3, 2, 16, tzinfo=UTC))]


@pytest.mark.anyio
async def test_free_busy_reports_a_calendar_error_from_the_body() -> None:
    body = {
        "kind": "calendar#freeBusy",
        "calendars": {"c@example.com": {"errors": [{"domain": "global", "reason": "notFound"}]}},
    }
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        mock.post(f"{GCAL}/freeBusy").respond(200, json=body)
        with pytest.raises(CalendarError) as caught:
            await make_calendar(http).free_busy(
                CONN, "c@example.com", start=t("2026-03-02T09:00Z"), end=t("2026-03-02T10:00Z")
            )
    assert caught.value.kind == "not_found"


@pytest.mark.anyio
async def test_calendar_ids_are_escaped_in_the_path() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        route = mock.get(f"{GCAL}/calendars/team%40group.calendar.google.com/events/abc12345").respond(
            200, json=google_event("abc12345")
        )
        await make_calendar(http).get_event(CONN, "team@group.calendar.google.com", "abc12345")
    assert route.called


@pytest.mark.anyio
async def test_insert_sends_the_client_id_and_returns_the_created_event() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        route = mock.post(EVENTS).respond(200, json=google_event("evt0001"))
        inserted = await make_calendar(http).insert_event(
            CONN, "primary", {"summary": "x"}, event_id="evt0001", send_updates="all"
        )
    assert inserted.created and inserted.event["id"] == "evt0001"
    request = route.calls.last.request
    assert json.loads(request.content) == {"summary": "x", "id": "evt0001"}
    assert request.url.params["sendUpdates"] == "all"


@pytest.mark.anyio
async def test_insert_409_returns_the_existing_event_as_success() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        mock.post(EVENTS).respond(409, json=DUPLICATE)
        mock.get(f"{EVENTS}/evt0001").respond(200, json=google_event("evt0001"))
        inserted = await make_calendar(http).insert_event(CONN, "primary", {"summary": "x"}, event_id="evt0001")
    assert not inserted.created and inserted.event["id"] == "evt0001"


@pytest.mark.anyio
async def test_insert_409_on_a_deleted_event_restores_it() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        mock.post(EVENTS).respond(409, json=DUPLICATE)
        mock.get(f"{EVENTS}/evt0001").respond(200, json=google_event("evt0001", status="cancelled"))
        patch = mock.patch(f"{EVENTS}/evt0001").respond(200, json=google_event("evt0001"))
        inserted = await make_calendar(http).insert_event(CONN, "primary", {"summary": "x"}, event_id="evt0001")
    assert inserted.created
    assert json.loads(patch.calls.last.request.content) == {"summary": "x", "status": "confirmed", "attendees": []}


@pytest.mark.anyio
async def test_delete_204_and_410_both_succeed_404_does_not() -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        calendar = make_calendar(http)
        mock.delete(f"{EVENTS}/gone0001").respond(410, json=DELETED)
        mock.delete(f"{EVENTS}/live0001").respond(204)
        mock.delete(f"{EVENTS}/none0001").respond(404, json=NOT_FOUND)
        assert await calendar.delete_event(CONN, "primary", "live0001") is True
        assert await calendar.delete_event(CONN, "primary", "gone0001") is False
        with pytest.raises(CalendarError) as caught:
            await calendar.delete_event(CONN, "primary", "none0001")
    assert caught.value.kind == "not_found"


@pytest.mark.anyio
async def test_patch_sends_only_the_changes() -> None:
    changes = {"start": {"dateTime": "2026-03-11T09:00:00-04:00"}, "end": {"dateTime": "2026-03-11T09:30:00-04:00"}}
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        route = mock.patch(f"{EVENTS}/evt0001").respond(
            200, json=google_event("evt0001", *[c["dateTime"] for c in changes.values()])
        )
        event = await make_calendar(http).patch_event(CONN, "primary", "evt0001", changes, send_updates="none")
    assert json.loads(route.calls.last.request.content) == changes
    assert event["start"]["dateTime"] == "2026-03-11T09:00:00-04:00"


@pytest.mark.anyio
async def test_list_events_filters_on_private_properties() -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as http:
        route = mock.get(EVENTS).respond(200, json=events_list_body(google_event("evt0001")))
        events = await make_calendar(http).list_events(
            CONN,
            "primary",
            start=t("2026-03-02T09:00Z"),
            end=t("2027-03-02T09:00Z"),
            private={"vapiCallerNumber": "+14155550123"},
        )
    assert [e["id"] for e in events] == ["evt0001"]
    params = route.calls.last.request.url.params
    assert params.get_list("privateExtendedProperty") == ["vapiCallerNumber=+14155550123"]
    assert (params["singleEvents"], params["orderBy"], params["timeMin"]) == (
        "true",
        "startTime",
        "2026-03-02T09:00:00Z",
    )


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, INVALID_CREDENTIALS, "auth"),
        (403, google_error(403, "insufficientPermissions", "Insufficient Permission"), "auth"),
        (403, google_error(403, "rateLimitExceeded", "Rate Limit Exceeded"), "unavailable"),
        (429, google_error(429, "rateLimitExceeded", "Rate Limit Exceeded"), "unavailable"),
        (500, google_error(500, "backendError", "Backend Error"), "unavailable"),
        (503, None, "unavailable"),
        (404, NOT_FOUND, "not_found"),
        (410, DELETED, "not_found"),
        (409, DUPLICATE, "conflict"),
        (400, google_error(400, "timeRangeEmpty", "The specified time range is empty."), "invalid"),
        (424, REFRESH_FAILED, "auth"),
        (400, nango_error("server_error", "Failed to get connection"), "auth"),
        (400, nango_error("failed_to_get_connection", "Failed to get connection credentials"), "auth"),
        (424, nango_error("connection_refresh_backoff", "refresh is backing off"), "auth"),
        (400, nango_error("invalid_credentials", "invalid credentials"), "auth"),
        (401, nango_error("unknown_account", "No account for this secret key"), "unavailable"),
        (404, nango_error("unknown_provider_config", "Provider config not found"), "invalid"),
        (402, nango_error("plan_limit", "Your plan limits have been reached."), "unavailable"),
        (502, None, "unavailable"),
    ],
)
@pytest.mark.anyio
async def test_errors_map_to_one_kind(status: int, body: dict[str, Any] | None, kind: str) -> None:
    assert classify(status, body).kind == kind
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        mock.get(f"{EVENTS}/evt0001").respond(status, json=body) if body else mock.get(f"{EVENTS}/evt0001").respond(
            status
        )
        with pytest.raises(CalendarError) as caught:
            await make_calendar(http).get_event(CONN, "primary", "evt0001")
    assert caught.value.kind == kind and caught.value.status == status


@pytest.mark.parametrize(
    ("effect", "kind"), [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "unavailable")]
)
@pytest.mark.anyio
async def test_transport_failures(effect: Exception, kind: str) -> None:
    metrics = Metrics()
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        mock.post(f"{GCAL}/freeBusy").mock(side_effect=effect)
        with pytest.raises(CalendarError) as caught:
            await make_calendar(http, metrics).free_busy(
                CONN, "primary", start=t("2026-03-02T09:00Z"), end=t("2026-03-02T10:00Z")
            )
    assert caught.value.kind == kind
    result = "timeout" if kind == "timeout" else "connection_error"
    assert metrics.nango_requests.labels(operation="calendar_freebusy", result=result)._value.get() == 1


@pytest.mark.anyio
async def test_the_secret_key_never_reaches_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = nango_error("server_error", f"Failed to get connection for key {SECRET_KEY}")
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        calendar = make_calendar(http)
        mock.get(f"{EVENTS}/evt0001").respond(424, json=echo)
        with pytest.raises(CalendarError) as caught:
            await calendar.get_event(CONN, "primary", "evt0001")
    assert caught.value.kind == "auth"
    for text in (str(caught.value), repr(caught.value), caught.value.detail, repr(calendar), caplog.text):
        assert SECRET_KEY not in text
    assert "**********" in caught.value.detail


@pytest.mark.anyio
async def test_successes_are_counted_per_operation() -> None:
    metrics = Metrics()
    async with respx.mock() as mock, httpx.AsyncClient() as http:
        mock.get(f"{EVENTS}/evt0001").respond(200, json=google_event("evt0001"))
        await make_calendar(http, metrics).get_event(CONN, "primary", "evt0001")
    assert metrics.nango_requests.labels(operation="calendar_get", result="ok")._value.get() == 1
