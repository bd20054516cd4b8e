"""Microsoft 365 users beside Google ones: `nango.integrations`, a connection found across them, the connection's
own provider deciding the calendar API, and Outlook users always served in proxy mode (issue 21, step 3)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from proxy.config import ConfigError
from proxy.config.providers import kind_of_provider
from tests.contract import assert_tool_calls_response
from tests.google_fakes import FakeGoogle
from tests.graph_fakes import FakeGraph
from tests.helpers import VAPI_SECRET, config_from, proxy_client
from tests.nango_fakes import BASE_URL, auth_webhook, connection_json, encode, sign

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")
CONFIG = f"""\
auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: {BASE_URL}
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
  webhook_signing_keys: [whsec-current-signing-key]
  integrations:
    - {{id: google-calendar, provider: google}}
    - {{id: outlook-calendar, provider: microsoft}}
server:
  public_url: https://proxy.example.com
calendar:
  mode: native
  tool_server: {{url: https://proxy.example.com/vapi, headers: {{X-Vapi-Secret: "${{VAPI_SERVER_SECRET}}"}}}}
templates:
  default:
    model: {{provider: openai, model: gpt-4o, messages: [{{role: system, content: "Help."}}]}}
users:
  - {{id: ann, name: Ann Outlook, timezone: America/New_York}}
  - {{id: gus, name: Gus Google, timezone: America/New_York}}
routes:
  - {{to: "+1 650 555 0100", user: ann}}
  - {{to: "+1 650 555 0101", user: gus}}
"""


def outlook_connection(connection_id: str, user: str, provider: str = "microsoft") -> dict[str, Any]:
    raw = connection_json(connection_id, user)
    return raw | {"provider_config_key": "outlook-calendar", "provider": provider}


def nango_connections(mock: respx.MockRouter, *conns: dict[str, Any]) -> respx.Route:
    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        user = params.get("tags[end_user_id]")
        wanted = params.get("integrationId")
        found = [
            c
            for c in conns
            if (user is None or c["tags"].get("end_user_id") == user)
            and (wanted is None or c["provider_config_key"] == wanted)
            and (params.get("connectionId") in (None, c["connection_id"]))
        ]
        return httpx.Response(200, json={"connections": found})

    return mock.get(f"{BASE_URL}/connections").mock(side_effect=answer)


async def post(client: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    response = await client.post("/vapi", content=body, headers={"X-Vapi-Secret": VAPI_SECRET})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def assistant_request(to: str) -> bytes:
    return json.dumps(
        {"message": {"type": "assistant-request", "call": {"id": "c1"}, "phoneNumber": {"number": to}}}
    ).encode()


def slot() -> str:
    day = datetime.now(NY).date() + timedelta(days=2)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, tzinfo=NY).isoformat()


def book(to: str, start: str) -> bytes:
    function = {"name": "book_appointment", "arguments": {"start": start, "name": "Sam"}}
    call = {"id": "tc-1", "type": "function", "function": function}
    message = {
        "type": "tool-calls",
        "toolCallList": [call],
        "call": {"id": "call-1", "customer": {"number": "+14155550123"}},
        "phoneNumber": {"id": "pn-1", "number": to},
    }
    return json.dumps({"message": message}).encode()


def test_provider_names_from_nangos_catalogue() -> None:
    assert [kind_of_provider(p) for p in ("google-calendar", "outlook", "microsoft", "microsoft-tenant-specific")] == [
        "google",
        "microsoft",
        "microsoft",
        "microsoft",
    ]
    assert kind_of_provider("microsoft-oauth2-cc") is None and kind_of_provider("") is None


def test_one_integration_is_todays_config_and_several_are_listed() -> None:
    lines = CONFIG.splitlines(keepends=True)
    single = config_from(
        "".join(line for line in lines if "integrations" not in line and "-calendar, provider" not in line)
    )
    assert single.nango.integration_ids() == ("google-calendar",)
    assert single.nango.kind_of("google-calendar") == "google"
    both = config_from(CONFIG)
    assert both.nango.integration_ids() == ("google-calendar", "outlook-calendar")
    assert both.nango.integration_id == "google-calendar"
    # The connection's own provider decides; the integration's kind when Nango names an unknown one.
    assert both.nango.kind_of("google-calendar", "outlook") == "microsoft"
    assert both.nango.kind_of("outlook-calendar", "some-new-provider") == "microsoft"


def test_a_microsoft_integration_needs_a_tool_server() -> None:
    lines = CONFIG.splitlines(keepends=True)
    text = "".join(line for line in lines if "public_url" not in line and "tool_server" not in line)
    with pytest.raises(ConfigError) as error:
        config_from(text)
    assert "users of a microsoft integration are always served in calendar mode proxy" in str(error.value)


async def test_an_outlook_user_on_a_native_route_gets_the_proxys_tools_and_no_google_credential() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        lookups = nango_connections(mock, outlook_connection("conn-ann", "ann"), connection_json("conn-gus", "gus"))
        async with proxy_client(config_from(CONFIG)) as client:
            ann = await post(client, assistant_request("+16505550100"))
            gus = await post(client, assistant_request("+16505550101"))
    tools = [t["function"]["name"] for t in ann["assistant"]["model"]["tools"] if t.get("type") == "function"]
    assert "book_appointment" in tools and "credentials" not in ann["assistant"]
    assert ann["assistant"]["metadata"]["calendarMode"] == "proxy"
    # The Google user keeps Vapi's native tools with the connection as credential.
    assert gus["assistant"]["credentials"][0]["authorizationId"] == "conn-gus"
    # One lookup per user across both integrations: no integrationId filter.
    assert all("integrationId" not in call.request.url.params for call in lookups.calls)


async def test_an_outlook_users_booking_goes_to_graph_with_its_integration() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        nango_connections(mock, outlook_connection("conn-ann", "ann"))
        graph, google = FakeGraph(mock), FakeGoogle(mock)
        async with proxy_client(config_from(CONFIG)) as client:
            answer = await post(client, book("+16505550100", slot()))
    assert_tool_calls_response(answer)
    assert answer["results"][0]["result"].startswith("Booked with Ann Outlook")
    assert len(graph.events) == 1 and not google.events
    assert graph.insert.calls.last.request.headers["provider-config-key"] == "outlook-calendar"
    assert graph.insert.calls.last.request.headers["connection-id"] == "conn-ann"


async def test_connections_of_other_integrations_are_ignored() -> None:
    stranger = connection_json("conn-x", "ann") | {"provider_config_key": "hubspot", "provider": "hubspot"}
    async with respx.mock(assert_all_called=False) as mock:
        nango_connections(mock, stranger)
        async with proxy_client(config_from(CONFIG)) as client:
            answer = await post(client, assistant_request("+16505550100"))
    assert "credentials" not in answer.get("assistant", {}) or all(
        c.get("authorizationId") != "conn-x" for c in answer["assistant"].get("credentials", [])
    )
    assert "conn-x" not in json.dumps(answer)


async def test_a_webhook_of_the_outlook_integration_is_applied() -> None:
    async with respx.mock(assert_all_called=False) as mock:
        nango_connections(mock, outlook_connection("conn-new", "ann"))
        async with proxy_client(config_from(CONFIG)) as client:
            body = encode(auth_webhook(connection_id="conn-new", user_id="ann", integration="outlook-calendar"))
            reply = await client.post("/nango/webhook", content=body, headers={"X-Nango-Hmac-Sha256": sign(body)})
    assert reply.status_code == 200 and reply.json()["result"] != "other_integration"
