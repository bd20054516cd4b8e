"""Tag routing across replicas: a connection one replica finds by a line lookup is announced like a webhook
update, so the other replicas (and one started later) route that line without asking Nango themselves."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.app import create_app
from proxy.config.snapshot import InboundCall
from proxy.metrics import Metrics
from proxy.secret import Secret
from proxy.shared import RedisSettings
from tests.helpers import config_from, eventually, serving
from tests.nango.test_tagrouting import answer, authorization, call, config_text
from tests.nango_fakes import FakeNango
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LINE = "+14155550166"


@contextlib.asynccontextmanager
async def replica(fake: FakeNango, redis: RedisServer) -> AsyncIterator[Any]:
    """One replica with tag routing, sharing `redis`; yields its client once it holds the cluster's index."""
    async with fake.client() as http:
        app = create_app(
            config_from(config_text()), metrics=Metrics(), http_client=http, redis=RedisSettings(url=Secret(redis.url))
        )
        async with serving(app) as client:
            runtime = app.state.runtime
            await eventually(
                lambda: (
                    runtime.cluster.status()["index_version"] is not None and runtime.cluster.fanout.subscribed.is_set()
                )
            )
            client.app_runtime = runtime  # type: ignore[attr-defined]
            yield client


def knows_line(client: Any) -> bool:
    lines = client.app_runtime.directory.lines
    return lines is not None and lines.known(InboundCall("c", to=LINE)) is not None


async def test_a_line_found_by_one_replica_is_routed_by_the_others_without_asking_nango(
    redis_server: RedisServer,
) -> None:
    fake = FakeNango()
    async with replica(fake, redis_server) as first, replica(fake, redis_server) as second:
        # A user onboarded with their number as a tag; the webhook went astray (or has not arrived yet).
        fake.add("conn-bo", {"end_user_id": "usr_bo", "vapi_number": LINE})
        before = len(fake.requests)
        assert not knows_line(second)
        sent = time.perf_counter()
        found = await answer(first, call(LINE))
        assert authorization(found) == "conn-bo"
        assert len(fake.requests) == before + 1  # the first replica's line lookup
        await eventually(lambda: knows_line(second), 1.0)
        visible = time.perf_counter() - sent
        routed = await answer(second, call(LINE))
        assert authorization(routed) == "conn-bo"
        assert routed["assistant"]["metadata"]["route"] == "nango:conn-bo"
        assert len(fake.requests) == before + 1  # the second replica asked Nango nothing
        assert visible < 0.1
        # A replica started later reads it from the shared index's overlay, again without a line lookup.
        async with replica(fake, redis_server) as third:
            assert knows_line(third)
            late = await answer(third, call(LINE))
        assert authorization(late) == "conn-bo"
        assert [r for r in fake.requests[before + 1 :] if "tags[vapi_number]" in str(r.url.params)] == []


def published_by(client: Any) -> float:
    sample = client.app_runtime.metrics.registry.get_sample_value(
        "vapi_proxy_redis_operations_total", {"operation": "publish", "result": "ok"}
    )
    return float(sample or 0)


async def test_a_line_nobody_claims_is_not_announced(redis_server: RedisServer) -> None:
    fake = FakeNango()
    async with replica(fake, redis_server) as first, replica(fake, redis_server) as second:
        published = published_by(first)
        assert await answer(first, call("+14155550155")) == {"error": "This number is not in service."}
        assert published_by(first) == published
        # Each replica remembers "nobody" on its own for tag_routing.negative_ttl: the second asks once too.
        before = len(fake.requests)
        assert await answer(second, call("+14155550155")) == {"error": "This number is not in service."}
        assert len(fake.requests) == before + 1
