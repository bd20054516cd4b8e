"""Issue 9's bounded tool work: a cap on tool calls per message, one request cap shared with Nango, and no
5xx however the tool calls are nested."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.vapi.tools import NOT_SERVED, answer_tool_calls
from tests.contract import assert_tool_calls_response
from tests.google_fakes import FakeGoogle, make_calendar
from tests.helpers import VAPI_SECRET, config_from, proxy_client
from tests.nango_fakes import BASE_URL
from tests.vapi.test_tools import NOW, ctx, message

pytestmark = pytest.mark.anyio

CONFIG = f"""\
auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: {BASE_URL}
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
server:
  public_url: https://proxy.example.com
  max_tool_calls: 3
calendar: {{mode: proxy}}
templates:
  default:
    model: {{provider: openai, model: gpt-4o, messages: [{{role: system, content: "Help."}}]}}
users:
  - {{id: doe, name: Dr. Jane Doe, timezone: America/New_York, connection_id: conn-doe}}
routes:
  - {{to: "+1 650 555 0100", user: doe}}
"""


def tool_calls(*functions: dict[str, Any], to: str = "+16505550100") -> dict[str, Any]:
    calls = [{"id": f"tc-{i}", "type": "function", "function": f} for i, f in enumerate(functions)]
    return {
        "message": {
            "type": "tool-calls",
            "toolCallList": calls,
            "call": {"id": "call-1", "customer": {"number": "+14155550123"}},
            "phoneNumber": {"id": "pn-1", "number": to},
        }
    }


async def post(client: httpx.AsyncClient, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/vapi", content=content, headers={"X-Vapi-Secret": VAPI_SECRET})


async def test_calls_past_the_configured_cap_each_get_their_own_speakable_error() -> None:
    slots = {"name": "find_open_slots", "arguments": "{}"}
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        async with proxy_client(config_from(CONFIG)) as client:
            response = await post(client, tool_calls(*[slots] * 5))
    assert response.status_code == 200
    answer = response.json()
    assert_tool_calls_response(answer)
    results = answer["results"]
    assert [r["toolCallId"] for r in results] == [f"tc-{i}" for i in range(5)]
    assert all(r["result"].startswith("The next open times") for r in results[:3])
    assert [r["error"] for r in results[3:]] == [
        "That was more than 3 requests at once, so I skipped this one. Please ask for it again."
    ] * 2
    assert google.freebusy.call_count == 3


async def test_the_default_cap_is_16_and_unknown_tools_do_not_use_it_up() -> None:
    calls = [("transfer_call", {})] * 3 + [("find_open_slots", {})] * 20
    metrics = Metrics()
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        google = FakeGoogle(mock)
        answer = await answer_tool_calls(message(*calls), ctx(), make_calendar(http), metrics, now=NOW)
    assert_tool_calls_response(answer)
    results: list[dict[str, Any]] = answer["results"]  # type: ignore[assignment]
    assert [r.get("error") for r in results[:3]] == [NOT_SERVED] * 3
    assert sum("result" in r for r in results) == 16 and google.freebusy.call_count == 16
    assert all("more than 16 requests" in r["error"] for r in results[19:])
    assert metrics.tool_calls.labels(tool="find_open_slots", result="too_many_calls")._value.get() == 4


async def test_a_function_name_nested_990_deep_gets_a_speakable_error_not_a_500() -> None:
    deep = "[" * 990 + '"find_open_slots"' + "]" * 990
    template = json.dumps(
        tool_calls({"name": "@1", "arguments": "{}"}, {"name": {"nested": "@2"}, "arguments": "{}"}),
    )
    body = template.replace('"@1"', deep).replace('"@2"', deep).encode()  # json.dumps itself would recurse
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        async with proxy_client(config_from(CONFIG)) as client:
            response = await post(client, body)
    assert response.status_code == 200
    answer = response.json()
    assert_tool_calls_response(answer)
    assert [(r["toolCallId"], r["name"], r["error"]) for r in answer["results"]] == [
        ("tc-0", "unknown", NOT_SERVED),
        ("tc-1", "unknown", NOT_SERVED),
    ]


async def test_arguments_nested_100k_deep_are_refused_in_words() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    functions = [{"name": "find_open_slots", "arguments": deep}, {"name": "find_open_slots", "arguments": "{}"}]
    async with respx.mock(assert_all_called=False) as mock:
        FakeGoogle(mock)
        async with proxy_client(config_from(CONFIG)) as client:
            response = await post(client, tool_calls(*functions))
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["error"] == "I couldn't use that request: the arguments were nested too deeply."
    assert second["result"].startswith("The next open times")


async def test_a_number_without_a_route_hears_a_whole_sentence() -> None:
    body = tool_calls({"name": "find_open_slots", "arguments": "{}"}, to="+19995550000")
    async with respx.mock(assert_all_called=False) as mock:
        google = FakeGoogle(mock)
        async with proxy_client(config_from(CONFIG)) as client:
            response = await post(client, body)
    [result] = response.json()["results"]
    assert result["error"] == (
        "This phone number isn't set up with a calendar, so I can't check or book times on this call."
    )
    assert not google.freebusy.called


async def test_calendar_requests_wait_for_the_shared_request_cap() -> None:
    gate = RequestGate(total_timeout=5.0, limit=2)
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        google = FakeGoogle(mock, latency=0.02)
        calendar = make_calendar(http, gate=gate)
        answer = await answer_tool_calls(message(*[("find_open_slots", {})] * 10), ctx(), calendar, Metrics(), now=NOW)
    assert all("result" in r for r in answer["results"])  # type: ignore[union-attr]
    assert google.freebusy.call_count == 10 and google.most_in_flight == 2


async def test_the_app_gives_nango_lookups_and_calendar_tools_one_gate() -> None:
    app_config = config_from(CONFIG)
    async with proxy_client(app_config) as client:
        runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.service.gate is runtime.directory._client.gate
        assert runtime.service.gate.total_timeout == 1.0 + 4 * 2.5
