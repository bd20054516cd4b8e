from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import pytest
import respx

from proxy.directory import ConnectionDirectory, Lookup
from proxy.metrics import Metrics
from proxy.secret import Secret
from proxy.webhooks import handle_nango_webhook, verify_nango_signature
from tests.nango_fakes import (
    BASE_URL,
    INTEGRATION,
    OLD_SIGNING_KEY,
    SECRET_KEY,
    SIGNING_KEY,
    FakeClock,
    auth_webhook,
    connections_body,
    encode,
    make_client,
    sample,
    settings,
    sign,
)

KEYS = (Secret(SIGNING_KEY), Secret(OLD_SIGNING_KEY))


def directory_without_nango(metrics: Metrics, **overrides: Any) -> ConnectionDirectory:
    # No client: every answer below must come from the webhook, none from Nango.
    return ConnectionDirectory(None, settings(**overrides), metrics, clock=FakeClock())


async def deliver(
    payload: object,
    directory: ConnectionDirectory,
    metrics: Metrics,
    *,
    headers: dict[str, str] | None = None,
    user_tag: str = "end_user_id",
) -> tuple[int, dict[str, object]]:
    body = payload if isinstance(payload, bytes) else encode(payload)
    if headers is None:
        headers = {"X-Nango-Hmac-Sha256": sign(body)}
    return await handle_nango_webhook(
        body, headers, directory=directory, keys=KEYS, integration_id=INTEGRATION, user_tag=user_tag, metrics=metrics
    )


def test_signature_is_the_hex_hmac_of_the_raw_body() -> None:
    body = b'{"from": "nango"}'
    assert verify_nango_signature(body, sign(body), KEYS)
    assert verify_nango_signature(body, sign(body).upper(), KEYS)
    assert verify_nango_signature(body, sign(body, OLD_SIGNING_KEY), KEYS)  # the previous key, during a rotation
    assert not verify_nango_signature(body + b" ", sign(body), KEYS)
    assert not verify_nango_signature(body, sign(body, "another-key"), KEYS)
    assert not verify_nango_signature(body, None, KEYS)
    assert not verify_nango_signature(body, "", KEYS)
    assert not verify_nango_signature(body, "zz" * 32, KEYS)
    assert not verify_nango_signature(body, "é" * 64, KEYS)
    assert not verify_nango_signature(body, sign(body), ())


def test_an_empty_key_never_verifies() -> None:
    body = b"{}"
    assert not verify_nango_signature(body, sign(body, ""), (Secret(""),))


@pytest.mark.anyio
async def test_a_signed_creation_is_visible_to_the_very_next_lookup() -> None:
    metrics, clock = Metrics(), FakeClock()
    async with httpx.AsyncClient() as http, respx.mock(base_url=BASE_URL) as nango:
        route = nango.get("/connections").respond(200, json=connections_body())
        client = make_client(http, metrics, clock)
        directory = ConnectionDirectory(client, client.settings, metrics, clock=clock)
        assert (await directory.lookup("usr_1", timeout=1)).source == "negative"
        status, body = await deliver(auth_webhook("creation", connection_id="conn-new"), directory, metrics)
        assert (status, body) == (200, {"ok": True, "result": "applied"})
        assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-new", "index")
        assert route.call_count == 1
    assert sample(metrics, "nango_webhooks", type="auth:creation", result="applied") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("key", [SIGNING_KEY, OLD_SIGNING_KEY])
async def test_override_with_either_rotation_key_is_applied(key: str) -> None:
    metrics = Metrics()
    directory = directory_without_nango(metrics, index_refresh_interval=0)
    body = encode(auth_webhook("override", connection_id="conn-2"))
    assert await deliver(body, directory, metrics, headers={"x-nango-hmac-sha256": sign(body, key)}) == (
        200,
        {"ok": True, "result": "applied"},
    )
    assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-2", "cache")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Nango-Hmac-Sha256": "0" * 64},
        {"X-Nango-Hmac-Sha256": sign(encode(auth_webhook()), SECRET_KEY)},  # a key not in the list
        # The deprecated scheme, correctly computed, is still refused.
        {"X-Nango-Signature": hashlib.sha256(f"{SIGNING_KEY}{json.dumps(auth_webhook())}".encode()).hexdigest()},
    ],
    ids=["missing", "bad", "unknown-key", "deprecated-header"],
)
async def test_unsigned_or_badly_signed_webhooks_are_rejected(
    headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    directory = directory_without_nango(metrics)
    status, body = await deliver(auth_webhook(), directory, metrics, headers=headers)
    assert (status, body) == (401, {"error": "missing or invalid signature"})
    assert (await directory.lookup("usr_1", timeout=1)).source == "error"  # nothing was applied
    assert sample(metrics, "nango_webhooks", type="unknown", result="unauthorised") == 1
    shown = caplog.text + json.dumps(body)
    assert all(secret not in shown for secret in (SIGNING_KEY, OLD_SIGNING_KEY, SECRET_KEY))


@pytest.mark.anyio
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"auth"', b"\xff\xfe"])
async def test_signed_garbage_is_a_bad_request(raw: bytes) -> None:
    metrics = Metrics()
    status, body = await deliver(raw, directory_without_nango(metrics), metrics)
    assert (status, body) == (400, {"error": "body is not a JSON object"})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "label", "result"),
    [
        ({"from": "nango", "type": "sync", "syncName": "events", "success": True}, "sync", "ignored"),
        ({"from": "nango", "type": "forward", "payload": {}}, "forward", "ignored"),
        ({"from": "nango", "type": "async_action", "id": "a1"}, "async_action", "ignored"),
        ({"from": "nango", "type": "something-new"}, "other", "ignored"),
        (auth_webhook(integration="slack"), "auth:creation", "other_integration"),
        (auth_webhook("creation", success=False), "auth:creation", "ignored"),
        (auth_webhook("refresh", success=True), "auth:refresh", "ignored"),
        (auth_webhook("unknown"), "auth:unknown", "ignored"),
        (auth_webhook(user_id=None), "auth:creation", "no_user"),
        (auth_webhook() | {"connectionId": None}, "auth:creation", "ignored"),
        (auth_webhook() | {"operation": 7}, "auth:other", "ignored"),
    ],
)
async def test_everything_else_is_acknowledged_and_left_alone(payload: dict[str, Any], label: str, result: str) -> None:
    metrics = Metrics()
    directory = directory_without_nango(metrics)
    assert await deliver(payload, directory, metrics) == (200, {"ok": True, "result": result})
    assert (await directory.lookup("usr_1", timeout=1)).source == "error"
    assert sample(metrics, "nango_webhooks", type=label, result=result) == 1


@pytest.mark.anyio
async def test_the_user_id_falls_back_to_end_user_and_follows_the_configured_tag() -> None:
    metrics = Metrics()
    directory = directory_without_nango(metrics, index_refresh_interval=0)
    await deliver(auth_webhook(connection_id="from-end-user", in_tags=False), directory, metrics)
    assert await directory.lookup("usr_1", timeout=1) == Lookup("from-end-user", "cache")
    tagged = auth_webhook(connection_id="from-tag", user_id="ignored") | {"tags": {"customer_id": "cust_7"}}
    await deliver(tagged, directory, metrics, user_tag="customer_id")
    assert await directory.lookup("cust_7", timeout=1) == Lookup("from-tag", "cache")


@pytest.mark.anyio
async def test_a_failed_refresh_marks_the_connection_unusable() -> None:
    metrics = Metrics()
    directory = directory_without_nango(metrics, index_refresh_interval=0)
    await deliver(auth_webhook("creation", connection_id="conn-1"), directory, metrics)
    status, body = await deliver(auth_webhook("refresh", success=False, connection_id="conn-1"), directory, metrics)
    assert (status, body) == (200, {"ok": True, "result": "marked_unusable"})
    assert await directory.lookup("usr_1", timeout=1) == Lookup(None, "unhealthy", "cached")
    assert sample(metrics, "nango_webhooks", type="auth:refresh", result="marked_unusable") == 1
