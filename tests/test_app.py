from __future__ import annotations

import copy
import json
import logging
from typing import Any

import httpx
import pytest
import respx

from tests.contract import assert_assistant_request_response
from tests.helpers import VAPI_SECRET, config_from, proxy_client, vapi_sample
from tests.nango_fakes import connection_json

pytestmark = pytest.mark.anyio

NANGO = "https://nango.test"
AUTH = {"X-Vapi-Secret": VAPI_SECRET}

CONFIG = f"""\
auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: {NANGO}
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
  read_timeout: 0.5
server:
  deadline_seconds: 1.0
templates:
  default:
    firstMessage: "Hello, you reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "You answer for {{{{user_name}}}}. Today is {{{{today}}}}."}}]
    voice: {{provider: vapi, voiceId: Elliot}}
fallbacks:
  unknown_number: {{action: reject, message: "This number is not in service."}}
  no_calendar: {{action: take_message}}
  error: {{action: transfer, number: "+1 415 555 0199"}}
users:
  - {{id: doe, name: Dr. Jane Doe, timezone: America/New_York, connection_id: conn-doe}}
  - {{id: nango_user, name: Sam Lee, timezone: America/Los_Angeles}}
  - id: sip_user
    name: Priya Patel
    timezone: Europe/London
    connection_id: conn-sip
    calendar: {{declare: tool_ids, tool_ids: ["11111111-2222-4333-8444-555555555555"]}}
routes:
  - {{to: "+1 650 555 0100", user: doe}}
  - {{to: "+1 650 555 0111", user: nango_user}}
  - {{phone_number_id: 9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d, user: sip_user}}
"""


def to_number(number: str) -> dict[str, Any]:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = number
    body["message"]["phoneNumber"]["id"] = "unrouted-id"
    body["message"]["call"]["phoneNumberId"] = "unrouted-id"
    return body


async def post(client: httpx.AsyncClient, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/vapi", content=content, headers=AUTH if headers is None else headers)


def connections(*items: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"connections": list(items)})


async def test_pstn_call_gets_the_users_calendar_assistant() -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, vapi_sample("assistant-request.pstn") | {})
        # The sample's number is not routed; send it to Dr. Doe's number instead.
        response = await post(client, to_number("+16505550100"))
    assert response.status_code == 200
    answer = response.json()
    parsed = assert_assistant_request_response(answer)
    assistant = answer["assistant"]
    assert assistant["credentials"] == [
        {"provider": "google.calendar.oauth2-authorization", "authorizationId": "conn-doe", "name": "calendar doe"}
    ]
    assert [t["type"] for t in assistant["model"]["tools"]] == [
        "google.calendar.availability.check",
        "google.calendar.event.create",
    ]
    assert assistant["firstMessage"] == "Hello, you reached Dr. Jane Doe."
    system = assistant["model"]["messages"][0]["content"]
    assert "explicit UTC offset" in system and "America/New_York" in system and "{{" not in system
    assert answer["assistantOverrides"]["variableValues"]["user_name"] == "Dr. Jane Doe"
    assert parsed.assistant is not None


async def test_sip_call_routes_by_phone_number_id_and_uses_tool_ids() -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, vapi_sample("assistant-request.sip"))
    answer = response.json()
    assert_assistant_request_response(answer)
    model = answer["assistant"]["model"]
    assert model["toolIds"] == ["11111111-2222-4333-8444-555555555555"]
    assert "tools" not in model
    assert answer["assistant"]["credentials"][0]["authorizationId"] == "conn-sip"


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_nango_user_gets_connection_from_nango(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/connections").mock(
        return_value=connections(
            {
                "id": 1,
                "connection_id": "conn-from-nango",
                "provider_config_key": "google-calendar",
                "provider": "google-calendar",
                "created": "2026-10-02T09:12:44.120Z",
                "metadata": None,
                "errors": [],
                "tags": {"end_user_id": "nango_user"},
            }
        )
    )
    async with proxy_client(config_from(CONFIG)) as client:
        first = await post(client, to_number("+16505550111"))
        second = await post(client, to_number("+16505550111"))
    assert first.json()["assistant"]["credentials"][0]["authorizationId"] == "conn-from-nango"
    assert second.json() == first.json() | {"assistantOverrides": second.json()["assistantOverrides"]}
    assert route.call_count == 1  # the second call was served from the cache
    request = route.calls[0].request
    assert request.url.params["tags[end_user_id]"] == "nango_user"
    assert request.headers["authorization"] == "Bearer nango-secret-key-value"


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_user_without_connection_gets_message_taker(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/connections").mock(return_value=connections())
    async with proxy_client(config_from(CONFIG)) as client:
        answer = (await post(client, to_number("+16505550111"))).json()
    assert_assistant_request_response(answer)
    assistant = answer["assistant"]
    assert "credentials" not in assistant and "tools" not in assistant["model"]
    assert "Take a message" in assistant["model"]["messages"][0]["content"]


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_nango_failure_gets_the_error_fallback_transfer(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/connections").mock(return_value=httpx.Response(500, json={"error": {"code": "server_error"}}))
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, to_number("+16505550111"))
    assert response.status_code == 200
    answer = response.json()
    assert_assistant_request_response(answer)
    assert answer == {"destination": {"type": "number", "number": "+14155550199"}}


async def test_unknown_number_gets_the_spoken_rejection() -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, to_number("+19995550000"))
    assert response.status_code == 200
    assert response.json() == {"error": "This number is not in service."}
    assert_assistant_request_response(response.json())


async def test_unknown_number_take_message_uses_the_default_template() -> None:
    text = CONFIG.replace('{action: reject, message: "This number is not in service."}', "{action: take_message}")
    async with proxy_client(config_from(text)) as client:
        answer = (await post(client, to_number("+19995550000"))).json()
    assert_assistant_request_response(answer)
    assert answer["assistant"]["firstMessage"] == "Hello, you reached the team."


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Vapi-Secret": "wrong"},
        {"X-Vapi-Secret": VAPI_SECRET.upper()},
        {"Authorization": f"Bearer {VAPI_SECRET}"},
    ],
)
async def test_unauthenticated_requests_get_401_without_a_hint(headers: dict[str, str]) -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, to_number("+16505550100"), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert VAPI_SECRET not in response.text


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 400, "empty body"),
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"msg": {}}', 400, '"message" is missing'),
        (b'{"message": {"type": 7}}', 400, '"message.type"'),
        (b'{"message": {"type": "assistant-request", "call": "' + b"x" * 2_000_000 + b'"}}', 413, "larger than"),
    ],
)
async def test_malformed_bodies_get_a_4xx_with_a_reason(body: bytes, status: int, reason: str) -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, body)
    assert response.status_code == status
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    "message_type",
    [
        "status-update",
        "end-of-call-report",
        "conversation-update",
        "hang",
        "speech-update",
        "transcript",
        "a-type-vapi-adds-next-year",
    ],
)
async def test_notifications_are_acknowledged(message_type: str) -> None:
    body = vapi_sample("status-update.webcall")
    body["message"]["type"] = message_type
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, body)
    assert (response.status_code, response.json()) == (200, {})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("phoneNumber"),
        lambda m: m.update(customer={}, call={"id": "c"}),
        lambda m: m.update(phoneNumber={"number": ["+1"]}, customer={"number": {"x": 1}}),
        lambda m: m.update(call=None, phoneNumber=None, customer=None, timestamp="2025-08-20T17:45:45.601Z"),
    ],
)
async def test_odd_call_shapes_still_get_an_answer(mutate: Any) -> None:
    body = copy.deepcopy(vapi_sample("assistant-request.pstn"))
    mutate(body["message"])
    async with proxy_client(config_from(CONFIG)) as client:
        response = await post(client, body)
    assert response.status_code == 200
    assert_assistant_request_response(response.json())


async def test_probes_answer_without_auth() -> None:
    async with proxy_client(config_from(CONFIG)) as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")
    assert (live.status_code, ready.status_code) == (200, 200)
    assert ready.json()["config"]["users"] == 3


async def test_one_log_line_per_call_masks_numbers_and_hides_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    async with proxy_client(config_from(CONFIG)) as client:
        await post(client, to_number("+16505550100"))
    records = [r for r in caplog.records if r.getMessage() == "assistant-request"]
    assert len(records) == 1
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["call_id"] == "0198c3a1-5e2f-7d41-9b8e-2a6c1f0e4d37"
    assert fields["user"] == "doe" and fields["outcome"] == "assistant" and fields["connection"] == "fixed"
    assert "+16505550100" not in caplog.text and "+14155550123" not in caplog.text
    assert str(fields["to"]).endswith("00") and "*" in str(fields["to"])
    assert VAPI_SECRET not in caplog.text and "nango-secret-key-value" not in caplog.text


HMAC_KEY = "hmac-key-for-tests"


def signed_config() -> str:
    return CONFIG.replace(
        '  vapi_secrets: ["${VAPI_SERVER_SECRET}"]\n',
        "  bearer: {tokens: [old-token, new-token]}\n"
        f"  hmac: {{secrets: [{HMAC_KEY}], signature_prefix: 'sha256='}}\n",
    )


async def test_bearer_and_hmac_requests_are_accepted_and_forgeries_are_not() -> None:
    import time

    from proxy.secret import Secret
    from proxy.vapi.auth import HmacPlan, hmac_signature

    body = json.dumps(to_number("+16505550100")).encode()
    stamp = str(int(time.time()))
    plan = HmacPlan(secrets=(Secret(HMAC_KEY),), signature_prefix="sha256=")
    signature = hmac_signature(plan, Secret(HMAC_KEY), body=body, timestamp=stamp)
    stale = str(int(time.time()) - 3600)
    async with proxy_client(config_from(signed_config())) as client:
        ok = [
            await post(client, body, {"Authorization": "Bearer new-token"}),
            await post(client, body, {"Authorization": "bearer old-token"}),
            await post(client, body, {"x-signature": signature, "x-timestamp": stamp}),
        ]
        refused = [
            await post(client, body, {"X-Vapi-Secret": VAPI_SECRET}),
            await post(client, body, {"Authorization": "Bearer newer-token"}),
            await post(client, body, {"x-signature": signature, "x-timestamp": stale}),
            await post(client, body + b" ", {"x-signature": signature, "x-timestamp": stamp}),
            await post(client, body, {"x-signature": signature[:-2], "x-timestamp": stamp}),
        ]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.status_code for r in refused] == [401] * 5


async def test_proxy_mode_assistant_carries_function_tools_and_no_credential() -> None:
    text = CONFIG + "calendar: {mode: proxy}\nserver_extra: 1\n"
    text = text.replace("server_extra: 1\n", "").replace(
        "server:\n  deadline_seconds: 1.0\n",
        "server:\n  deadline_seconds: 1.0\n  public_url: https://proxy.example.com\n",
    )
    async with proxy_client(config_from(text)) as client:
        answer = (await post(client, to_number("+16505550100"))).json()
    assert_assistant_request_response(answer)
    tools = answer["assistant"]["model"]["tools"]
    assert {t["function"]["name"] for t in tools} >= {"check_availability", "find_open_slots", "book_appointment"}
    assert all(t["server"]["url"] == "https://proxy.example.com/vapi" for t in tools)
    assert "credentials" not in answer["assistant"]
    assert answer["assistant"]["metadata"]["calendarMode"] == "proxy"


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_nango_webhook_is_visible_on_the_very_next_call(respx_mock: respx.MockRouter) -> None:
    import hashlib
    import hmac

    connected: list[dict[str, Any]] = []
    respx_mock.get("/connections").mock(side_effect=lambda request: connections(*connected))
    webhook = json.dumps(
        {
            "from": "nango",
            "type": "auth",
            "operation": "creation",
            "success": True,
            "connectionId": "conn-just-connected",
            "providerConfigKey": "google-calendar",
            "provider": "google-calendar",
            "authMode": "OAUTH2",
            "environment": "prod",
            "tags": {"end_user_id": "nango_user"},
        }
    ).encode()
    signature = hmac.new(b"nango-secret-key-value", webhook, hashlib.sha256).hexdigest()
    async with proxy_client(config_from(CONFIG)) as client:
        before = (await post(client, to_number("+16505550111"))).json()
        connected.append(connection_json("conn-just-connected", "nango_user"))  # the user connects in Nango
        forged = await client.post("/nango/webhook", content=webhook, headers={"X-Nango-Hmac-Sha256": "0" * 64})
        accepted = await client.post("/nango/webhook", content=webhook, headers={"X-Nango-Hmac-Sha256": signature})
        after = (await post(client, to_number("+16505550111"))).json()
        nested = b"[" * 100_000 + b"]" * 100_000
        deep = await client.post(
            "/nango/webhook",
            content=nested,
            headers={"X-Nango-Hmac-Sha256": hmac.new(b"nango-secret-key-value", nested, hashlib.sha256).hexdigest()},
        )
    assert "credentials" not in before["assistant"]  # no connection yet: message taker
    assert (forged.status_code, accepted.status_code) == (401, 200)
    assert accepted.json() == {"ok": True, "result": "applied"}
    assert after["assistant"]["credentials"][0]["authorizationId"] == "conn-just-connected"
    assert (deep.status_code, deep.json()) == (400, {"error": "body is nested too deeply: expected a JSON object"})


def tool_calls_body(to: str, *calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    body = to_number(to)
    message = body["message"]
    message["type"] = "tool-calls"
    message["toolCallList"] = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        for call_id, name, arguments in calls
    ]
    message["toolWithToolCallList"] = [
        {"type": "function", "function": {"name": name}, "toolCall": tool_call}
        for (_, name, _), tool_call in zip(calls, message["toolCallList"], strict=True)
    ]
    return body


PROXY_MODE = (
    CONFIG.replace(
        "server:\n  deadline_seconds: 1.0\n",
        "server:\n  deadline_seconds: 1.0\n  public_url: https://proxy.example.com\n",
    )
    + "calendar: {mode: proxy}\n"
)


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_tool_calls_are_answered_for_the_routed_users_calendar(respx_mock: respx.MockRouter) -> None:
    from vapi.types import ServerMessageToolCalls

    from tests.contract import assert_tool_calls_response

    free_busy = respx_mock.post("/proxy/calendar/v3/freeBusy").respond(
        200,
        json={
            "kind": "calendar#freeBusy",
            "timeMin": "2030-03-04T14:00:00.000Z",
            "timeMax": "2030-03-04T22:00:00.000Z",
            "calendars": {"primary": {"busy": [{"start": "2030-03-04T15:00:00Z", "end": "2030-03-04T16:00:00Z"}]}},
        },
    )
    body = tool_calls_body(
        "+16505550100",
        ("tc-1", "check_availability", {"start": "2030-03-04T09:00:00-05:00", "end": "2030-03-04T17:00:00-05:00"}),
        ("tc-2", "send_fax", {}),
    )
    ServerMessageToolCalls.model_validate(body["message"])  # the request is shaped like Vapi's own
    async with proxy_client(config_from(PROXY_MODE)) as client:
        response = await post(client, body)
    assert response.status_code == 200
    answer = response.json()
    assert_tool_calls_response(answer)
    first, second = answer["results"]
    assert first["toolCallId"] == "tc-1" and "result" in first and "10 AM" in first["result"]
    assert second["toolCallId"] == "tc-2" and second["name"] == "send_fax" and "isn't available" in second["error"]
    request = free_busy.calls.last.request
    assert request.headers["connection-id"] == "conn-doe"
    assert request.headers["provider-config-key"] == "google-calendar"


@respx.mock(base_url=NANGO, assert_all_called=False)
async def test_tool_calls_when_google_is_down_get_a_speakable_error(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("/proxy/calendar/v3/freeBusy").respond(503, json={"error": {"code": 503, "message": "x"}})
    body = tool_calls_body(
        "+16505550100",
        ("tc-1", "check_availability", {"start": "2030-03-04T09:00:00-05:00", "end": "2030-03-04T17:00:00-05:00"}),
    )
    async with proxy_client(config_from(PROXY_MODE)) as client:
        response = await post(client, body)
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["error"].startswith("I can't reach the calendar right now")


async def test_tool_calls_for_tools_the_proxy_does_not_own_each_get_a_speakable_error() -> None:
    from tests.contract import assert_tool_calls_response

    # Vapi sends a tool call only to that tool's server: an empty answer would leave the model waiting.
    body = tool_calls_body("+16505550100", ("tc-1", "lookup_order", {"order": "42"}), ("tc-2", "send_fax", {}))
    async with proxy_client(config_from(PROXY_MODE)) as client:
        response = await post(client, body)
    assert response.status_code == 200
    answer = response.json()
    assert_tool_calls_response(answer)
    assert [(r["toolCallId"], r["name"]) for r in answer["results"]] == [("tc-1", "lookup_order"), ("tc-2", "send_fax")]
    assert all(
        r["error"] == "Sorry, I can't do that on this call: that action isn't available here."
        for r in answer["results"]
    )


async def test_tool_calls_that_break_unexpectedly_still_get_speakable_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.vapi import service

    async def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "answer_tool_calls", broken)
    body = tool_calls_body(
        "+16505550100",
        ("tc-1", "check_availability", {"start": "2030-03-04T09:00:00-05:00", "end": "2030-03-04T17:00:00-05:00"}),
    )
    async with proxy_client(config_from(PROXY_MODE)) as client:
        response = await post(client, body)
    assert response.status_code == 200
    assert response.json()["results"][0]["toolCallId"] == "tc-1"
    assert response.json()["results"][0]["error"].startswith("I can't reach the calendar right now")


async def test_a_client_that_disconnects_mid_body_gets_a_400_reason_not_a_crash() -> None:
    from proxy.http.bodies import read_body
    from proxy.vapi.messages import BadRequest

    events = [{"type": "http.request", "body": b'{"message": ', "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        return events.pop(0)

    with pytest.raises(BadRequest, match="client disconnected") as info:
        await read_body(receive, 1024)
    assert info.value.status_code == 400


@pytest.mark.parametrize("case", ["no_connection_in_nango", "fixed_connection_without_nango_key"])
async def test_a_tool_calls_log_line_and_metric_agree_on_the_calendar_state(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    import msgspec

    config = config_from(PROXY_MODE)
    if case == "fixed_connection_without_nango_key":
        # A config `check` refuses; built here as a reload from before that check would have left it.
        config = dataclasses.replace(config, nango=msgspec.structs.replace(config.nango, secret_key=None))
    number = "+16505550111" if case == "no_connection_in_nango" else "+16505550100"
    body = tool_calls_body(number, ("tc-1", "find_open_slots", {}))
    caplog.set_level(logging.INFO, logger="proxy")
    with respx.mock(base_url=NANGO, assert_all_called=False) as nango:
        nango.get("/connections").respond(200, json={"connections": []})
        async with proxy_client(config) as client:
            answer = (await post(client, body)).json()
            metrics = (await client.get("/metrics")).text
    assert "isn't connected" in answer["results"][0]["error"]
    (record,) = [r for r in caplog.records if r.getMessage() == "tool-calls"]
    assert record.fields["calendar"] == "not_connected"  # type: ignore[attr-defined]
    assert 'vapi_proxy_tool_calls_total{result="not_connected",tool="find_open_slots"} 1.0' in metrics
