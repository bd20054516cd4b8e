"""Agency mode served: each tenant at its own paths, with its own credentials, caches and reloads."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.agency import create_agency_app
from proxy.config import Agency, load_deployment
from proxy.http import prepared
from proxy.http.fastpath import FastPath
from proxy.logs import LOGGER_NAME, CallIdFilter, JsonFormatter
from proxy.runtime import Tenants, tenant_redis
from proxy.secret import Secret
from proxy.shared import RedisSettings
from tests.contract import assert_assistant_request_response
from tests.helpers import (
    ACME_FILE,
    ACME_SECRET,
    AGENCY_FILE,
    BOBS_SECRET,
    SHARED_NUMBER,
    eventually,
    serving,
    vapi_sample,
    write_agency,
)
from tests.nango_fakes import auth_webhook, connection_json, encode, sign
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

KEYS = {"Bearer acme-nango-key": "acme", "Bearer bobs-nango-key": "bobs"}


class TwoNangos:
    """Each tenant's Nango environment, told apart by the secret key the request carries."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, str]] = []  # connection lookups by user: (environment, user id)
        self.requests: list[tuple[str, str]] = []  # every request: (environment, path)
        self.missing: set[str] = set()  # environments where the user has no connection
        self.current: dict[str, str] = {}  # environment -> the user's connection id, if not <environment>-conn-<user>

    def __call__(self, request: httpx.Request) -> httpx.Response:
        environment = KEYS[request.headers["authorization"]]
        self.requests.append((environment, request.url.path))
        user = request.url.params.get("tags[end_user_id]", "")
        self.lookups.append((environment, user))
        if environment in self.missing:
            return httpx.Response(200, json={"connections": []})
        connection_id = self.current.get(environment, f"{environment}-conn-{user}")
        return httpx.Response(200, json={"connections": [connection_json(connection_id, user)]})


def call(number: str = SHARED_NUMBER) -> bytes:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"] = {"id": "pn-1", "number": number}
    body["message"]["call"]["phoneNumberId"] = "pn-1"
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def agency_client(
    path: Path, nango: TwoNangos, *, fast_path: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, Tenants]]:
    loaded = load_deployment(path, {})
    assert isinstance(loaded, Agency)
    http = httpx.AsyncClient(transport=httpx.MockTransport(nango))
    app = create_agency_app(loaded, http_client=http, config_path=str(path), fast_path=fast_path)
    async with http, serving(app) as client:
        yield client, app.state.runtime


def connection_of(response: httpx.Response) -> str:
    credential: str = response.json()["assistant"]["credentials"][0]["authorizationId"]
    return credential


@pytest.mark.parametrize("fast_path", [True, False])
async def test_the_same_user_and_number_in_two_tenants_are_two_businesses(tmp_path: Path, fast_path: bool) -> None:
    nango = TwoNangos()
    async with agency_client(write_agency(tmp_path), nango, fast_path=fast_path) as (client, _):
        acme = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        bobs = await client.post("/vapi/bobs", content=call(), headers={"X-Vapi-Secret": BOBS_SECRET})
        again = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
    for response in (acme, bobs, again):
        assert response.status_code == 200
        assert_assistant_request_response(response.json())
    assert acme.json()["assistant"]["firstMessage"] == "Hello from Acme, this is Ada Acme."
    assert bobs.json()["assistant"]["firstMessage"] == "Hello from Bob's, this is Bob Bobs."
    # One lookup in each tenant's own Nango: bobs' u1 was not served from acme's cache, nor acme's again.
    assert [connection_of(r) for r in (acme, bobs, again)] == ["acme-conn-u1", "bobs-conn-u1", "acme-conn-u1"]
    assert nango.lookups == [("acme", "u1"), ("bobs", "u1")]


async def test_a_negative_answer_in_one_tenant_is_not_anothers(tmp_path: Path) -> None:
    nango = TwoNangos()
    nango.missing.add("acme")
    async with agency_client(write_agency(tmp_path), nango) as (client, _):
        acme = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        bobs = await client.post("/vapi/bobs", content=call(), headers={"X-Vapi-Secret": BOBS_SECRET})
    assert "credentials" not in acme.json()["assistant"]  # acme's user has no calendar: a message taker
    assert connection_of(bobs) == "bobs-conn-u1"


@pytest.mark.parametrize("fast_path", [True, False])
async def test_another_tenants_credentials_are_refused_and_an_unknown_tenant_is_not_found(
    tmp_path: Path, fast_path: bool
) -> None:
    async with agency_client(write_agency(tmp_path), TwoNangos(), fast_path=fast_path) as (client, _):
        crossed = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": BOBS_SECRET})
        unknown = await client.post("/vapi/carol", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        bare = await client.post("/vapi", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        hook = await client.post("/nango/webhook/carol", content=b"{}")
    assert crossed.status_code == 401 and crossed.json() == {"error": "unauthorized"}
    for response in (unknown, hook):
        assert response.status_code == 404 and response.json() == {"error": "not found"}
        assert "acme" not in response.text and "bobs" not in response.text
    assert bare.status_code == 404


async def test_the_fast_path_serves_each_tenants_path_with_its_own_secret(tmp_path: Path) -> None:
    async with agency_client(write_agency(tmp_path), TwoNangos()) as (client, _):
        fast_path = client._transport.app.fast_path  # type: ignore[attr-defined]
        assert isinstance(fast_path, FastPath)
        acme_head = [(b"x-vapi-secret", ACME_SECRET.encode())]
        assert fast_path.takes("POST", "/vapi/acme", acme_head)
        assert not fast_path.takes("POST", "/vapi/bobs", acme_head)
        assert not fast_path.takes("POST", "/vapi/carol", acme_head)
        await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        warm = fast_path.answer(call(), path="/vapi/acme")  # the user's connection now known: answered here
        assert warm is not None and json.loads(warm)["assistant"]["credentials"][0]["authorizationId"] == "acme-conn-u1"
        assert fast_path.answer(call(), path="/vapi/bobs") is None  # bobs' u1 is cold: its general path looks it up


async def test_a_webhook_is_checked_with_its_tenants_key_and_reaches_only_its_tenant(tmp_path: Path) -> None:
    nango = TwoNangos()
    async with agency_client(write_agency(tmp_path), nango) as (client, _):
        body = encode(auth_webhook(connection_id="acme-new", user_id="u1"))
        crossed = await client.post(
            "/nango/webhook/acme", content=body, headers={"X-Nango-Hmac-Sha256": sign(body, "bobs-webhook-key")}
        )
        assert crossed.status_code == 401 and nango.requests == []
        accepted = await client.post(
            "/nango/webhook/acme", content=body, headers={"X-Nango-Hmac-Sha256": sign(body, "acme-webhook-key")}
        )
    assert accepted.status_code == 200
    # The new connection was confirmed in acme's Nango environment, with acme's key; bobs' was not asked.
    assert nango.requests and {environment for environment, _ in nango.requests} == {"acme"}


async def test_an_invalid_tenant_edit_keeps_its_last_good_config_and_leaves_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_agency(tmp_path)
    acme_file = tmp_path / "tenants" / "acme.yaml"
    async with agency_client(path, TwoNangos()) as (client, tenants):
        assert tenants.watcher is not None
        acme_file.write_text(ACME_FILE.replace("timezone: America/New_York", "timezone: Mars/Olympus"))
        path.write_text(AGENCY_FILE.replace("Bob Bobs", "Robert Bobs"))
        with caplog.at_level(logging.INFO):
            assert await tenants.watcher.reload("test") == "invalid"
        acme = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        bobs = await client.post("/vapi/bobs", content=call(), headers={"X-Vapi-Secret": BOBS_SECRET})
        assert acme.json()["assistant"]["firstMessage"] == "Hello from Acme, this is Ada Acme."
        assert bobs.json()["assistant"]["firstMessage"] == "Hello from Bob's, this is Robert Bobs."
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["tenants"]["bobs"]["config_error"] is None
        assert ready["tenants"]["acme"]["config_error"]["at"] == [f"{acme_file}:14"]
        assert "Mars" not in json.dumps(ready)  # locations only, never the text
        errors = [r for r in caplog.records if r.getMessage() == "config error"]
        assert errors and all(getattr(r, "fields", {}).get("tenant") == "acme" for r in errors)
        metrics = (await client.get("/metrics")).text
        assert 'vapi_proxy_config_file_invalid{tenant="acme"} 1.0' in metrics
        assert 'vapi_proxy_config_file_invalid{tenant="bobs"} 0.0' in metrics
        acme_file.write_text(ACME_FILE.replace("Ada Acme", "Ada Fixed"))
        assert await tenants.watcher.reload("test") == "ok"
        acme = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        assert acme.json()["assistant"]["firstMessage"] == "Hello from Acme, this is Ada Fixed."
        assert (await client.get("/readyz")).json()["tenants"]["acme"]["config_error"] is None


async def test_a_tenant_added_or_removed_by_a_reload_starts_or_stops_serving(tmp_path: Path) -> None:
    path = write_agency(tmp_path)
    (tmp_path / "tenants" / "carol.yaml").write_text(
        ACME_FILE.replace(ACME_SECRET, "carol-secret").replace("Acme", "Carol")
    )
    async with agency_client(path, TwoNangos()) as (client, tenants):
        assert tenants.watcher is not None
        added = AGENCY_FILE.replace("  bobs:\n", "  carol:\n    file: tenants/carol.yaml\n  bobs:\n")
        path.write_text(added)
        assert await tenants.watcher.reload("test") == "ok"
        carol = await client.post("/vapi/carol", content=call(), headers={"X-Vapi-Secret": "carol-secret"})
        assert carol.status_code == 200 and "Carol" in carol.json()["assistant"]["firstMessage"]
        path.write_text(added.replace("  acme:\n    file: tenants/acme.yaml\n", ""))
        assert await tenants.watcher.reload("test") == "ok"
        gone = await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        assert gone.status_code == 404
        assert sorted((await client.get("/readyz")).json()["tenants"]) == ["bobs", "carol"]
        assert 'tenant="acme"' not in (await client.get("/metrics")).text


@contextlib.contextmanager
def json_lines() -> Iterator[io.StringIO]:
    """The proxy's log lines as `serve --log-format json` writes them (the handler's filter included)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallIdFilter())
    loggers = [logging.getLogger(name) for name in ("proxy", LOGGER_NAME)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.mark.parametrize("fast_path", [True, False])
async def test_metrics_and_log_lines_carry_the_tenant(tmp_path: Path, fast_path: bool) -> None:
    async with agency_client(write_agency(tmp_path), TwoNangos(), fast_path=fast_path) as (client, _):
        with json_lines() as stream:
            for _ in range(2):  # the second is warm: the fast path answers it
                await client.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
            await client.post("/vapi/bobs", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        metrics = (await client.get("/metrics")).text
    assert 'vapi_proxy_assistant_requests_total{outcome="assistant",reason="ok",tenant="acme"} 2.0' in metrics
    assert 'outcome="unauthorised",reason="mismatch",tenant="bobs"} 1.0' in metrics
    assert 'outcome="assistant",reason="ok",tenant="bobs"' not in metrics
    lines = [line for line in metrics.splitlines() if "tenant=" in line]
    assert {line.partition('tenant="')[2].partition('"')[0] for line in lines} == {"acme", "bobs"}
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    calls = [line for line in logged if line["msg"] == "assistant-request"]
    assert [line["tenant"] for line in calls] == ["acme", "acme"]
    assert [line["tenant"] for line in logged if line["msg"] == "unauthorised request"] == ["bobs"]
    assert all(line.get("tenant") == "acme" for line in logged if line["logger"].startswith("proxy.nango"))


async def test_each_tenants_shared_state_is_under_its_own_redis_prefix(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    loaded = load_deployment(write_agency(tmp_path), {})
    assert isinstance(loaded, Agency)
    nango = TwoNangos()
    settings = RedisSettings(url=Secret(redis_server.url))
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(nango)) as http,
        serving(create_agency_app(loaded, http_client=http, redis=settings)) as one,
        serving(create_agency_app(loaded, http_client=http, redis=settings)) as two,
    ):
        server = redis.Redis.from_url(redis_server.url)

        def subscribed() -> bool:
            channels = server.pubsub_channels("*")
            return len(channels) == 2 and all(count == 2 for _, count in server.pubsub_numsub(*channels))

        await eventually(subscribed)  # both replicas of each tenant, each tenant on its own channel
        nango.current["acme"] = "acme-new"  # u1 connected again in acme's Nango
        body = encode(auth_webhook(connection_id="acme-new", user_id="u1"))
        signed = {"X-Nango-Hmac-Sha256": sign(body, "acme-webhook-key")}
        assert (await one.post("/nango/webhook/acme", content=body, headers=signed)).status_code == 200
        runtimes = two._transport.app.state.runtime.runtimes  # type: ignore[attr-defined]
        await eventually(lambda: runtimes["acme"].directory.warm("u1") is not None)
        assert runtimes["bobs"].directory.warm("u1") is None  # the announcement reached acme's replicas only
        acme = await two.post("/vapi/acme", content=call(), headers={"X-Vapi-Secret": ACME_SECRET})
        bobs = await two.post("/vapi/bobs", content=call(), headers={"X-Vapi-Secret": BOBS_SECRET})
        assert (connection_of(acme), connection_of(bobs)) == ("acme-new", "bobs-conn-u1")
        assert nango.lookups == [("acme", "u1"), ("bobs", "u1")]  # the webhook's confirmation, then bobs' own
        keys = {key.decode() for key in server.keys("*")}
        channels = {channel.decode() for channel in server.pubsub_channels("*")}
    for name in keys | channels:
        assert name.startswith(("vapi-proxy:tenant:acme:", "vapi-proxy:tenant:bobs:")), name
    assert tenant_redis(settings, "acme").prefix == "vapi-proxy:tenant:acme:"
    assert tenant_redis(settings, None) is settings


async def test_prepared_answers_are_bounded_across_all_tenants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with agency_client(write_agency(tmp_path), TwoNangos()) as (client, _):
        fast_path = client._transport.app.fast_path  # type: ignore[attr-defined]
        assert isinstance(fast_path, FastPath)
        for path, secret in (("/vapi/acme", ACME_SECRET), ("/vapi/bobs", BOBS_SECRET)):
            await client.post(path, content=call(), headers={"X-Vapi-Secret": secret})  # warm: connection known
            assert fast_path.answer(call(), path=path) is not None  # the route's answer prepared
        sizes = [len(served.snapshot.formats) for served in fast_path.served.values() if served.snapshot]
        assert sizes == [1, 1] and fast_path.budget.used > 0
        one_answer = fast_path.budget.used // 2
        # Room for one answer in the whole process: preparing the other tenant's drops the first's.
        monkeypatch.setattr(prepared, "PREPARED_BYTES_LIMIT", one_answer + one_answer // 2)
        fast_path._drop_prepared()
        for path in ("/vapi/acme", "/vapi/bobs", "/vapi/acme"):
            assert fast_path.answer(call(), path=path) is not None
            kept = sum(len(served.snapshot.formats) for served in fast_path.served.values() if served.snapshot)
            assert kept == 1 and fast_path.budget.used <= prepared.PREPARED_BYTES_LIMIT
