"""Hostile input against the whole app: whatever arrives, no 5xx, no exception, no unbounded read.

Authenticated assistant-requests get a 200 that Vapi's own types accept; anything that is not a Vapi
server message gets a 4xx with a reason; nothing unauthenticated gets past 401.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from proxy.config import Config
from proxy.numbers import E164_PATTERN, normalize_number
from proxy.secret import Secret
from proxy.vapi.auth import hmac_signature
from tests.contract import assert_assistant_request_response
from tests.helpers import VAPI_SECRET, config_from, proxy_client, vapi_sample

pytestmark = pytest.mark.anyio

HMAC_KEY = "hostile-hmac-key-5e1"
TOLERANCE = 300
CONFIG = config_from(
    f"""\
    auth:
      vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
      hmac: {{secrets: ["{HMAC_KEY}"], tolerance_seconds: {TOLERANCE}}}
    nango:
      base_url: https://nango.test
      secret_key: nango-secret-key-value
      index_refresh_seconds: 0
    server:
      deadline_seconds: 1.0
    templates:
      default:
        firstMessage: "Hello, you reached {{{{user_name}}}}."
        model:
          provider: openai
          model: gpt-4o
          messages: [{{role: system, content: "You answer for {{{{user_name}}}}. Today is {{{{today}}}}."}}]
    fallbacks:
      unknown_number: {{action: reject, message: "This number is not in service."}}
      error: {{action: transfer, number: "+1 415 555 0199"}}
    users:
      - {{id: doe, name: Dr. Jane Doe, timezone: America/New_York}}
      - {{id: vip, name: Sam Lee, connection_id: conn-vip}}
    routes:
      - {{to: "+1 650 555 0100", user: doe}}
      - {{from: "+1 415 555 0123", to: "+1 650 555 0199", user: vip}}
      - {{phone_number_id: 4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01, user: vip}}
    """
)
PSTN: dict[str, Any] = vapi_sample("assistant-request.pstn")
AUTH = {"X-Vapi-Secret": VAPI_SECRET}
# Deterministic for CI, no example database on disk, and a budget that keeps this file well under 15 s.
HOSTILE = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params.get("tags[end_user_id]")
    conn = {"connection_id": f"conn-{user}", "created": "2026-10-02T09:12:44.120Z", "errors": []}
    return httpx.Response(200, json={"connections": [conn | {"tags": {"end_user_id": user}}]})


@asynccontextmanager
async def app(config: Config = CONFIG) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(nango)) as upstream,
        proxy_client(config, http_client=upstream) as client,
    ):
        yield client


def expected_kind(content: bytes) -> str:
    """What a body deserves, decided independently of the app: "assistant", "other" (200) or "bad" (4xx)."""
    if len(content) > CONFIG.server.max_body_bytes:
        return "bad"
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return "bad"
    message = payload.get("message") if isinstance(payload, dict) else None
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not kind:
        return "bad"
    return "assistant" if kind == "assistant-request" else "other"


def check_answer(response: httpx.Response, content: bytes) -> None:
    assert response.status_code < 500, response.text
    kind = expected_kind(content)
    if currently_in_test_context():
        event(f"{kind}: {response.status_code}")
    if kind == "bad":
        assert 400 <= response.status_code < 500
        assert response.json()["error"], "a 4xx says why"
        return
    assert response.status_code == 200, response.text
    if kind == "assistant":
        assert_assistant_request_response(response.json())


# -- bodies -----------------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["+16505550100", "sip:+16505550100@sip.example.com", "tel:+1-650-555-0100", "", "\x00"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


class Huge:
    """A big string, drawn by name so that hypothesis reports stay readable; `encode` inflates it."""

    VALUES: ClassVar[dict[str, str]] = {
        "digits": "9" * 300_000,
        "plus-digits": "+1" + "5" * 300_000,
        "sip-uri": "sip:" + "a" * 300_000 + "@example.com",
        "nuls": "\x00" * 100_000,
        "template": "{{user_name}}" * 20_000,
        "bidi-bom": "\u202e\ufeff" * 20_000,
    }

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Huge({self.name!r})"


HUGE = st.sampled_from(sorted(Huge.VALUES)).map(Huge)


def encode(body: object) -> bytes:
    return json.dumps(body, default=lambda huge: Huge.VALUES[huge.name]).encode()


def node_paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += node_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += node_paths(item, (*prefix, index))
    return paths


@st.composite
def mutated_pstn(draw: st.DrawFn) -> object:
    """The PSTN fixture with one to three nodes, at any depth, replaced by a value of the wrong type."""
    body: object = copy.deepcopy(PSTN)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(node_paths(body)))
        replacement = draw(JSON_VALUES | HUGE)
        if not path:
            body = replacement
            continue
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = replacement
    return body


@HOSTILE
@given(body=mutated_pstn())
async def test_wrong_types_anywhere_in_an_assistant_request(body: object) -> None:
    content = encode(body)
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=AUTH)
    check_answer(response, content)


async def test_every_node_of_an_assistant_request_with_every_wrong_type() -> None:
    """Exhaustive where the property above samples: each node of the fixture, replaced by each JSON type."""
    wrong: list[object] = [None, True, 0, -1.5, "", "x", [], [None], {}, {"number": {}}]
    async with app() as client:
        for path in node_paths(PSTN):
            for value in wrong:
                body: Any = copy.deepcopy(PSTN)
                if path:
                    parent = body
                    for step in path[:-1]:
                        parent = parent[step]
                    parent[path[-1]] = value
                else:
                    body = value
                content = encode(body)
                check_answer(await client.post("/vapi", content=content, headers=AUTH), content)


@HOSTILE
@given(body=JSON_VALUES)
async def test_arbitrary_json_bodies(body: object) -> None:
    content = json.dumps(body).encode()
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=AUTH)
    check_answer(response, content)


@HOSTILE
@given(
    message=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6),
    kind=st.sampled_from(["assistant-request", "tool-calls", "status-update", "end-of-call-report"]),
)
async def test_arbitrary_messages_of_every_type(message: dict[str, Any], kind: str) -> None:
    content = json.dumps({"message": message | {"type": kind}}).encode()
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=AUTH)
    check_answer(response, content)


@HOSTILE
@given(
    content=st.binary(max_size=2000) | st.binary(max_size=50).map(lambda junk: json.dumps(PSTN).encode()[:700] + junk)
)
async def test_raw_bytes_and_invalid_utf8(content: bytes) -> None:
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=AUTH)
    check_answer(response, content)


def pstn_with(number: bytes) -> bytes:
    return json.dumps(PSTN).encode().replace(b'"+16505550100"', b'"' + number + b'"')


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 10_000, id="10k-open-brackets"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, id="10k-nested-lists"),
        pytest.param(b'{"message":' * 10_000 + b"{}" + b"}" * 10_000, id="10k-nested-objects"),
        pytest.param(
            b'{"message": {"type": "assistant-request", "call": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
            id="1k-nested-inside-call",
        ),
        pytest.param(pstn_with(b"\xff\xfe\xfd"), id="invalid-utf8-in-number"),
        pytest.param(pstn_with(b"+1650\x00555"), id="raw-nul-in-number"),
        pytest.param(pstn_with(b"+1650\\u0000555"), id="escaped-nul-in-number"),
        pytest.param(pstn_with(b"\\ud800"), id="lone-surrogate"),
        pytest.param(pstn_with(b"\xed\xa0\x80"), id="utf8-encoded-surrogate"),
        pytest.param(pstn_with(b"\xef\xbb\xbf+16505550100"), id="bom-in-number"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(PSTN).encode(), id="leading-bom"),
        pytest.param(json.dumps(PSTN).encode() + b"\x00", id="trailing-nul"),
        pytest.param(pstn_with(b"+1" + b"5" * 900_000), id="900k-number"),
        pytest.param(b'{"message": {"type": "assistant-request"}, "message": 1}', id="duplicate-key"),
        pytest.param(b'{"message": {"type": "assistant-request", "call": {"id": 1e999}}}', id="huge-float"),
        pytest.param(
            b'{"message": {"type": "assistant-request", "phoneNumber": {"number": 1' + b"0" * 5000 + b"}}}",
            id="huge-int",
        ),
    ],
)
async def test_pathological_bodies(content: bytes) -> None:
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=AUTH)
    check_answer(response, content)


async def test_a_body_over_the_limit_is_refused_without_reading_it_all() -> None:
    limit = CONFIG.server.max_body_bytes
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 50 * limit:
            sent += 65_536
            yield b" " * 65_536

    async with app() as client:
        declared = await client.post("/vapi", content=b"{}", headers={**AUTH, "Content-Length": str(limit + 1)})
        streamed = await client.post("/vapi", content=endless(), headers=AUTH)
        negative = await client.post("/vapi", content=b"{}", headers={**AUTH, "Content-Length": "-1"})
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert negative.status_code in (400, 413)
    assert "larger than" in declared.json()["error"]


@HOSTILE
@given(raw=st.one_of(st.text(max_size=80), st.binary(max_size=40).map(lambda b: b.decode("latin-1")), JSON_LEAVES))
def test_number_normalisation_never_raises_and_returns_e164_or_none(raw: object) -> None:
    number = normalize_number(raw)
    assert number is None or E164_PATTERN.fullmatch(number)
    if number is not None:
        assert normalize_number(number) == number


# -- auth -------------------------------------------------------------------------------------------

SECRET_HEADERS = ["X-Vapi-Secret", "x-vapi-secret", "X-VAPI-SECRET", "x-Vapi-secret"]


def near_misses(secret: str) -> st.SearchStrategy[bytes]:
    """Values that are almost the secret: truncated, extended, recased, one byte off, padded, encoded."""
    raw = secret.encode()
    return st.one_of(
        st.integers(0, len(raw) - 1).map(lambda n: raw[:n]),
        st.integers(1, len(raw)).map(lambda n: raw[n:]),
        st.binary(min_size=1, max_size=4).map(lambda extra: raw + extra),
        st.integers(0, len(raw) - 1).map(lambda i: raw[:i] + bytes([raw[i] ^ 0x20]) + raw[i + 1 :]),
        st.integers(0, len(raw) - 1).map(lambda i: raw[:i] + bytes([(raw[i] + 1) % 256]) + raw[i + 1 :]),
        st.just(raw.upper()),
        st.just(raw.swapcase()),
        st.just(b"Bearer " + raw),
        st.just(raw + b"\x00"),
        st.just(b"\x00" + raw),
        st.just(raw.decode().encode("utf-16-le")),
        st.just(b'"' + raw + b'"'),
        st.binary(max_size=64),
    )


@HOSTILE
@given(
    headers=st.lists(
        st.tuples(st.sampled_from(SECRET_HEADERS), near_misses(VAPI_SECRET) | st.just(VAPI_SECRET.encode())),
        max_size=3,
    ),
    noise=st.lists(
        st.tuples(st.sampled_from(["Authorization", "X-Signature", "X-Timestamp"]), st.binary(max_size=80)), max_size=3
    ),
)
async def test_only_exactly_one_correct_shared_secret_gets_through(
    headers: list[tuple[str, bytes]], noise: list[tuple[str, bytes]]
) -> None:
    content = json.dumps(PSTN).encode()
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=[*headers, *noise])
    correct = [value for _, value in headers if value.strip(b" \t") == VAPI_SECRET.encode()]
    event(f"status {response.status_code}")
    if len(headers) == 1 and correct:
        assert response.status_code == 200
    else:
        assert response.status_code == 401, (headers, noise)
        assert response.json() == {"error": "unauthorized"}
        assert VAPI_SECRET not in response.text


def hmac_headers(content: bytes, timestamp: str, key: str = HMAC_KEY) -> dict[str, str]:
    assert CONFIG.auth.hmac is not None
    signature = hmac_signature(CONFIG.auth.hmac, Secret(key), body=content, timestamp=timestamp)
    return {"X-Signature": signature, "X-Timestamp": timestamp}


@HOSTILE
@given(
    skew=st.one_of(
        st.floats(TOLERANCE + 1, 10**9), st.floats(-(10**9), -(TOLERANCE + 1)), st.integers(TOLERANCE + 1, 10**12)
    ),
    milliseconds=st.booleans(),
)
async def test_hmac_signatures_replayed_outside_the_window_are_refused(skew: float, milliseconds: bool) -> None:
    content = json.dumps(PSTN).encode()
    sent = time.time() - skew
    if sent <= 0:
        sent = 1.0
    timestamp = str(int(sent * 1000)) if milliseconds else f"{sent:.3f}"
    async with app() as client:
        replayed = await client.post("/vapi", content=content, headers=hmac_headers(content, timestamp))
        fresh = await client.post("/vapi", content=content, headers=hmac_headers(content, str(int(time.time()))))
    assert replayed.status_code == 401
    assert fresh.status_code == 200


@HOSTILE
@given(
    change=st.sampled_from(["other-body", "other-key", "truncated", "timestamp-moved", "repeated", "no-timestamp"]),
    cut=st.integers(1, 63),
)
async def test_hmac_near_misses_are_refused(change: str, cut: int) -> None:
    content = json.dumps(PSTN).encode()
    now = str(int(time.time()))
    headers: list[tuple[str, str]] = list(hmac_headers(content, now).items())
    if change == "other-body":
        headers = list(hmac_headers(content + b" ", now).items())
    elif change == "other-key":
        headers = list(hmac_headers(content, now, key=HMAC_KEY + "x").items())
    elif change == "truncated":
        headers = [("X-Signature", headers[0][1][:cut]), headers[1]]
    elif change == "timestamp-moved":
        headers = [headers[0], ("X-Timestamp", str(int(now) - 1))]
    elif change == "repeated":
        headers = [*headers, headers[0]]
    else:
        headers = [headers[0]]
    async with app() as client:
        response = await client.post("/vapi", content=content, headers=headers)
    assert response.status_code == 401


async def test_auth_failures_are_counted() -> None:
    async with app() as client:
        await client.post("/vapi", content=json.dumps(PSTN).encode(), headers={"X-Vapi-Secret": "wrong"})
        await client.post("/vapi", content=json.dumps(PSTN).encode(), headers=[*AUTH.items(), *AUTH.items()])
        metrics = (await client.get("/metrics")).text
    assert 'outcome="unauthorised",reason="mismatch"} 1.0' in metrics
    assert 'outcome="unauthorised",reason="duplicate"} 1.0' in metrics
