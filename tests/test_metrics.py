from __future__ import annotations

import json

import httpx
import pytest

from proxy.app import create_app
from proxy.metrics import Metrics
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample
from tests.nango_fakes import SIGNING_KEY, auth_webhook, connection_json, encode, error_body, sample, sign

pytestmark = pytest.mark.anyio

CONFIG = """\
auth:
  vapi_secrets: ["${VAPI_SERVER_SECRET}"]
nango:
  base_url: https://nango.test
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
  webhook_signing_keys: ["SIGNING_KEY"]
server:
  deadline_seconds: 1.0
templates:
  default:
    model: {provider: openai, model: gpt-4o}
fallbacks:
  unknown_number: {action: reject, message: "This number is not in service."}
  no_calendar: {action: take_message}
  error: {action: transfer, number: "+1 415 555 0199"}
users:
  - {id: fixed, name: Fay Fixed, timezone: UTC, connection_id: conn-fixed}
  - {id: found, name: Finn Found, timezone: UTC}
  - {id: none, name: Nora None, timezone: UTC}
  - {id: broken, name: Bo Broken, timezone: UTC}
routes:
  - {to: "+1 650 555 0101", user: fixed}
  - {to: "+1 650 555 0102", user: found}
  - {to: "+1 650 555 0103", user: none}
  - {to: "+1 650 555 0104", user: broken}
""".replace("SIGNING_KEY", SIGNING_KEY)


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params["tags[end_user_id]"]
    if user == "broken":
        return httpx.Response(500, json=error_body("server_error"))
    found = [connection_json(f"conn-{user}", user)] if user == "found" else []
    return httpx.Response(200, json={"connections": found})


def call_to(number: str) -> bytes:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"]["number"] = number
    return json.dumps(body).encode()


async def test_each_outcome_moves_its_counters() -> None:
    metrics = Metrics()
    http = httpx.AsyncClient(transport=httpx.MockTransport(nango))
    app = create_app(config_from(CONFIG), metrics=metrics, http_client=http)
    calls = ["+16505550101"] * 2 + ["+16505550102"] * 2 + ["+16505550103"] * 2 + ["+16505550104", "+16505550199"]
    async with http, serving(app) as client:
        for number in calls:
            response = await client.post("/vapi", content=call_to(number), headers={"X-Vapi-Secret": VAPI_SECRET})
            assert response.status_code == 200
        for headers in ({"X-Vapi-Secret": "wrong-secret"}, {}):
            response = await client.post("/vapi", content=call_to("+16505550101"), headers=headers)
            assert response.status_code == 401
        status = json.dumps(vapi_sample("status-update.webcall")).encode()
        await client.post("/vapi", content=status, headers={"X-Vapi-Secret": VAPI_SECRET})
        webhook = encode(auth_webhook("creation", user_id="found", connection_id="conn-found"))
        await client.post("/nango/webhook", content=webhook)
        await client.post("/nango/webhook", content=webhook, headers={"X-Nango-Hmac-Sha256": sign(webhook)})
        exposition = (await client.get("/metrics")).text

    def count(name: str, **labels: str) -> float:
        return sample(metrics, name, **labels)

    outcomes = {
        ("assistant", "ok"): 4,
        ("take_message", "no_calendar"): 2,
        ("transfer", "error"): 1,
        ("rejected", "unknown_number"): 1,
        ("unauthorised", "mismatch"): 1,
        ("unauthorised", "missing"): 1,
    }
    for (outcome, reason), expected in outcomes.items():
        assert count("assistant_requests", outcome=outcome, reason=reason) == expected, (outcome, reason)
    assert metrics.registry.get_sample_value("vapi_proxy_assistant_request_seconds_count") == 8
    assert count("server_messages", type="assistant-request") == 8
    assert count("server_messages", type="status-update") == 1
    assert count("nango_requests", operation="find_connections", result="ok") == 3  # 2 lookups, 1 webhook confirmed
    assert count("nango_requests", operation="find_connections", result="http_error") == 1
    events = {"fixed": 2, "miss": 3, "hit": 1, "negative_hit": 1}
    for event, expected in events.items():
        assert count("connection_cache", event=event) == expected, event
    assert count("nango_webhooks", type="unknown", result="unauthorised") == 1
    assert count("nango_webhooks", type="auth:creation", result="applied") == 1
    assert 'vapi_proxy_assistant_requests_total{outcome="assistant",reason="ok"} 4.0' in exposition
    version = app.state.runtime.config.version
    assert f'vapi_proxy_config_info{{version="{version}"}} 1.0' in exposition
    assert "vapi_proxy_config_file_invalid 0.0" in exposition


def test_every_metric_is_exported_with_help() -> None:
    exposition = Metrics().render().decode()
    helps = [line.split()[2] for line in exposition.splitlines() if line.startswith("# HELP")]
    families = [name for name in helps if not name.endswith("_created")]
    assert families == [
        "vapi_proxy_assistant_requests_total",
        "vapi_proxy_assistant_request_seconds",
        "vapi_proxy_server_messages_total",
        "vapi_proxy_tool_calls_total",
        "vapi_proxy_bookings_unconfirmed_total",
        "vapi_proxy_nango_requests_total",
        "vapi_proxy_connection_cache_total",
        "vapi_proxy_nango_index_connections",
        "vapi_proxy_tag_routed_lines",
        "vapi_proxy_tag_routing_conflicts",
        "vapi_proxy_nango_index_refreshed_timestamp_seconds",
        "vapi_proxy_config_reloads_total",
        "vapi_proxy_config_info",
        "vapi_proxy_config_file_invalid",
        "vapi_proxy_deadline_seconds",
        "vapi_proxy_nango_webhooks_total",
        "vapi_proxy_redis_up",
        "vapi_proxy_redis_operations_total",
        "vapi_proxy_redis_fanout_delay_seconds",
        "vapi_proxy_connections_refused_total",
    ]
