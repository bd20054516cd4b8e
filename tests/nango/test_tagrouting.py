"""Zero-touch onboarding: Nango connection tags route calls (issue 14), end to end through the app."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config.yamlsource import ConfigError
from proxy.metrics import Metrics
from proxy.nango.onboarding import assign_line
from tests.contract import assert_assistant_request_response
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample
from tests.nango_fakes import AUTH_ERROR, BASE_URL, SECRET_KEY, FakeNango, encode, sign

pytestmark = pytest.mark.anyio

TAGS = """\
    number_tag: vapi_number
    phone_number_id_tag: vapi_phone_number_id
    template_tag: vapi_template
    name_tag: end_user_display_name
    timezone_tag: vapi_timezone
"""
CONFIG = f"""\
auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: {BASE_URL}
  secret_key: {SECRET_KEY}
  index_refresh_seconds: INDEX_REFRESH
  tag_routing:
{TAGS}
server:
  deadline_seconds: 2.0
templates:
  default:
    firstMessage: "Hello, you reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "For {{{{user_name}}}} in {{{{timezone}}}}."}}]
    voice: {{provider: vapi, voiceId: Elliot}}
  spanish:
    firstMessage: "Hola, {{{{user_name}}}}."
    model: {{provider: openai, model: gpt-4o}}
    voice: {{provider: vapi, voiceId: Elliot}}
fallbacks:
  unknown_number: {{action: reject, message: "This number is not in service."}}
users:
  - {{id: usr_yaml, name: Dr. YAML, timezone: Europe/Paris}}
routes:
  - {{to: "+1 415 555 0100", user: usr_yaml}}
"""
AUTH = {"X-Vapi-Secret": VAPI_SECRET}


def config_text(index_refresh: float = 300) -> str:
    return CONFIG.replace("INDEX_REFRESH", str(index_refresh))


def call(to: str | None = None, phone_number_id: str | None = None) -> bytes:
    body = vapi_sample("assistant-request.pstn")
    message = body["message"]
    message["phoneNumber"]["number"] = to or "+19995550000"
    message["phoneNumber"]["id"] = phone_number_id or "00000000-0000-4000-8000-000000000000"
    message["call"]["phoneNumberId"] = message["phoneNumber"]["id"]
    if to is None:
        del message["phoneNumber"]["number"]
    return json.dumps(body).encode()


@asynccontextmanager
async def replica(fake: FakeNango, index_refresh: float = 300) -> AsyncIterator[httpx.AsyncClient]:
    """One proxy replica in front of the shared fake Nango, its first index pass done."""
    async with fake.client() as http:
        app = create_app(config_from(config_text(index_refresh)), metrics=Metrics(), http_client=http)
        async with serving(app) as client:
            runtime = app.state.runtime
            if index_refresh:
                await runtime.directory.refresh_index()
            client.app_runtime = runtime  # type: ignore[attr-defined]
            yield client


async def answer(client: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    response = await client.post("/vapi", content=body, headers=AUTH)
    assert response.status_code == 200
    decoded: dict[str, Any] = response.json()
    assert_assistant_request_response(decoded)
    return decoded


def authorization(answer: dict[str, Any]) -> str | None:
    credentials = answer.get("assistant", {}).get("credentials") or [{}]
    value: str | None = credentials[0].get("authorizationId")
    return value


async def webhook(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    raw = encode(body)
    return await client.post("/nango/webhook", content=raw, headers={"X-Nango-Hmac-Sha256": sign(raw, SECRET_KEY)})


async def test_a_connect_session_with_a_number_makes_it_routable_at_once_on_the_webhook() -> None:
    fake = FakeNango()
    async with replica(fake) as proxy:
        before = await answer(proxy, call("+14155550177"))
        assert before == {"error": "This number is not in service."}
        tags = {"end_user_id": "usr_ann", "VAPI_NUMBER": "+14155550177", "end_user_display_name": "Ann Example"}
        created = fake.connect(tags | {"vapi_timezone": "Asia/Tokyo"}, "conn-ann")  # Nango lowercases VAPI_NUMBER
        assert created["tags"]["vapi_number"] == "+14155550177"
        requests_before = len(fake.requests)
        accepted = await webhook(proxy, created)
        assert accepted.json() == {"ok": True, "result": "applied"}
        after = await answer(proxy, call("+14155550177"))
        assert len(fake.requests) == requests_before + 1  # the confirmation only; the call asked nothing
    assert authorization(after) == "conn-ann"
    assert after["assistant"]["firstMessage"] == "Hello, you reached Ann Example."
    assert "Asia/Tokyo" in json.dumps(after)
    assert after["assistant"]["metadata"]["route"] == "nango:conn-ann"


async def test_a_replica_that_missed_the_webhook_finds_the_line_with_one_request() -> None:
    fake = FakeNango()
    async with replica(fake) as other:
        fake.add("conn-bo", {"end_user_id": "usr_bo", "vapi_number": "+14155550166"})
        requests_before = len(fake.requests)
        found = await answer(other, call("+14155550166"))
        again = await answer(other, call("+14155550166"))
        lookups = fake.requests[requests_before:]
    assert authorization(found) == authorization(again) == "conn-bo"
    assert len(lookups) == 1
    # `+` travels as %2B: Nango's qs parser would read a raw + as a space and match nothing.
    assert b"tags%5Bvapi_number%5D=%2B14155550166" in lookups[0].url.query


async def test_an_unknown_line_costs_one_request_per_negative_ttl() -> None:
    fake = FakeNango()
    async with replica(fake) as proxy:
        requests_before = len(fake.requests)
        for _ in range(5):
            assert await answer(proxy, call("+14155550155")) == {"error": "This number is not in service."}
        assert len(fake.requests) == requests_before + 1


async def test_yaml_routes_and_users_keep_precedence() -> None:
    fake = FakeNango()
    fake.add("conn-squatter", {"end_user_id": "usr_x", "vapi_number": "+14155550100"})  # YAML's number
    fake.add("conn-yaml-user", {"end_user_id": "usr_yaml", "vapi_number": "+14155550188", "vapi_template": "spanish",
                                "end_user_display_name": "Someone Else"})  # fmt: skip
    async with replica(fake) as proxy:
        yaml_line = await answer(proxy, call("+14155550100"))
        tagged_line = await answer(proxy, call("+14155550188"))
    assert yaml_line["assistant"]["metadata"]["route"] == "routes[0]"
    assert authorization(yaml_line) == "conn-yaml-user"  # the YAML user's own connection, found by user tag
    # The tagged line's user is the YAML user with that id: YAML's name and time zone, the tag's template.
    assert tagged_line["assistant"]["firstMessage"] == "Hola, Dr. YAML."
    assert authorization(tagged_line) == "conn-yaml-user"


async def test_phone_number_id_tags_route_calls_without_a_number() -> None:
    fake = FakeNango()
    fake.add("conn-sip", {"end_user_id": "usr_sip", "vapi_phone_number_id": "4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01"})
    async with replica(fake) as proxy:
        routed = await answer(proxy, call(phone_number_id="4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01"))
    assert authorization(routed) == "conn-sip"


async def test_conflicting_claims_go_to_the_first_healthy_claimant_and_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    fake = FakeNango()
    fake.add("conn-first", {"end_user_id": "usr_1", "vapi_number": "+14155550144"})
    fake.add("conn-second", {"end_user_id": "usr_2", "vapi_number": "+14155550144"})
    fake.add("conn-broken", {"end_user_id": "usr_3", "vapi_number": "+14155550144"}, errors=AUTH_ERROR)
    async with replica(fake) as proxy:
        routed = await answer(proxy, call("+14155550144"))
        status = (await proxy.get("/readyz")).json()["nango"]
        metrics = (await proxy.get("/metrics")).text
    assert authorization(routed) == "conn-first"  # the first healthy claimant keeps it
    assert status["line_conflicts"] == 1
    assert "vapi_proxy_tag_routing_conflicts 1.0" in metrics
    [logged] = [r.getMessage() for r in caplog.records if "tag routing conflict" in r.getMessage()]
    assert logged.startswith("tag routing conflict: to +1415*****44 is claimed by connections conn-first, ")
    assert "conn-second" in logged and "conn-broken" in logged and "; conn-first keeps it" in logged
    assert "+14155550144" not in caplog.text  # numbers are masked in logs


async def test_a_line_claimed_only_by_a_broken_connection_takes_a_message() -> None:
    fake = FakeNango()
    fake.add("conn-broken", {"end_user_id": "usr_3", "vapi_number": "+14155550133"}, errors=AUTH_ERROR)
    async with replica(fake) as proxy:
        routed = await answer(proxy, call("+14155550133"))
    assert "credentials" not in routed["assistant"]
    assert routed["assistant"]["metadata"]["calendarMode"] == "none"


async def test_without_the_index_the_webhook_still_makes_the_line_routable() -> None:
    fake = FakeNango()
    async with replica(fake, index_refresh=0) as proxy:
        await answer(proxy, call("+14155550122"))  # caches "nobody claims it"
        fake.add("conn-cy", {"end_user_id": "usr_cy", "vapi_number": "+14155550122"})
        webhook_body = fake.connect({"end_user_id": "usr_cy2", "vapi_number": "+14155550122"}, "conn-cy2")
        await webhook(proxy, webhook_body)
        routed = await answer(proxy, call("+14155550122"))
    assert authorization(routed) == "conn-cy2"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("    template_tag: vapi_template\n", "set number_tag or phone_number_id_tag"),
        ("    number_tag: Vapi_Number\n", "Nango stores tag keys lowercased: write 'vapi_number'"),
        ("    number_tag: 9number\n", "starts with a letter"),
        ("    number_tag: " + "n" * 65 + "\n", "1-64 characters"),
    ],
)
def test_tag_routing_config_follows_nangos_tag_key_rules(section: str, message: str) -> None:
    text = config_text().replace(TAGS, section)
    with pytest.raises(ConfigError) as caught:
        config_from(text)
    assert message in str(caught.value)
    assert "routing.yaml:" in str(caught.value)


@pytest.mark.parametrize("index_refresh", [300, 0])
async def test_a_new_connection_claiming_a_line_in_use_does_not_take_it_and_is_reported_at_once(
    index_refresh: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fake = FakeNango()
    fake.add("conn-first", {"end_user_id": "usr_1", "vapi_number": "+14155550111"})
    async with replica(fake, index_refresh) as proxy:
        assert authorization(await answer(proxy, call("+14155550111"))) == "conn-first"
        assert "vapi_proxy_tag_routing_conflicts 0.0" in (await proxy.get("/metrics")).text
        second = fake.connect({"end_user_id": "usr_2", "vapi_number": "+14155550111"}, "conn-second")
        assert (await webhook(proxy, second)).json()["result"] == "applied"
        metrics = (await proxy.get("/metrics")).text
        ready = (await proxy.get("/readyz")).json()["nango"]
        routed = await answer(proxy, call("+14155550111"))
        conflicts = [r.getMessage() for r in caplog.records if "tag routing conflict" in r.getMessage()]
        if index_refresh:
            # An admin moves the line: `assign` takes the number off every other connection.
            client = proxy.app_runtime.directory.client  # type: ignore[attr-defined]
            await assign_line(client, "conn-second", "+14155550111", None)
            await proxy.app_runtime.directory.refresh_index()  # type: ignore[attr-defined]
            moved = await answer(proxy, call("+14155550111"))
            assert authorization(moved) == "conn-second"
    assert authorization(routed) == "conn-first"  # the first healthy claimant keeps it
    assert conflicts and "connections conn-first, conn-second; conn-first keeps it" in conflicts[0]
    assert "+14155550111" not in " ".join(conflicts)  # the number is masked
    if index_refresh:
        assert "vapi_proxy_tag_routing_conflicts 1.0" in metrics and ready["line_conflicts"] == 1
        assert "vapi_proxy_tag_routed_lines 1.0" in metrics
