from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from proxy.metrics import Metrics
from proxy.nango import directory as directory_module
from proxy.nango import webhooks
from proxy.nango.directory import UNCONFIRMED_FAILURE_SECONDS, ConnectionDirectory, Lookup
from proxy.nango.tags import TagRouting
from proxy.nango.webhooks import handle_nango_webhook, verify_nango_signature
from proxy.secret import Secret
from tests.nango_fakes import (
    AUTH_ERROR,
    INTEGRATION,
    OLD_SIGNING_KEY,
    SECRET_KEY,
    SIGNING_KEY,
    FakeClock,
    FakeNango,
    auth_webhook,
    connection_json,
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


@asynccontextmanager
async def nango_env(**overrides: Any) -> AsyncIterator[tuple[FakeNango, ConnectionDirectory, Metrics, FakeClock]]:
    """A directory backed by a stateful fake Nango."""
    fake, metrics, clock = FakeNango(), Metrics(), FakeClock()
    async with fake.client() as http:
        client = make_client(http, metrics, clock, **overrides)
        directory = ConnectionDirectory(client, client.settings, metrics, clock=clock)
        try:
            yield fake, directory, metrics, clock
        finally:
            await directory.aclose()


@pytest.mark.anyio
async def test_a_signed_creation_is_visible_to_the_very_next_lookup() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        assert (await directory.lookup("usr_1", timeout=1)).source == "negative"
        fake.add("conn-new", {"end_user_id": "usr_1"})
        status, body = await deliver(auth_webhook("creation", connection_id="conn-new"), directory, metrics)
        assert (status, body) == (200, {"ok": True, "result": "applied"})
        assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-new", "index")
        assert len(fake.requests) == 2  # the lookup, and the webhook's one confirmation
    assert sample(metrics, "nango_webhooks", type="auth:creation", result="applied") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("key", [SIGNING_KEY, OLD_SIGNING_KEY])
async def test_override_with_either_rotation_key_is_applied(key: str) -> None:
    async with nango_env(index_refresh_interval=0) as (fake, directory, metrics, _):
        fake.add("conn-2", {"end_user_id": "usr_1"})
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
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-new", {"end_user_id": "usr_1"})
        status, body = await deliver(auth_webhook(), directory, metrics, headers=headers)
        assert (status, body) == (401, {"error": "missing or invalid signature"})
        assert fake.requests == []  # nothing was asked, nothing applied
        assert directory.current("usr_1") is None
    assert sample(metrics, "nango_webhooks", type="unknown", result="unauthorised") == 1
    shown = caplog.text + json.dumps(body)
    assert all(secret not in shown for secret in (SIGNING_KEY, OLD_SIGNING_KEY, SECRET_KEY))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "body is not valid JSON: expected a JSON object"),
        (b"\xff\xfe", "body is not valid JSON: expected a JSON object"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'"auth"', "body is not a JSON object"),
        # 100,000 nested arrays used to raise RecursionError out of the handler: a 500.
        (b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply: expected a JSON object"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "body is nested too deeply: expected a JSON object"),
    ],
    ids=["broken", "not-utf8", "array", "string", "nested-arrays", "nested-objects"],
)
async def test_signed_garbage_is_a_bad_request_with_a_reason(raw: bytes, reason: str) -> None:
    metrics = Metrics()
    status, body = await deliver(raw, directory_without_nango(metrics), metrics)
    assert (status, body) == (400, {"error": reason})
    assert sample(metrics, "nango_webhooks", type="unknown", result="invalid") == 1


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
        (auth_webhook() | {"connectionId": None}, "auth:creation", "ignored"),
        (auth_webhook() | {"connectionId": "x" * 256}, "auth:creation", "ignored"),
        (auth_webhook() | {"operation": 7}, "auth:other", "ignored"),
    ],
)
async def test_everything_else_is_acknowledged_and_left_alone(payload: dict[str, Any], label: str, result: str) -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-new", {"end_user_id": "usr_1"})
        assert await deliver(payload, directory, metrics) == (200, {"ok": True, "result": result})
        assert fake.requests == []
        assert directory.current("usr_1") is None
    assert sample(metrics, "nango_webhooks", type=label, result=result) == 1


@pytest.mark.anyio
async def test_without_nango_a_webhook_changes_nothing() -> None:
    # Nothing could confirm it: the body alone never changes routing.
    metrics = Metrics()
    directory = directory_without_nango(metrics)
    assert await deliver(auth_webhook(), directory, metrics) == (200, {"ok": True, "result": "nango_not_configured"})
    assert (await directory.lookup("usr_1", timeout=1)).source == "error"


@pytest.mark.anyio
async def test_the_user_id_falls_back_to_end_user_and_follows_the_configured_tag() -> None:
    async with nango_env(index_refresh_interval=0) as (fake, directory, metrics, _):
        fake.connections.append(connection_json("from-end-user", "usr_1", tag=False, end_user=True))
        await deliver(auth_webhook(connection_id="from-end-user", in_tags=False), directory, metrics)
        # Nango's record names no user by tag: the confirmation asked by connection id and found no owner.
        assert directory.current("usr_1") is None
    async with nango_env(index_refresh_interval=0, user_tag="customer_id") as (fake, directory, metrics, _):
        fake.add("from-tag", {"customer_id": "cust_7"})
        tagged = auth_webhook(connection_id="from-tag", user_id="ignored") | {"tags": {"customer_id": "cust_7"}}
        assert await deliver(tagged, directory, metrics, user_tag="customer_id") == (
            200,
            {"ok": True, "result": "applied"},
        )
        assert await directory.lookup("cust_7", timeout=1) == Lookup("from-tag", "cache")


@pytest.mark.anyio
async def test_a_confirmed_failed_refresh_marks_the_connection_unusable() -> None:
    async with nango_env(index_refresh_interval=0) as (fake, directory, metrics, _):
        record = fake.add("conn-1", {"end_user_id": "usr_1"})
        await deliver(auth_webhook("creation", connection_id="conn-1"), directory, metrics)
        record["errors"] = AUTH_ERROR  # Nango records the error before it sends the webhook
        status, body = await deliver(auth_webhook("refresh", success=False, connection_id="conn-1"), directory, metrics)
        assert (status, body) == (200, {"ok": True, "result": "marked_unusable"})
        assert (await directory.lookup("usr_1", timeout=1)).source == "unhealthy"
    assert sample(metrics, "nango_webhooks", type="auth:refresh", result="marked_unusable") == 1


# --- replays and forgeries (issue 9, item 6) ---


@pytest.mark.anyio
async def test_a_replayed_old_creation_does_not_roll_a_user_back() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-old", {"end_user_id": "usr_1"})
        old_webhook = encode(auth_webhook("creation", connection_id="conn-old"))
        await deliver(old_webhook, directory, metrics)
        fake.add("conn-new", {"end_user_id": "usr_1"})  # the user reconnected; the old one still exists
        await deliver(auth_webhook("creation", connection_id="conn-new"), directory, metrics)
        assert directory.current("usr_1") == "conn-new"
        assert await deliver(old_webhook, directory, metrics) == (200, {"ok": True, "result": "kept_newer"})
        assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-new", "index")
        fake.delete("conn-old")
        assert await deliver(old_webhook, directory, metrics) == (200, {"ok": True, "result": "not_found"})
        assert directory.current("usr_1") == "conn-new"


@pytest.mark.anyio
async def test_a_forged_creation_cannot_point_a_user_at_another_users_connection() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-victim", {"end_user_id": "usr_victim"})
        fake.add("conn-attacker", {"end_user_id": "usr_attacker"})
        forged = auth_webhook("creation", connection_id="conn-attacker", user_id="usr_victim")
        assert await deliver(forged, directory, metrics) == (200, {"ok": True, "result": "not_found"})
        assert directory.current("usr_victim") is None
        assert await directory.lookup("usr_victim", timeout=1) == Lookup("conn-victim", "nango")


@pytest.mark.anyio
async def test_a_webhook_naming_a_real_connection_with_another_users_id_changes_nothing() -> None:
    routing = TagRouting(number_tag="vapi_number")
    async with nango_env(tag_routing=routing) as (fake, directory, metrics, _):
        fake.add("conn-older", {"end_user_id": "usr_older", "vapi_number": "+14155550100"})
        fake.add("conn-victim", {"end_user_id": "usr_victim", "vapi_number": "+14155550111"})
        fake.add("conn-rival", {"end_user_id": "usr_rival", "vapi_number": "+14155550100"})
        assert await directory.refresh_index()
        lines = directory.lines
        assert lines is not None
        before = (directory.index.line("to", "+14155550100"), directory.index.line("to", "+14155550111"))
        conflicts = directory.status()["line_conflicts"]
        for victim in ("conn-victim", "conn-older"):
            mismatched = auth_webhook("creation", connection_id=victim, user_id="usr_attacker")
            assert await deliver(mismatched, directory, metrics) == (200, {"ok": True, "result": "not_found"})
        asked = len(fake.requests)
        assert await directory.lookup("usr_victim", timeout=1) == Lookup("conn-victim", "index")
        assert await directory.lookup("usr_older", timeout=1) == Lookup("conn-older", "index")
        assert (directory.index.line("to", "+14155550100"), directory.index.line("to", "+14155550111")) == before
        assert directory.status()["line_conflicts"] == conflicts == 1
        assert len(fake.requests) == asked  # served from the index, as before the webhooks


@pytest.mark.anyio
async def test_made_up_users_are_never_added() -> None:
    async with nango_env() as (_, directory, metrics, _):
        for i in range(300):
            made_up = auth_webhook("creation", connection_id=f"conn-fake-{i}", user_id=f"usr_fake_{i}")
            assert await deliver(made_up, directory, metrics) == (200, {"ok": True, "result": "not_found"})
        status = directory.status()
        assert (status["index_size"], status["cache_size"]) == (0, 0)
    assert sample(metrics, "nango_webhooks", type="auth:creation", result="not_found") == 300


@pytest.mark.anyio
async def test_users_added_by_webhooks_between_refreshes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_module, "WEBHOOK_NEW_USERS_LIMIT", 3)
    async with nango_env() as (fake, directory, metrics, _):
        for i in range(5):
            fake.add(f"conn-{i}", {"end_user_id": f"usr_{i}"})
            await deliver(auth_webhook("creation", connection_id=f"conn-{i}", user_id=f"usr_{i}"), directory, metrics)
        assert directory.status()["index_size"] == 3
        # The rest are still served, from the bounded TTL cache.
        assert await directory.lookup("usr_4", timeout=1) == Lookup("conn-4", "cache")


@pytest.mark.anyio
async def test_a_replayed_failed_refresh_is_ignored_once_nango_says_healthy() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-1", {"end_user_id": "usr_1"})
        replay = auth_webhook("refresh", success=False, connection_id="conn-1")
        assert await deliver(replay, directory, metrics) == (200, {"ok": True, "result": "not_confirmed"})
        assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-1", "index")


@pytest.mark.anyio
async def test_an_unconfirmed_failed_refresh_expires_quickly() -> None:
    async with nango_env() as (fake, directory, metrics, clock):
        fake.add("conn-1", {"end_user_id": "usr_1"})
        await deliver(auth_webhook("creation", connection_id="conn-1"), directory, metrics)
        fake.down = True
        replay = auth_webhook("refresh", success=False, connection_id="conn-1")
        assert await deliver(replay, directory, metrics) == (200, {"ok": True, "result": "suspended_unconfirmed"})
        assert (await directory.lookup("usr_1", timeout=1)).source == "unhealthy"
        clock.advance(UNCONFIRMED_FAILURE_SECONDS + 0.1)
        assert await directory.lookup("usr_1", timeout=1) == Lookup("conn-1", "index")


@pytest.mark.anyio
async def test_a_creation_nango_cannot_confirm_is_answered_503_for_redelivery() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.down = True
        status, body = await deliver(auth_webhook("creation", connection_id="conn-1"), directory, metrics)
        assert status == 503 and "deliver again" in str(body["error"])
        assert directory.current("usr_1") is None
    assert sample(metrics, "nango_webhooks", type="auth:creation", result="unconfirmed") == 1


@pytest.mark.anyio
async def test_concurrent_webhooks_about_one_connection_share_one_request() -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-1", {"end_user_id": "usr_1"})
        fake.latency = 0.01
        webhook = encode(auth_webhook("creation", connection_id="conn-1"))
        answers = await asyncio.gather(*(deliver(webhook, directory, metrics) for _ in range(20)))
        assert {body["result"] for _, body in answers} == {"applied"}
        assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_pending_confirmations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "MAX_PENDING_CONFIRMATIONS", 2)
    async with nango_env() as (fake, directory, metrics, _):
        fake.latency = 0.01
        answers = await asyncio.gather(
            *(deliver(auth_webhook(connection_id=f"c{i}", user_id=f"u{i}"), directory, metrics) for i in range(5))
        )
        assert sorted(status for status, _ in answers) == [200, 200, 503, 503, 503]
        assert len(fake.requests) == 2


JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
AUTH_FIELDS = ["type", "operation", "success", "connectionId", "providerConfigKey", "tags", "endUser", "error"]


@hypothesis_settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(AUTH_FIELDS), JSON_VALUES | st.sampled_from(["auth", "creation"]), max_size=5
    )
)
@pytest.mark.anyio
async def test_signed_auth_webhooks_with_any_field_of_any_type_never_fail(changes: dict[str, Any]) -> None:
    async with nango_env() as (fake, directory, metrics, _):
        fake.add("conn-new", {"end_user_id": "usr_1"})
        status, body = await deliver(auth_webhook() | changes, directory, metrics)
        assert (status, sorted(body)) in [(200, ["ok", "result"]), (400, ["error"]), (503, ["error"])]
        # Only Nango's answer is ever applied: usr_1 is served conn-new or nothing.
        assert directory.current("usr_1") in (None, "conn-new")
