from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from proxy.metrics import Metrics
from proxy.nango.client import (
    Connection,
    NangoClient,
    NangoError,
    NangoSettings,
    RateLimit,
    parse_connection,
    pick_connection,
)
from proxy.nango.onboarding import create_connect_session
from proxy.secret import Secret
from tests.nango_fakes import (
    AUTH_ERROR,
    BASE_URL,
    INTEGRATION,
    SECRET_KEY,
    FakeClock,
    connection_json,
    connections_body,
    error_body,
    make_client,
    rate_headers,
    sample,
    settings,
)


def conn(connection_id: str, created: str, healthy: bool = True) -> Connection:
    return Connection(connection_id, "usr_1", created, healthy)


# --- pure parts ---


def test_parse_connection_reads_the_user_from_the_tag_first() -> None:
    raw = connection_json("c1", "usr_tag", end_user=True)
    raw["end_user"]["id"] = "usr_legacy"
    parsed = parse_connection(raw, "end_user_id")
    assert parsed == Connection("c1", "usr_tag", "2026-10-02T09:12:44.120Z", healthy=True)


def test_parse_connection_falls_back_to_end_user_and_marks_errors_unhealthy() -> None:
    raw = connection_json("c1", "usr_1", tag=False, end_user=True, errors=AUTH_ERROR)
    assert parse_connection(raw, "end_user_id") == Connection("c1", "usr_1", "2026-10-02T09:12:44.120Z", False)


def test_parse_connection_uses_the_configured_tag() -> None:
    raw = connection_json("c1", "cust_7", tag_key="customer_id")
    assert parse_connection(raw, "customer_id") == Connection("c1", "cust_7", "2026-10-02T09:12:44.120Z", True)
    assert parse_connection(raw, "end_user_id") == Connection("c1", None, "2026-10-02T09:12:44.120Z", True)


@pytest.mark.parametrize("raw", [None, [], "c1", {}, {"connection_id": ""}, {"connection_id": 5}])
def test_parse_connection_rejects_what_is_not_a_connection(raw: object) -> None:
    assert parse_connection(raw, "end_user_id") is None


def test_pick_connection_takes_the_newest_healthy_one() -> None:
    old = conn("old", "2026-01-01T00:00:00Z")
    new = conn("new", "2026-03-01T00:00:00.000Z")
    newest_broken = conn("broken", "2026-06-01T00:00:00Z", healthy=False)
    assert pick_connection([old, newest_broken, new]) == new
    assert pick_connection([newest_broken]) is None
    assert pick_connection([]) is None


def test_pick_connection_compares_instants_not_strings() -> None:
    # 09:00 at +02:00 is 07:00 UTC, older than 08:00Z although it sorts later as text.
    assert pick_connection([conn("a", "2026-01-01T09:00:00+02:00"), conn("b", "2026-01-01T08:00:00Z")]) == conn(
        "b", "2026-01-01T08:00:00Z"
    )


@given(st.permutations([conn(f"c{i}", created) for i, created in enumerate(["2026-01-01T00:00:00Z"] * 3 + ["x"])]))
def test_pick_connection_is_deterministic_whatever_the_order(conns: list[Connection]) -> None:
    assert pick_connection(conns) == conn("c2", "2026-01-01T00:00:00Z")


def test_rate_limit_clamps_resets_and_reads_retry_after_zero() -> None:
    limit = RateLimit()
    limit.observe(200, rate_headers(200, 150, 1_900_000_000), now=10.0, wall_now=1_800_000_000)
    assert (limit.limit, limit.remaining, limit.reset_at) == (200, 150, 130.0)  # clamped to 120 s
    limit.observe(429, {"Retry-After": "0"}, now=20.0, wall_now=0)
    assert limit.blocked_for(20.0) == 0.0
    limit.observe(429, {"Retry-After": "soon"}, now=20.0, wall_now=0)
    assert limit.blocked_for(20.0) == 110.0  # no usable Retry-After: wait for the reset


def test_rate_limit_ignores_garbage_headers() -> None:
    limit = RateLimit()
    limit.observe(200, {"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "nan"}, now=0.0, wall_now=0.0)
    assert limit == RateLimit()


def test_background_keeps_a_reserve_for_live_lookups() -> None:
    limit = RateLimit(limit=200, remaining=21, reset_at=40.0)
    assert limit.background_delay(10.0) == 0.0
    limit.remaining = 20
    assert limit.background_delay(10.0) == 30.0
    assert limit.background_delay(41.0) == 0.0  # the window has reset


def test_client_requires_a_secret_key() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        NangoClient(httpx.AsyncClient(), NangoSettings(), Metrics())


# --- requests ---


@pytest.mark.anyio
async def test_find_user_connections_filters_on_the_tag_with_the_key_and_timeouts() -> None:
    metrics = Metrics()
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections").respond(200, json=connections_body(connection_json("c1", "usr_1")))
        client = make_client(http, metrics, connect_timeout=0.5, read_timeout=2.0)
        assert await client.find_user_connections("usr_1") == [
            Connection("c1", "usr_1", "2026-10-02T09:12:44.120Z", True)
        ]
    request = route.calls.last.request
    assert dict(request.url.params) == {"integrationId": INTEGRATION, "tags[end_user_id]": "usr_1"}
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.extensions["timeout"] == {"connect": 0.5, "read": 2.0, "write": 2.0, "pool": 2.0}
    assert sample(metrics, "nango_requests", operation="find_connections", result="ok") == 1


@pytest.mark.anyio
async def test_find_user_connections_drops_connections_of_other_users() -> None:
    body = connections_body(connection_json("mine", "usr_1"), connection_json("theirs", "usr_2"))
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        nango.get("/connections").respond(200, json=body)
        conns = await make_client(http, Metrics()).find_user_connections("usr_1")
    assert [c.connection_id for c in conns] == ["mine"]


@pytest.mark.anyio
async def test_legacy_end_user_id_lookup_runs_only_when_the_tag_finds_nothing() -> None:
    legacy = connection_json("legacy", "usr_1", tag=False, end_user=True)
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        tagged = nango.get("/connections", params__contains={"tags[end_user_id]": "usr_1"}).respond(
            200, json=connections_body()
        )
        by_end_user = nango.get("/connections", params__contains={"endUserId": "usr_1"}).respond(
            200, json=connections_body(legacy)
        )
        assert await make_client(http, Metrics()).find_user_connections("usr_1") == []
        assert by_end_user.call_count == 0
        conns = await make_client(http, Metrics(), legacy_end_user_id_lookup=True).find_user_connections("usr_1")
    assert [c.connection_id for c in conns] == ["legacy"]
    assert (tagged.call_count, by_end_user.call_count) == (2, 1)
    assert dict(by_end_user.calls.last.request.url.params) == {"integrationId": INTEGRATION, "endUserId": "usr_1"}


@pytest.mark.anyio
async def test_list_connections_pages_until_a_short_page() -> None:
    pages = [
        [connection_json("c1", "u1"), connection_json("c2", "u2")],
        [connection_json("c3", "u3"), {"connection_id": None}],
        [connection_json("c5", "u5")],
    ]
    metrics = Metrics()
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections")
        route.side_effect = [httpx.Response(200, json=connections_body(*page)) for page in pages]
        client = make_client(http, metrics, index_page_size=2)
        got = [[c.connection_id for c in page] async for page in client.list_connections_pages()]
    assert got == [["c1", "c2"], ["c3"], ["c5"]]  # the malformed entry is skipped, not fatal
    assert route.call_count == 3
    params = [dict(call.request.url.params) for call in route.calls]
    assert params == [{"integrationId": INTEGRATION, "limit": "2", "page": str(n)} for n in range(3)]
    assert sample(metrics, "nango_requests", operation="list_connections", result="ok") == 3


@pytest.mark.anyio
async def test_list_connections_stops_on_an_empty_page_after_full_ones() -> None:
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections")
        route.side_effect = [
            httpx.Response(200, json=connections_body(connection_json("c1", "u1"))),
            httpx.Response(200, json=connections_body()),
        ]
        client = make_client(http, Metrics(), index_page_size=1)
        assert len([page async for page in client.list_connections_pages()]) == 2


@pytest.mark.anyio
async def test_get_connection_quotes_the_id_and_reports_deletion_as_not_found() -> None:
    full = connection_json("a/b", "usr_1") | {"credentials": {"type": "OAUTH2", "access_token": "ya29.token"}}
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        found = nango.get("/connections/a%2Fb").respond(200, json=full)
        nango.get("/connections/gone").respond(404, json=error_body("not_found"))
        client = make_client(http, Metrics())
        assert (await client.get_connection("a/b")).connection_id == "a/b"
        with pytest.raises(NangoError) as caught:
            await client.get_connection("gone")
    assert dict(found.calls.last.request.url.params) == {"provider_config_key": INTEGRATION}
    assert (caught.value.status, caught.value.code) == (404, "not_found")


@pytest.mark.anyio
async def test_create_connect_session_tags_the_user_and_limits_the_integration() -> None:
    answer = {"data": {"token": "nango_connect_session_abc", "connect_link": "https://connect.nango.dev/?s=1",
                       "expires_at": "2026-10-02T09:42:44.120Z"}}  # fmt: skip
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.post("/connect/sessions").respond(201, json=answer)
        session = await create_connect_session(make_client(http, Metrics()), "usr_1", "jane@example.com", "Jane Doe")
    assert json.loads(route.calls.last.request.content) == {
        "tags": {"end_user_id": "usr_1", "end_user_email": "jane@example.com", "end_user_display_name": "Jane Doe"},
        "allowed_integrations": [INTEGRATION],
    }
    assert str(session.token) == "nango_connect_session_abc"
    assert "nango_connect_session_abc" not in repr(session)
    assert (session.connect_link, session.expires_at) == ("https://connect.nango.dev/?s=1", "2026-10-02T09:42:44.120Z")


@pytest.mark.anyio
async def test_create_connect_session_omits_empty_optional_tags() -> None:
    answer = {"data": {"token": "t", "connect_link": "https://l", "expires_at": "e"}}
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.post("/connect/sessions").respond(201, json=answer)
        await create_connect_session(make_client(http, Metrics(), user_tag="customer_id"), "c7", None, "")
    assert json.loads(route.calls.last.request.content)["tags"] == {"customer_id": "c7"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "status", "code", "result"),
    [
        (httpx.Response(500, json=error_body("server_error")), 500, "server_error", "http_error"),
        (httpx.Response(403, json=error_body("forbidden")), 403, "forbidden", "http_error"),
        (httpx.Response(502, text="<html>Bad gateway</html>"), 502, "http_502", "http_error"),
        (httpx.Response(400, json={"error": {"code": "Not A Code!"}}), 400, "http_400", "http_error"),
        (httpx.Response(200, text="{not json"), 200, "invalid_response", "invalid_response"),
        (httpx.Response(200, json={"connections": {"c1": {}}}), 200, "invalid_response", "invalid_response"),
        (httpx.Response(200, json=[connection_json("c1")]), 200, "invalid_response", "invalid_response"),
        (httpx.Response(200, json=connections_body({"id": 1})), 200, "invalid_response", "invalid_response"),
        (httpx.ReadTimeout("slow"), None, "timeout", "timeout"),
        (httpx.ConnectError("refused"), None, "network_error", "network_error"),
    ],
)
async def test_failures_become_one_error_type(
    response: httpx.Response | Exception, status: int | None, code: str, result: str
) -> None:
    metrics = Metrics()
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        nango.get("/connections").mock(side_effect=[response])
        with pytest.raises(NangoError) as caught:
            await make_client(http, metrics).find_user_connections("usr_1")
    assert (caught.value.operation, caught.value.status, caught.value.code) == ("find_connections", status, code)
    assert sample(metrics, "nango_requests", operation="find_connections", result=result) == 1


@pytest.mark.anyio
async def test_live_requests_fail_fast_during_a_retry_after_window() -> None:
    clock, metrics = FakeClock(), Metrics()
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections")
        route.side_effect = [
            httpx.Response(429, headers={"Retry-After": "5"}, json=error_body("too_many_requests")),
            httpx.Response(200, json=connections_body()),
        ]
        client = make_client(http, metrics, clock)
        with pytest.raises(NangoError) as first:
            await client.find_user_connections("usr_1")
        with pytest.raises(NangoError) as second:
            await client.find_user_connections("usr_1")
        assert route.call_count == 1  # the second never reached Nango
        clock.advance(5)
        assert await client.find_user_connections("usr_1") == []
    assert (first.value.status, first.value.code, first.value.retry_after) == (429, "too_many_requests", 5.0)
    assert (second.value.code, second.value.retry_after) == ("rate_limited", 5.0)
    assert sample(metrics, "nango_requests", operation="find_connections", result="rate_limited") == 1
    assert sample(metrics, "nango_requests", operation="find_connections", result="skipped") == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_retry_after_zero_allows_the_next_request_at_once() -> None:
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections")
        route.side_effect = [
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.Response(200, json={"connections": []}),
        ]
        client = make_client(http, Metrics())
        with pytest.raises(NangoError) as caught:
            await client.find_user_connections("usr_1")
        assert await client.find_user_connections("usr_1") == []
    assert (caught.value.code, caught.value.retry_after) == ("rate_limited", 0.0)


@pytest.mark.anyio
async def test_background_paging_waits_for_the_budget_and_retries_a_rate_limited_page() -> None:
    clock = FakeClock()
    low = rate_headers(limit=200, remaining=3, reset=clock.wall + 30)
    full = [connection_json("c1", "u1")]
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections")
        route.side_effect = [
            httpx.Response(200, headers=low, json=connections_body(*full)),
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json=connections_body()),
        ]
        client = make_client(http, Metrics(), clock, index_page_size=1)
        pages = [[c.connection_id for c in page] async for page in client.list_connections_pages()]
    assert pages == [["c1"], []]  # the page fetched before the 429 is kept
    # Page 1 waited for the reset (leaving the reserve to live lookups), then out the Retry-After.
    assert clock.sleeps == [30.0, 7.0]
    assert [dict(call.request.url.params)["page"] for call in route.calls] == ["0", "1", "1"]


@pytest.mark.anyio
async def test_live_requests_are_not_held_back_by_a_low_budget() -> None:
    clock = FakeClock()
    low = rate_headers(limit=200, remaining=1, reset=clock.wall + 30)
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections").respond(200, headers=low, json=connections_body())
        client = make_client(http, Metrics(), clock)
        await client.find_user_connections("usr_1")
        await client.find_user_connections("usr_2")
    assert route.call_count == 2
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_the_secret_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"code": "invalid_credentials", "message": f"bad key {SECRET_KEY}"}, "key": SECRET_KEY}
    errors: list[NangoError] = []
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        nango.get("/connections").mock(
            side_effect=[
                httpx.Response(401, json=echo),
                httpx.Response(200, text=SECRET_KEY),
                httpx.ConnectError("refused"),
            ]
        )
        client = make_client(http, Metrics())
        for _ in range(3):
            with pytest.raises(NangoError) as caught:
                await client.find_user_connections("usr_1")
            errors.append(caught.value)
    shown = [caplog.text, repr(client), repr(settings()), repr(settings().secret_key)]
    shown += [text for error in errors for text in (str(error), repr(error))]
    assert all(SECRET_KEY not in text for text in shown)
    assert [e.code for e in errors] == ["invalid_credentials", "invalid_response", "network_error"]
    assert "invalid_credentials" in caplog.text


def test_settings_repr_hides_every_key() -> None:
    shown = repr(settings(webhook_signing_keys=(Secret("whsec-abc"),)))
    assert SECRET_KEY not in shown
    assert "whsec-abc" not in shown
