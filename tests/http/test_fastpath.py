"""proxy.http.fastpath against the general path: the same requests, the same bytes back.

Every request case the suite sends to /vapi (test_app, test_hostile, the auth fuzz's headers, the
fixtures, reloads) goes to two apps built from the same config, one with the fast path and one
without, in the same order and with the same clock; status, headers, body, metrics and call lines
must match. Each case is sent twice, so a cold user's second call is a warm one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.config import Config
from proxy.http.fastpath import FastPath
from proxy.runtime import Runtime
from proxy.secret import Secret
from proxy.vapi.auth import hmac_signature
from tests import test_app
from tests.contract import assert_assistant_request_response
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample
from tests.http import test_hostile
from tests.routing_files import routing_yaml

pytestmark = pytest.mark.anyio

NOW = 1_764_000_000.0
AUTH = {"X-Vapi-Secret": VAPI_SECRET}
Case = tuple[str, bytes, list[tuple[str, str]]]

# Values that JSON and %-formatting both treat specially, in every place a route's answer takes them from.
ODD = """\
auth:
  vapi_secrets: ["${VAPI_SERVER_SECRET}", second-secret]
nango: {base_url: "https://nango.test", secret_key: nango-secret-key-value, index_refresh_seconds: 0}
variables: {office: "100% \\"remote\\" \\u00e9\\u2028 %(today)s %s", user_name: ignored}
templates:
  default:
    firstMessage: "{{user_name}} at {{office}}: {{ today }}, {{now}} {{utc_offset}} {{missing}} {{ customer.number }}"
    model:
      provider: openai
      model: gpt-4o
      messages: [{role: system, content: "50% off; {{example_datetime}} in {{timezone}} for {{user_id}} %%"}]
users:
  - {id: "o'neil", name: "Ann \\"O'Neil\\" %(x)s \\U0001F600", timezone: Asia/Kolkata, connection_id: "c%d\\"1"}
  - {id: warm, name: Wu, timezone: Pacific/Chatham, variables: {office: "Chatham %"}}
  - {id: def, name: Default Dee, timezone: UTC, connection_id: conn-def}
routes:
  - {to: "+1 650 555 0100", user: "o'neil", name: "odd % route"}
  - {to: "+1 650 555 0111", user: warm}
  - {from: "+1 415 555 0123", to: "+1 650 555 0199", user: warm}
  - {default: true, user: def}
"""


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params.get("tags[end_user_id]")
    if user is None or user == "nango_user":  # a line's tags (tag routing), or test_app's user without one
        return httpx.Response(200, json={"connections": []})
    conn = {"connection_id": f"conn-{user}", "created": "2026-10-02T09:12:44.120Z", "errors": []}
    return httpx.Response(200, json={"connections": [conn | {"tags": {"end_user_id": user}}]})


def pstn(to: str | None = None, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(test_hostile.PSTN)
    if to is not None:
        body["message"]["phoneNumber"]["number"] = to
    body["message"].update(changes)
    return body


def encoded(body: object) -> bytes:
    return body if isinstance(body, bytes) else test_hostile.encode(body)


def parameters(test: Any) -> list[Any]:
    """The values a test is parametrized with, so this file follows the suite's cases as they grow."""
    (mark,) = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    return list(mark.args[1])


def request_cases(config: Config) -> list[Case]:
    numbers = ["+16505550100", "+16505550111", "+16505550199", "+16505550144", "+19995550000", "+1 650 555 0100"]
    numbers += ["sip:+16505550100@sip.example.com", "tel:+1-650-555-0111"]
    bodies: list[tuple[str, object]] = [(f"to {n}", pstn(n)) for n in numbers]
    bodies += [(f"fixture {name}", vapi_sample(name)) for name in ("assistant-request.pstn", "assistant-request.sip")]
    bodies += [("status-update", vapi_sample("status-update.webcall"))]
    bodies += [(f"test_app to_number {n}", test_app.to_number(n)) for n in numbers[:5]]
    bodies += [(f"no caller {n}", pstn(n, customer=None, call={"id": "c-1"})) for n in numbers[:3]]
    bodies += [("caller on a line", pstn("+16505550199")), ("caller elsewhere", pstn("+16505550188"))]
    bodies += [("percent call id", pstn("+16505550100", call={"id": '%(today)s "%s" \u2028'}))]
    bodies += [("long call id", pstn("+16505550100", call={"id": "x" * 201}))]
    for index, mutate in enumerate(parameters(test_app.test_odd_call_shapes_still_get_an_answer)):
        body = copy.deepcopy(vapi_sample("assistant-request.pstn"))
        mutate(body["message"])
        bodies.append((f"odd shape {index}", body))
    for param in parameters(test_app.test_malformed_bodies_get_a_4xx_with_a_reason):
        bodies.append((f"malformed {param[2]}", param[0]))
    for param in parameters(test_hostile.test_pathological_bodies):
        bodies.append((f"pathological {param.id}", param.values[0]))
    for message_type in parameters(test_app.test_notifications_are_acknowledged):
        body = vapi_sample("status-update.webcall")
        body["message"]["type"] = message_type
        bodies.append((f"notification {message_type}", body))
    bodies.append(("tool-calls", test_app.tool_calls_body("+16505550100", ("tc-1", "lookup_order", {}))))
    cases: list[Case] = [(name, encoded(body), list(AUTH.items())) for name, body in bodies]
    content = encoded(pstn("+16505550100"))
    for name, headers in {
        "no secret": [],
        "wrong secret": [("X-Vapi-Secret", "wrong")],
        "recased secret": [("X-Vapi-Secret", VAPI_SECRET.upper())],
        "secret twice": [*AUTH.items(), *AUTH.items()],
        "secret padded": [("x-vapi-secret", f" \t{VAPI_SECRET} ")],
        "secret upper-case name": [("X-VAPI-SECRET", VAPI_SECRET)],
        "second secret": [("X-Vapi-Secret", "second-secret")],
        "bearer": [("Authorization", f"Bearer {VAPI_SECRET}")],
        "bearer new-token": [("Authorization", "Bearer new-token")],
        "declared too long": [*AUTH.items(), ("Content-Length", str(config.server.max_body_bytes + 1))],
    }.items():
        cases.append((name, content, headers))
    if config.auth.hmac is not None:
        for key in (test_app.HMAC_KEY, test_hostile.HMAC_KEY):
            stamp = str(int(time.time()))
            signature = hmac_signature(config.auth.hmac, Secret(key), body=content, timestamp=stamp)
            cases.append((f"hmac {key}", content, [("X-Signature", signature), ("X-Timestamp", stamp)]))
    cases.append(("over the limit", b" " * (config.server.max_body_bytes + 1), list(AUTH.items())))
    return cases * 2 + node_cases()  # twice: a cold user's second call is warm


def node_cases() -> list[Case]:
    """test_hostile's exhaustive case: every node of the PSTN fixture, replaced by each JSON type."""
    cases: list[Case] = []
    for path in test_hostile.node_paths(test_hostile.PSTN)[1:]:
        for value in (None, True, 0, "", "x", [], {}, {"number": {}}):
            body: Any = copy.deepcopy(test_hostile.PSTN)
            parent = body
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = value
            cases.append((f"node {path}={value!r}", encoded(body), list(AUTH.items())))
    return cases


CONFIGS: dict[str, Callable[[], Config]] = {
    "test_app": lambda: config_from(test_app.CONFIG),
    "test_app signed": lambda: config_from(test_app.signed_config()),
    "test_app proxy mode": lambda: config_from(test_app.PROXY_MODE),
    "test_hostile": lambda: test_hostile.CONFIG,
    "routing_files": lambda: config_from(routing_yaml("A")),
    "odd values": lambda: config_from(ODD),
    # Calls only the YAML default routes may be claimed by a line's Nango tags: the general path asks.
    "tag routing": lambda: config_from(
        ODD.replace("index_refresh_seconds: 0}", "index_refresh_seconds: 0, tag_routing: {number_tag: vapi_number}}")
    ),
}


@contextlib.asynccontextmanager
async def app_pair(config: Config) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, list[Starlette]]]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(nango)) as upstream,
        contextlib.AsyncExitStack() as stack,
    ):
        apps = [create_app(config, http_client=upstream, fast_path=flag) for flag in (True, False)]
        clients = [await stack.enter_async_context(serving(app)) for app in apps]
        for app in apps:
            runtime: Runtime = app.state.runtime
            assert runtime.service is not None
            runtime.service.wall_clock = lambda: NOW
        yield clients[0], clients[1], apps


def counters(metrics: str) -> list[str]:
    """Every counter sample: histograms' times differ between the paths, their counts must not. (Sorted:
    the paths create the same children in a different order.)"""
    return sorted(line for line in metrics.splitlines() if re.match(r"vapi_proxy_\w+(_total|_count)[{ ]", line))


def call_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    lines = [dict(r.fields) for r in caplog.records if r.getMessage() == "assistant-request"]  # type: ignore[attr-defined]
    caplog.clear()
    for line in lines:
        line.pop("latency_ms")
    return lines


@pytest.mark.parametrize("name", sorted(CONFIGS))
async def test_both_paths_answer_every_request_case_byte_for_byte(
    name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    config = CONFIGS[name]()
    fast_answers = 0
    async with app_pair(config) as (fast, general, apps):
        fast_runtime: Runtime = apps[0].state.runtime
        assert fast_runtime.service is not None
        general_calls: list[object] = []
        real = fast_runtime.service.assistant_request

        async def counted(*args: Any) -> bytes:
            general_calls.append(args)
            return await real(*args)

        monkeypatch.setattr(fast_runtime.service, "assistant_request", counted)
        for case, content, headers in request_cases(config):
            before = len(general_calls)
            answers = [await client.post("/vapi", content=content, headers=headers) for client in (fast, general)]
            lines = call_lines(caplog)
            got, want = answers
            assert (got.status_code, got.headers.raw, got.content) == (want.status_code, want.headers.raw, want.content)
            assert lines[: len(lines) // 2] == lines[len(lines) // 2 :], case
            if len(general_calls) == before and got.content.startswith(b'{"assistant":'):
                fast_answers += 1  # answered without the general path's service
                if fast_answers <= 5:  # the rest are the same bytes as the general path's, checked there
                    assert_assistant_request_response(got.json())
        metrics = [counters((await client.get("/metrics")).text) for client in (fast, general)]
    assert metrics[0] == metrics[1]
    if config.auth.shared_secrets:
        assert fast_answers >= 5, "the fast path answered too few cases for the comparison to mean anything"
    else:
        assert fast_answers == 0  # bearer and HMAC take the general path


async def test_a_reload_is_answered_from_the_new_snapshot_on_both_paths() -> None:
    async with app_pair(config_from(routing_yaml("A"))) as (fast, general, apps):
        content = encoded(pstn("+16505550144"))
        before = [await client.post("/vapi", content=content, headers=AUTH) for client in (fast, general)]
        for app in apps:
            app.state.runtime.apply(config_from(routing_yaml("B")))
        after = [await client.post("/vapi", content=content, headers=AUTH) for client in (fast, general)]
    assert before[0].content == before[1].content and after[0].content == after[1].content
    assert b"[A] You reached Dave Diaz" in before[0].content and b"[B] You reached Dave Diaz" in after[0].content


class General:
    """A stand-in general path that records what reaches it and reads nothing."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/vapi", "headers": headers}


async def test_nothing_is_read_before_the_secret_is_checked() -> None:
    async with app_pair(config_from(test_app.CONFIG)) as (_, _, apps):
        general = General()
        fast_path = apps[0].fast_path
        assert isinstance(fast_path, FastPath)
        fast_path.general = general

        async def receive() -> dict[str, Any]:
            raise AssertionError("the body was read before authentication")

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError("the fast path answered an unauthenticated request")

        for headers in ([], [(b"x-vapi-secret", b"wrong")], [(b"x-vapi-secret", VAPI_SECRET.encode())] * 2):
            await fast_path(scope(headers), receive, send)
        assert general.calls == 3


async def test_a_streamed_body_over_the_limit_is_not_read_past_the_limit() -> None:
    async with app_pair(config_from(test_app.CONFIG)) as (_, _, apps):
        fast_path = apps[0].fast_path
        assert isinstance(fast_path, FastPath)
        limit = apps[0].state.runtime.config.server.max_body_bytes
        handed: list[dict[str, Any]] = []

        async def general(scope: Any, receive: Any, send: Any) -> None:
            handed.append(await receive())

        fast_path.general = general
        read = 0

        async def receive() -> dict[str, Any]:
            nonlocal read
            read += 1
            return {"type": "http.request", "body": b" " * 65_536, "more_body": True}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await fast_path(scope([(b"x-vapi-secret", VAPI_SECRET.encode())]), receive, send)
    assert read == limit // 65_536 + 1 and handed == []
    # Refused as the general path refuses it (the same body reader): 413 with the reason.
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"]) == {"error": f"body larger than {limit} bytes"}


@pytest.mark.parametrize(
    "state",
    ["index", "index unhealthy", "index unusable", "cache", "cache unhealthy", "cache unusable", "negative", "none"],
)
async def test_the_directorys_warm_answer_is_its_lookups_without_a_request(state: str) -> None:
    """What `warm` answers the fast path must be what `lookup` would, for every state a user can be in."""
    from proxy.metrics import Metrics
    from proxy.nango.client import Connection, NangoSettings
    from proxy.nango.directory import ConnectionDirectory

    directory = ConnectionDirectory(None, NangoSettings(), Metrics())
    where, _, flaw = state.partition(" ")
    conn = Connection("conn-1", "u1", "2026-10-02T09:12:44.120Z", healthy=flaw != "unhealthy")
    if where == "index":
        directory.index.add(conn)
    elif where == "cache":
        directory._cache["u1"] = conn
    elif where == "negative":
        directory._negative["u1"] = "negative"
    if flaw == "unusable":
        directory._unusable["conn-1"] = True
    warm = directory.warm("u1")
    lookup = await directory.lookup("u1", timeout=0)
    if lookup.source in ("index", "cache") and lookup.connection_id is not None:
        assert warm == (lookup.connection_id, {"index": "index_hit", "cache": "hit"}[lookup.source])
    else:
        assert warm is None
    assert (warm is not None) == (state in ("index", "cache"))


async def test_routes_of_one_shape_share_one_format_and_answer_as_the_general_path() -> None:
    """A routing file's users share their answer's format: one per shape, whatever the number of users, with
    each user's own id, name and route name filled in per call (escaped as the general path escapes them)."""
    # As written in YAML's double quotes: quotes, %-formats, an emoji, a backslash, a line separator.
    names = ['"Ann \\"A\\" %(x)s \U0001f600"', '"Bo\\\\b %% \\u2028"', "x" * 60, "Plain Name"]
    users = "\n".join(
        f'  - {{id: "u{i}-{"id" * (i % 3) * 20}", name: {names[i % 4]}, timezone: Europe/Paris, connection_id: "c{i}"}}'
        for i in range(40)
    )
    routes = "\n".join(
        f'  - {{to: "+1650555{1000 + i}", user: "u{i}-{"id" * (i % 3) * 20}", name: "r %{i}"}}' for i in range(40)
    )
    text = test_app.CONFIG.split("users:")[0] + f"users:\n{users}\nroutes:\n{routes}\n"
    config = config_from(text)
    async with app_pair(config) as (fast, general, apps):
        for i in range(40):
            content = encoded(pstn(f"+1650555{1000 + i}"))
            got, want = [await client.post("/vapi", content=content, headers=AUTH) for client in (fast, general)]
            assert (
                got.content == want.content and got.json()["assistant"]["credentials"][0]["authorizationId"] == f"c{i}"
            )
        fast_path = apps[0].fast_path
        assert isinstance(fast_path, FastPath)
        [served] = fast_path.served.values()
        assert served.snapshot is not None and len(served.snapshot.formats) == 1
