"""Wrong booking references across replicas sharing a Redis (a real redis-server): a call gets three tries in
all, whichever replica each of its tool calls reaches; without Redis, each replica still counts its own."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from proxy.calendar.abuse import Counted
from proxy.calendar.references import MAX_WRONG_PER_CALL
from proxy.metrics import Metrics
from proxy.secret import Secret
from proxy.shared import RedisSettings, SharedStore
from proxy.shared.callcounts import SharedCallCounts
from tests.calendar.test_booking import a_bookable_slot
from tests.calendar.test_tool_bounds import CONFIG, tool_calls
from tests.contract import assert_tool_calls_response
from tests.google_fakes import FakeGoogle
from tests.helpers import VAPI_SECRET, config_from, proxy_client
from tests.redis_server import RedisServer
from tests.vapi.test_tools import booked

WRONG: Counted = "wrong_reference"

pytestmark = pytest.mark.anyio

CALLER = "+14155550123"  # the caller of tests.calendar.test_tool_bounds.tool_calls
REFERENCE = "246813"
NO_MORE_TRIES = "That booking reference didn't match again, so I can't change appointments on this call."


async def cancel(replica: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    call = {"name": "cancel_appointment", "arguments": json.dumps({"reference": reference})}
    response = await replica.post("/vapi", json=tool_calls(call), headers={"X-Vapi-Secret": VAPI_SECRET})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    assert_tool_calls_response(answer)
    result: dict[str, Any] = answer["results"][0]
    return result


async def test_three_wrong_references_end_the_guessing_on_every_replica(redis_server: RedisServer) -> None:
    start = datetime.fromisoformat(a_bookable_slot())
    shared = RedisSettings(url=Secret(redis_server.url))
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        end = start + timedelta(minutes=30)
        google.add(booked("mine00001", start.isoformat(), end.isoformat(), number=CALLER, reference=REFERENCE))
        async with (
            proxy_client(config_from(CONFIG), redis=shared) as a,
            proxy_client(config_from(CONFIG), redis=shared) as b,
        ):
            wrong = [await cancel(replica, guess) for replica, guess in ((a, "111111"), (b, "222222"), (a, "333333"))]
            right = await cancel(b, REFERENCE)  # the right one, on a replica that saw only one wrong guess
    assert [r["error"].startswith("That booking reference doesn't match") for r in wrong] == [True, True, False]
    assert wrong[2]["error"].startswith(NO_MORE_TRIES)
    assert right["error"].startswith(NO_MORE_TRIES)
    assert not google.delete.called and google.events["mine00001"]["status"] == "confirmed"


async def test_without_redis_each_replica_still_counts_its_own(redis_server: RedisServer) -> None:
    one = SharedStore(RedisSettings(url=Secret(redis_server.url)), Metrics())
    other = SharedStore(RedisSettings(url=Secret(redis_server.url)), Metrics())
    try:
        a, b = SharedCallCounts(one), SharedCallCounts(other)
        await a.record("call-1", WRONG)
        await b.record("call-1", WRONG)
        assert not await a.exhausted("call-1", WRONG)
        await b.record("call-1", WRONG)
        assert await a.exhausted("call-1", WRONG) and await b.exhausted("call-1", WRONG)  # 3 in all: 1 on a, 2 on b
        assert not await a.exhausted("call-1", "notified_move")  # each kind is counted apart
        redis_server.kill()
        for _ in range(MAX_WRONG_PER_CALL - 1):
            await a.record("call-2", WRONG)
        assert not await a.exhausted("call-2", WRONG)
        await a.record("call-2", WRONG)
        assert await a.exhausted("call-2", WRONG)  # Redis gone: this replica's own count still ends it
        assert not await b.exhausted("call-2", WRONG)  # and another replica counts its own meanwhile
    finally:
        await one.aclose()
        await other.aclose()


async def test_a_count_reset_in_redis_gives_no_replica_more_than_its_own_tries(redis_server: RedisServer) -> None:
    store = SharedStore(RedisSettings(url=Secret(redis_server.url)), Metrics())
    try:
        counts = SharedCallCounts(store)
        for _ in range(MAX_WRONG_PER_CALL):
            await counts.record("call-1", WRONG)
        for key in await store.redis.keys(store.key("counts", "*")):
            await store.redis.set(key, b"0")  # whoever can write to Redis resets the count
        assert await counts.exhausted("call-1", WRONG)
    finally:
        await store.aclose()
