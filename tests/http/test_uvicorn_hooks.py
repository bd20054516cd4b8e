"""The contract with uvicorn's internals (proxy/http/uvicorn_hooks.py): every private hook and attribute the
proxy relies on, named, and what is assumed of it checked on the installed uvicorn. A uvicorn that breaks
one fails here, not in production; one that lacks them starts with a warning and the lane off."""

from __future__ import annotations

import asyncio
import inspect
import logging
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.app import create_app
from proxy.http import uvicorn_hooks
from proxy.http.lane import LANE_BODY_BYTES
from proxy.http.uvicorn_hooks import (
    CYCLE_STATE,
    FLOW_STATE,
    HOOKS,
    PROTOCOL_STATE,
    READ_HIGH_WATER,
    ServerState,
    UvicornProtocol,
)
from proxy.server import uvicorn_config
from tests.helpers import config_from, serving
from tests.http.test_connections import StalledTransport, config_yaml

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
# Everything the proxy names of uvicorn's private API: a new use must be added here and to the module.
NAMED = {
    "HttpToolsProtocol._start_asgi_task",
    "HttpToolsProtocol._unset_keepalive_if_required",
    "HttpToolsProtocol.timeout_keep_alive_handler",
    "HttpToolsProtocol.send_400_response",
    "HttpToolsProtocol.on_message_begin",
    "HttpToolsProtocol.on_headers_complete",
    "HttpToolsProtocol.on_body",
    "HttpToolsProtocol.on_message_complete",
    "HttpToolsProtocol.on_response_complete",
    "protocol.app",
    "protocol.app_state",
    "protocol.server_state",
    "protocol.access_log",
    "protocol.connections",
    "protocol.cycle",
    "protocol.pipeline",
    "protocol.flow",
    "protocol.parser",
    "protocol.loop",
    "protocol.transport",
    "cycle.scope",
    "cycle.body",
    "cycle.more_body",
    "cycle.disconnected",
    "cycle.keep_alive",
    "cycle.response_started",
    "cycle.response_complete",
    "cycle.message_event",
    "cycle.waiting_for_100_continue",
    "flow.write_paused",
    "flow_control.HIGH_WATER_LIMIT",
}


def test_the_module_names_exactly_the_hooks_and_attributes_listed_here() -> None:
    named = {f"HttpToolsProtocol.{name}" for name in HOOKS}
    named |= {f"protocol.{name}" for name in PROTOCOL_STATE}
    named |= {f"cycle.{name}" for name in CYCLE_STATE}
    named |= {f"flow.{name}" for name in FLOW_STATE}
    named.add("flow_control.HIGH_WATER_LIMIT")
    assert named == NAMED


def test_no_other_module_imports_uvicorns_internals() -> None:
    private = ("uvicorn._types", "uvicorn.protocols", "uvicorn.server import ServerState", "uvicorn.supervisors")
    users = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "proxy").rglob("*.py")
        if any(name in path.read_text() for name in private)
    )
    assert users == ["proxy/http/uvicorn_hooks.py"]


def test_every_hook_is_a_method_with_the_signature_relied_on() -> None:
    for name in HOOKS:
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    assert list(inspect.signature(HttpToolsProtocol._start_asgi_task).parameters) == ["self", "cycle", "app"]
    assert list(inspect.signature(HttpToolsProtocol.on_body).parameters) == ["self", "body"]
    assert list(inspect.signature(HttpToolsProtocol.send_400_response).parameters) == ["self", "msg"]
    assert uvicorn_hooks.missing() == ()
    assert uvicorn_hooks.lane_status() == "on"


async def test_every_attribute_exists_and_behaves_as_relied_on() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    protocol = UvicornProtocol(config, state, {"key": 1}, asyncio.get_running_loop())
    started: list[RequestResponseCycle] = []
    protocol.take_request = lambda request, app: started.append(request) is not None  # type: ignore[method-assign]
    transport = StalledTransport()
    protocol.connection_made(transport)
    for name in PROTOCOL_STATE:
        assert hasattr(protocol, name), name
    assert protocol.connections is state.connections and protocol in protocol.open_connections()
    assert protocol.lane_state() == {"key": 1}
    assert protocol.serves_app(protocol.app) is not protocol.access_log and not protocol.has_request()
    # The head and the first body bytes: _start_asgi_task is called with the cycle while the body is pending.
    protocol.feed(b"POST /vapi HTTP/1.1\r\nHost: proxy\r\nX-Vapi-Secret: s\r\nContent-Length: 4\r\n\r\nab")
    (request,) = started
    for name in CYCLE_STATE:
        assert hasattr(request, name), name
    assert protocol.head(request) == (
        "POST",
        "/vapi",
        [(b"host", b"proxy"), (b"x-vapi-secret", b"s"), (b"content-length", b"4")],
    )
    assert protocol.is_current(request) and protocol.request_in_flight() and not protocol.answer_started()
    assert protocol.body_pending(request) and protocol.body(request) == b"ab"
    protocol.feed(b"cd")
    assert not protocol.body_pending(request) and protocol.body(request) == b"abcd"
    assert protocol.keeps_alive(request) and not protocol.gone(request) and not protocol.expects_continue(request)
    # A pipelined request waits in uvicorn's queue while the first is in flight.
    protocol.feed(b"GET /livez HTTP/1.1\r\nHost: proxy\r\n\r\n")
    assert protocol.queued() == 1 and len(started) == 1
    # An answer written outside the cycle, then uvicorn's bookkeeping: the queued request starts.
    protocol.answered(request)
    assert request.response_complete and request.message_event.is_set() and protocol.queued() == 0
    assert len(started) == 2
    # Flow control: pause_writing sets what the lane reads.
    assert isinstance(protocol.flow, FlowControl)
    for name in FLOW_STATE:
        assert hasattr(protocol.flow, name), name
    protocol.pause_writing()
    assert protocol.writing_paused()
    protocol.resume_writing()
    assert not protocol.writing_paused()
    protocol.abandon_request()
    assert started[1].disconnected
    protocol.connection_lost(None)


def test_the_lane_waits_only_for_bodies_uvicorn_keeps_reading() -> None:
    # uvicorn stops reading a body past its high-water mark until the app's receive() asks for more: a lane
    # waiting for a longer body would wait for ever.
    assert LANE_BODY_BYTES < READ_HIGH_WATER


async def test_a_uvicorn_without_the_lanes_hook_is_named_at_start_and_readyz_shows_the_lane_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_from(config_yaml())
    with monkeypatch.context() as patched:
        patched.delattr(HttpToolsProtocol, "_start_asgi_task")  # as on uvicorn 0.35 to 0.44
        uvicorn_hooks.missing.cache_clear()
        with caplog.at_level(logging.WARNING):
            uvicorn_config(config, object())
        (line,) = [record for record in caplog.records if record.getMessage() == "uvicorn lacks hooks the lane needs"]
        assert "_start_asgi_task" in str(line.__dict__["fields"])
        async with serving(create_app(config)) as client:
            readyz = (await client.get("/readyz")).json()
        assert readyz["lane"].startswith("off: uvicorn ") and readyz["lane"].endswith("lacks _start_asgi_task")
    uvicorn_hooks.missing.cache_clear()
    async with serving(create_app(config)) as client:
        assert (await client.get("/readyz")).json()["lane"] == "on"
