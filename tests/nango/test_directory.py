from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from proxy.metrics import Metrics
from proxy.nango.client import PAGE_ATTEMPTS, Connection, NangoClient
from proxy.nango.directory import BREAKER_THRESHOLD, FAILURE_TTL_SECONDS, ConnectionDirectory, Lookup
from tests.nango_fakes import (
    AUTH_ERROR,
    BASE_URL,
    SECRET_KEY,
    FakeClock,
    connection_json,
    connections_body,
    error_body,
    rate_headers,
    sample,
    settings,
)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
PAGE_CREATED = "2026-10-02T09:12:44.120Z"  # connection_json's default
OLD = "2026-01-01T00:00:00Z"


def conn(
    connection_id: str, user_id: str, *, healthy: bool = True, created: str = "2026-11-01T00:00:00Z"
) -> Connection:
    """Nango's record of a connection, as a webhook confirmation or a lookup reads it."""
    return Connection(connection_id, user_id, created, healthy)


@dataclass
class Env:
    directory: ConnectionDirectory
    nango: respx.MockRouter
    metrics: Metrics
    clock: FakeClock

    def events(self, event: str) -> float:
        return sample(self.metrics, "connection_cache", event=event)


@asynccontextmanager
async def env(sleep: Callable[[float], Awaitable[None]] | None = None, **overrides: Any) -> AsyncIterator[Env]:
    clock, metrics = FakeClock(), Metrics()
    async with httpx.AsyncClient() as http:
        with respx.mock(base_url=BASE_URL, assert_all_called=False) as nango:
            nango_settings = settings(**overrides)
            client = NangoClient(
                http, nango_settings, metrics, clock=clock, wall_clock=clock.wall_clock, sleep=sleep or clock.sleep
            )
            directory = ConnectionDirectory(client, nango_settings, metrics, clock=clock)
            try:
                yield Env(directory, nango, metrics, clock)
            finally:
                await directory.aclose()


def user_route(nango: respx.MockRouter, user_id: str = "usr_1") -> respx.Route:
    return nango.get("/connections", params__contains={"tags[end_user_id]": user_id})


def gated(response: httpx.Response, gate: asyncio.Event, calls: list[httpx.Request]) -> Handler:
    """A Nango that answers only once the gate opens."""

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        await gate.wait()
        return response

    return handler


async def settle(directory: ConnectionDirectory) -> None:
    """Let background lookups finish."""
    for _ in range(100):
        if directory.status()["lookups_in_flight"] == 0:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("background lookups did not finish")


ONE = connections_body(connection_json("c1", "usr_1"))


# --- the index ---


@pytest.mark.anyio
async def test_index_is_built_by_paging_and_answers_without_per_user_requests() -> None:
    pages = [
        [connection_json("c1-new", "u1", created="2026-05-01T00:00:00Z"), connection_json("c2", "u2")],
        [connection_json("c3", "u3"), connection_json("c4", "u4", errors=AUTH_ERROR)],
        [connection_json("c1-old", "u1", created="2026-01-01T00:00:00Z")],
    ]
    async with env(index_page_size=2) as e:
        listing = e.nango.get("/connections", params__contains={"limit": "2"})
        listing.side_effect = [httpx.Response(200, json=connections_body(*page)) for page in pages]
        per_user = e.nango.get("/connections")
        assert await e.directory.refresh_index() is True
        assert await e.directory.lookup("u1", timeout=1) == Lookup("c1-new", "index")
        assert await e.directory.lookup("u3", timeout=1) == Lookup("c3", "index")
        unhealthy = await e.directory.lookup("u4", timeout=1)
        assert (unhealthy.connection_id, unhealthy.source) == (None, "unhealthy")
        assert (listing.call_count, per_user.call_count) == (3, 0)
        assert e.events("index_hit") == 3
        status = e.directory.status()
        assert (status["nango"], status["index_size"], status["index_age_seconds"]) == ("ok", 4, 0.0)
        e.clock.advance(12)
        assert e.directory.status()["index_age_seconds"] == 12.0
        assert e.metrics.registry.get_sample_value("vapi_proxy_nango_index_connections") == 4


@pytest.mark.anyio
async def test_a_user_missing_from_the_index_is_looked_up() -> None:
    async with env() as e:
        e.nango.get("/connections", params__contains={"limit": "2000"}).respond(200, json=connections_body())
        route = user_route(e.nango).respond(200, json=ONE)
        await e.directory.refresh_index()
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert route.call_count == 1


@pytest.mark.anyio
async def test_a_failed_refresh_keeps_the_old_index_and_reports_degraded() -> None:
    async with env() as e:
        listing = e.nango.get("/connections", params__contains={"limit": "2000"})
        listing.side_effect = [
            httpx.Response(200, json=ONE),
            # A page is asked PAGE_ATTEMPTS times before the pass gives up.
            *[httpx.Response(500, json=error_body("server_error"))] * PAGE_ATTEMPTS,
            httpx.Response(200, json=connections_body()),
        ]
        assert await e.directory.refresh_index() is True
        assert await e.directory.refresh_index() is False
        assert e.clock.sleeps == [1.0, 2.0, 4.0, 8.0]
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "index")
        status = e.directory.status()
        assert (status["nango"], status["last_error"], status["index_size"]) == ("degraded", "server_error", 1)
        assert await e.directory.refresh_index() is True  # a deleted connection leaves with the next refresh
        status = e.directory.status()
        assert (status["nango"], status["last_error"], status["index_size"]) == ("ok", None, 0)


@pytest.mark.anyio
async def test_concurrent_refreshes_share_one_pass() -> None:
    async with env() as e:
        listing = e.nango.get("/connections").respond(200, json=ONE)
        assert await asyncio.gather(*(e.directory.refresh_index() for _ in range(5))) == [True] * 5
        assert listing.call_count == 1


@pytest.mark.anyio
async def test_start_index_refresh_runs_in_the_background_and_joins_a_running_one() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env() as e:
        e.nango.get("/connections").mock(side_effect=gated(httpx.Response(200, json=ONE), gate, calls))
        first = e.directory.start_index_refresh()
        assert first is not None
        assert e.directory.start_index_refresh() is first  # a config reload during a refresh joins it
        gate.set()
        assert await first is True
        assert len(calls) == 1
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "index")


@pytest.mark.anyio
async def test_webhooks_during_a_refresh_survive_the_swap() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    page = connections_body(connection_json("c1", "usr_1"), connection_json("c2", "usr_2"))
    async with env() as e:
        e.nango.get("/connections").mock(side_effect=gated(httpx.Response(200, json=page), gate, calls))
        refresh = asyncio.create_task(e.directory.refresh_index())
        while not calls:
            await asyncio.sleep(0)
        e.directory.apply_user_connections("usr_1", [conn("c1-replaced", "usr_1")])  # newer than the page being sent
        e.directory.apply_user_connections("usr_3", [conn("c3", "usr_3")])
        e.directory.apply_user_connections("usr_2", [conn("c2", "usr_2", healthy=False, created=PAGE_CREATED)])
        gate.set()
        assert await refresh is True
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1-replaced", "index")
        assert await e.directory.lookup("usr_3", timeout=1) == Lookup("c3", "index")
        assert (await e.directory.lookup("usr_2", timeout=1)).source == "unhealthy"


@pytest.mark.anyio
async def test_the_refresher_runs_periodically_and_survives_failures() -> None:
    async with env(index_refresh_interval=0.01) as e:
        listing = e.nango.get("/connections")
        listing.side_effect = [
            RuntimeError("bug"),
            httpx.Response(503),
            httpx.Response(200, json=ONE),
            httpx.Response(200, json=ONE),
        ]
        runner = asyncio.create_task(e.directory.run_index_refresher())
        for _ in range(500):
            if listing.call_count >= 4:
                break
            await asyncio.sleep(0.002)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert listing.call_count == 4
        assert e.directory.status()["index_size"] == 1


@pytest.mark.anyio
async def test_interval_zero_disables_the_index_and_webhooks_fill_the_cache() -> None:
    async with env(index_refresh_interval=0) as e:
        route = e.nango.get("/connections").respond(200, json=ONE)
        await asyncio.wait_for(e.directory.run_index_refresher(), timeout=1)
        assert await e.directory.refresh_index() is False
        assert e.directory.start_index_refresh() is None
        e.directory.apply_user_connections("usr_2", [conn("c2", "usr_2")])
        assert await e.directory.lookup("usr_2", timeout=1) == Lookup("c2", "cache")
        assert route.call_count == 0


@pytest.mark.anyio
async def test_background_paging_does_not_hold_back_live_lookups() -> None:
    gate, waits = asyncio.Event(), list[float]()

    async def parked_sleep(seconds: float) -> None:
        waits.append(seconds)
        await gate.wait()
        clock.advance(seconds)

    async with env(sleep=parked_sleep, index_page_size=1) as e:
        clock = e.clock
        low = rate_headers(limit=200, remaining=2, reset=clock.wall + 40)
        listing = e.nango.get("/connections", params__contains={"limit": "1"})
        listing.side_effect = [
            httpx.Response(200, headers=low, json=connections_body(connection_json("c9", "usr_9"))),
            httpx.Response(200, json=connections_body()),
        ]
        live = user_route(e.nango).respond(200, headers=low, json=ONE)
        refresh = asyncio.create_task(e.directory.refresh_index())
        while not waits:
            await asyncio.sleep(0)
        # The index is parked until the budget resets; a live call still gets its answer now.
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert (listing.call_count, live.call_count, refresh.done()) == (1, 1, False)
        gate.set()
        assert await refresh is True
        assert waits == [40.0]
        assert await e.directory.lookup("usr_9", timeout=1) == Lookup("c9", "index")


# --- per-user lookups ---


@pytest.mark.anyio
async def test_miss_then_hit_then_expiry() -> None:
    async with env(cache_ttl=60) as e:
        route = user_route(e.nango).respond(200, json=ONE)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "cache")
        assert route.call_count == 1
        e.clock.advance(61)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert route.call_count == 2
        assert (e.events("miss"), e.events("hit")) == (2, 1)


@pytest.mark.anyio
async def test_fifty_concurrent_lookups_of_a_cold_user_make_one_request() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env() as e:
        user_route(e.nango).mock(side_effect=gated(httpx.Response(200, json=ONE), gate, calls))
        lookups = [asyncio.create_task(e.directory.lookup("usr_1", timeout=5)) for _ in range(50)]
        while not calls:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*lookups)
        assert len(calls) == 1
        assert results == [Lookup("c1", "nango")] * 50
        assert e.directory.status()["lookups_in_flight"] == 0


FAILURES: dict[str, httpx.Response | Exception] = {
    "timeout": httpx.ReadTimeout("slow"),
    "server_error": httpx.Response(500, json=error_body("server_error")),
    "too_many_requests": httpx.Response(429, headers={"Retry-After": "5"}, json=error_body("too_many_requests")),
    "rate_limited": httpx.Response(429, headers={"Retry-After": "0"}),
    "invalid_response": httpx.Response(200, text='{"connections": [tru'),
    "invalid_response ": httpx.Response(200, json={"data": []}),
}


@pytest.mark.anyio
@pytest.mark.parametrize("code", FAILURES)
async def test_stale_if_error(code: str) -> None:
    async with env(cache_ttl=60) as e:
        route = user_route(e.nango)
        route.side_effect = [httpx.Response(200, json=ONE), FAILURES[code]]
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        e.clock.advance(61)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "stale", code.strip())
        assert e.events("stale_served") == 1
        assert e.directory.status()["last_error"] == code.strip()


@pytest.mark.anyio
async def test_a_retry_after_window_serves_stale_without_asking_nango() -> None:
    async with env(cache_ttl=60) as e:
        route = user_route(e.nango)
        route.side_effect = [
            httpx.Response(200, json=ONE),
            FAILURES["too_many_requests"],
            httpx.Response(200, json=ONE),
        ]
        await e.directory.lookup("usr_1", timeout=1)
        e.clock.advance(61)
        await e.directory.lookup("usr_1", timeout=1)
        e.clock.advance(FAILURE_TTL_SECONDS + 0.5)  # past the recent-failure cache, still inside Retry-After
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "stale", "rate_limited")
        assert route.call_count == 2
        e.clock.advance(5)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert e.directory.status()["nango"] == "ok"


@pytest.mark.anyio
async def test_an_error_with_nothing_stale_is_an_error() -> None:
    async with env() as e:
        user_route(e.nango).respond(500, json=error_body("server_error"))
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "error", "server_error")
        assert e.directory.status()["nango"] == "degraded"


@pytest.mark.anyio
async def test_a_crash_in_the_lookup_still_answers(caplog: pytest.LogCaptureFixture) -> None:
    async with env() as e:
        user_route(e.nango).mock(side_effect=RuntimeError("bug"))
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "error", "internal_error")
    assert "crashed" in caplog.text


@pytest.mark.anyio
async def test_negative_cache_and_its_expiry() -> None:
    async with env(negative_ttl=30) as e:
        route = user_route(e.nango)
        route.side_effect = [httpx.Response(200, json=connections_body()), httpx.Response(200, json=ONE)]
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "negative", "no connection")
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "negative", "cached")
        assert (route.call_count, e.events("negative_hit")) == (1, 1)
        e.clock.advance(31)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")


@pytest.mark.anyio
async def test_a_connection_with_errors_is_no_calendar() -> None:
    async with env() as e:
        route = user_route(e.nango).respond(200, json=connections_body(connection_json("c1", errors=AUTH_ERROR)))
        first = await e.directory.lookup("usr_1", timeout=1)
        assert (first.connection_id, first.source) == (None, "unhealthy")
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "unhealthy", "cached")
        assert route.call_count == 1


@pytest.mark.anyio
async def test_nango_saying_none_forgets_the_stale_answer() -> None:
    async with env(cache_ttl=60, negative_ttl=30) as e:
        route = user_route(e.nango)
        route.side_effect = [
            httpx.Response(200, json=ONE),
            httpx.Response(200, json=connections_body()),
            httpx.Response(500),
        ]
        await e.directory.lookup("usr_1", timeout=1)
        e.clock.advance(61)
        assert (await e.directory.lookup("usr_1", timeout=1)).source == "negative"
        e.clock.advance(31)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "error", "http_500")


@pytest.mark.anyio
async def test_several_connections_pick_the_newest_healthy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = connections_body(
        connection_json("broken", created="2026-09-01T00:00:00Z", errors=AUTH_ERROR),
        connection_json("new", created="2026-06-01T00:00:00Z"),
        connection_json("old", created="2026-01-01T00:00:00Z"),
    )
    async with env() as e:
        user_route(e.nango).respond(200, json=body)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("new", "nango")
    assert "3 google-calendar connections; using new" in caplog.text


@pytest.mark.anyio
async def test_a_nango_that_never_answers_meets_the_deadline_and_fills_the_cache_later() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env() as e:
        user_route(e.nango).mock(side_effect=gated(httpx.Response(200, json=ONE), gate, calls))
        started = time.monotonic()
        result = await e.directory.lookup("usr_1", timeout=0.05)
        assert time.monotonic() - started < 0.05 + 0.2
        assert result == Lookup(None, "timeout", "no answer within 0.05s")
        assert e.events("timeout") == 1
        gate.set()
        await settle(e.directory)
        assert await e.directory.lookup("usr_1", timeout=0.05) == Lookup("c1", "cache")
        assert len(calls) == 1


@pytest.mark.anyio
async def test_a_deadline_serves_the_stale_answer_when_there_is_one() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env(cache_ttl=60) as e:
        route = user_route(e.nango)
        effects: list[Any] = [httpx.Response(200, json=ONE), gated(httpx.Response(200, json=ONE), gate, calls)]
        route.side_effect = effects
        await e.directory.lookup("usr_1", timeout=1)
        e.clock.advance(61)
        assert await e.directory.lookup("usr_1", timeout=0.01) == Lookup("c1", "stale", "timeout")
        assert await e.directory.lookup("usr_1", timeout=0.01) == Lookup("c1", "stale", "timeout")
        assert len(calls) == 1  # the second caller joined the request already in flight
        gate.set()


@pytest.mark.anyio
async def test_without_nango_lookups_answer_at_once() -> None:
    metrics = Metrics()
    directory = ConnectionDirectory(None, settings(secret_key=None), metrics)
    assert await directory.lookup("usr_1", timeout=5) == Lookup(None, "error", "nango not configured")
    assert await directory.refresh_index() is False
    await asyncio.wait_for(directory.run_index_refresher(), timeout=1)
    assert directory.status()["nango"] == "unconfigured"
    await directory.aclose()


# --- webhook effects, config reload, shutdown ---


@pytest.mark.anyio
async def test_applied_connections_are_visible_at_once_and_clear_the_negative_entry() -> None:
    async with env() as e:
        route = user_route(e.nango).respond(200, json=connections_body())
        assert (await e.directory.lookup("usr_1", timeout=1)).source == "negative"
        e.directory.apply_user_connections("usr_1", [conn("c-new", "usr_1")])
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c-new", "index")
        assert route.call_count == 1


@pytest.mark.anyio
async def test_a_webhook_beats_an_older_nango_answer_still_in_flight() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env(index_refresh_interval=0) as e:
        user_route(e.nango).mock(side_effect=gated(httpx.Response(200, json=connections_body()), gate, calls))
        pending = asyncio.create_task(e.directory.lookup("usr_1", timeout=1))
        while not calls:
            await asyncio.sleep(0)
        e.directory.apply_user_connections("usr_1", [conn("c-new", "usr_1")])
        gate.set()
        assert await pending == Lookup("c-new", "cache")
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c-new", "cache")


@pytest.mark.anyio
async def test_an_unhealthy_record_stops_serving_that_connection_only() -> None:
    async with env() as e:
        e.nango.get("/connections", params__contains={"limit": "2000"}).respond(
            200, json=connections_body(connection_json("c1", "usr_1"), connection_json("c2", "usr_2"))
        )
        user_route(e.nango, "usr_3").respond(200, json=connections_body(connection_json("c3", "usr_3")))
        await e.directory.refresh_index()
        await e.directory.lookup("usr_3", timeout=1)
        e.directory.apply_user_connections("usr_1", [conn("c1", "usr_1", healthy=False, created=PAGE_CREATED)])
        e.directory.apply_user_connections(
            "usr_2", [conn("c2", "usr_2", created=PAGE_CREATED), conn("older", "usr_2", healthy=False, created=OLD)]
        )
        e.directory.apply_user_connections("usr_3", [conn("c3", "usr_3", healthy=False, created=PAGE_CREATED)])
        assert (await e.directory.lookup("usr_1", timeout=1)).source == "unhealthy"
        assert await e.directory.lookup("usr_2", timeout=1) == Lookup("c2", "index")
        assert (await e.directory.lookup("usr_3", timeout=1)).source == "unhealthy"


@pytest.mark.anyio
async def test_retain_users_forgets_users_no_longer_configured() -> None:
    async with env() as e:
        route = e.nango.get("/connections")

        def by_user(request: httpx.Request) -> httpx.Response:
            user = request.url.params["tags[end_user_id]"]
            return httpx.Response(200, json=connections_body(connection_json(f"c-{user}", user)))

        route.side_effect = by_user
        for user in ("usr_1", "usr_2"):
            await e.directory.lookup(user, timeout=1)
        e.directory.retain_users(["usr_1"])
        assert e.directory.status()["cache_size"] == 1
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c-usr_1", "cache")
        assert await e.directory.lookup("usr_2", timeout=1) == Lookup("c-usr_2", "nango")


@pytest.mark.anyio
async def test_aclose_cancels_lookups_in_flight() -> None:
    gate, calls = asyncio.Event(), list[httpx.Request]()
    async with env() as e:
        user_route(e.nango).mock(side_effect=gated(httpx.Response(200, json=ONE), gate, calls))
        assert (await e.directory.lookup("usr_1", timeout=0.01)).source == "timeout"
        assert e.directory.status()["lookups_in_flight"] == 1
        await e.directory.aclose()
        assert e.directory.status()["lookups_in_flight"] == 0


@pytest.mark.anyio
async def test_the_secret_key_stays_out_of_lookup_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with env() as e:
        user_route(e.nango).respond(401, json=error_body("invalid_credentials", f"key {SECRET_KEY} is wrong"))
        result = await e.directory.lookup("usr_1", timeout=1)
    assert result == Lookup(None, "error", "invalid_credentials")
    assert SECRET_KEY not in caplog.text
    assert SECRET_KEY not in repr(result)


@pytest.mark.anyio
async def test_a_failed_lookup_is_not_repeated_for_every_call_during_an_outage() -> None:
    async with env(cache_ttl=60) as e:
        route = user_route(e.nango)
        route.side_effect = [httpx.Response(500, json=error_body("server_error"))] * 2 + [httpx.Response(200, json=ONE)]
        answers = [await e.directory.lookup("usr_1", timeout=1) for _ in range(20)]
        assert (
            answers == [Lookup(None, "error", "server_error")] + [Lookup(None, "error", "server_error (recent)")] * 19
        )
        assert route.call_count == 1  # 20 calls in an outage, one request
        assert e.events("recent_failure") == 19
        e.clock.advance(FAILURE_TTL_SECONDS + 0.1)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup(None, "error", "server_error")
        e.clock.advance(FAILURE_TTL_SECONDS + 0.1)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert route.call_count == 3


@pytest.mark.anyio
async def test_a_webhook_clears_a_recent_failure() -> None:
    async with env() as e:
        user_route(e.nango).respond(500, json=error_body("server_error"))
        await e.directory.lookup("usr_1", timeout=1)
        e.directory.apply_user_connections("usr_1", [conn("c-new", "usr_1")])
        assert (await e.directory.lookup("usr_1", timeout=1)).connection_id == "c-new"


@pytest.mark.anyio
async def test_an_outage_across_many_users_opens_the_breaker_then_one_lookup_probes() -> None:
    async with env() as e:
        route = e.nango.get("/connections").respond(503, json=error_body("server_error"))
        users = [f"usr_{n}" for n in range(40)]
        answers = [await e.directory.lookup(user, timeout=1) for user in users]
        assert route.call_count == BREAKER_THRESHOLD  # then no more requests while the breaker is open
        assert answers[BREAKER_THRESHOLD:] == [Lookup(None, "error", "nango unavailable")] * (40 - BREAKER_THRESHOLD)
        assert e.directory.status()["breaker_open"] is True
        e.clock.advance(FAILURE_TTL_SECONDS + 0.1)
        route.respond(200, json=ONE)
        assert await e.directory.lookup("usr_1", timeout=1) == Lookup("c1", "nango")
        assert e.directory.status()["breaker_open"] is False


@pytest.mark.anyio
async def test_a_user_specific_error_does_not_open_the_breaker() -> None:
    async with env() as e:
        route = e.nango.get("/connections").respond(400, json=error_body("invalid_query_params"))
        for n in range(BREAKER_THRESHOLD * 2):
            await e.directory.lookup(f"usr_{n}", timeout=1)
        assert route.call_count == BREAKER_THRESHOLD * 2
        assert e.directory.status()["breaker_open"] is False
