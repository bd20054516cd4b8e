"""uvicorn's internals, in one place: every private hook and attribute of uvicorn the proxy relies on.

The fast lane (proxy.http.lane) and the connection limits (proxy.http.connections) live inside uvicorn's
httptools protocol, which has no public extension API. `UvicornProtocol` is the one subclass of it: the
lane and the limits override its named hooks and read its state through its methods, never uvicorn's
names. The names relied on are listed below (HOOKS, PROTOCOL_STATE, CYCLE_STATE, FLOW_STATE);
tests/http/test_uvicorn_hooks.py names each one and asserts what is assumed of it on the installed uvicorn.

`missing()` says which of them the installed uvicorn lacks (uvicorn before 0.45 has no
`_start_asgi_task`: the lane would never be asked). `serve` then logs a warning naming them, and
/readyz shows the lane off (`lane_status()`); the pyproject floor keeps such a uvicorn out.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
from collections.abc import Iterable
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

__all__ = [
    "READ_HIGH_WATER",
    "ASGIApp",
    "Request",
    "ServerState",
    "UvicornProtocol",
    "lane_status",
    "missing",
    "run_workers",
]

Request = RequestResponseCycle  # one request and its answer, as uvicorn's protocol runs it
ASGIApp = ASGI3Application
# uvicorn pauses reading a request's body once this much of it is buffered, and only the app's receive()
# resumes it: a body the lane waits for must stay below it (the contract test checks LANE_BODY_BYTES).
READ_HIGH_WATER = HIGH_WATER_LIMIT

# Methods of HttpToolsProtocol called or overridden here: (name, what the proxy relies on).
HOOKS: dict[str, str] = {
    "_start_asgi_task": "called once per request, with its cycle and app, when it may start (uvicorn >= 0.45)",
    "_unset_keepalive_if_required": "cancels the keep-alive timer if armed",
    "timeout_keep_alive_handler": "the keep-alive timer's callback: closes the connection",
    "send_400_response": "writes a 400 with the message and closes",
    "on_message_begin": "parser callback: a request begins",
    "on_headers_complete": "parser callback: the head is parsed; creates the cycle and starts or queues it",
    "on_body": "parser callback: appends to cycle.body",
    "on_message_complete": "parser callback: sets cycle.more_body False",
    "on_response_complete": "called when an answer is complete: starts the next queued request or arms keep-alive",
}
# Attributes of a protocol instance read or written here.
PROTOCOL_STATE = (
    "app",
    "app_state",
    "server_state",
    "access_log",
    "connections",
    "cycle",
    "pipeline",
    "flow",
    "parser",
    "loop",
    "transport",
)
# Attributes of a RequestResponseCycle read or written here.
CYCLE_STATE = (
    "scope",
    "body",
    "more_body",
    "disconnected",
    "keep_alive",
    "response_started",
    "response_complete",
    "message_event",
    "waiting_for_100_continue",
)
FLOW_STATE = ("write_paused",)
LANE_HOOKS = ("_start_asgi_task",)


@functools.cache
def missing() -> tuple[str, ...]:
    """The hooks and attributes above that the installed uvicorn lacks."""
    absent = [name for name in HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
    flow = FlowControl(_NoTransport())
    absent += [f"FlowControl.{name}" for name in FLOW_STATE if not hasattr(flow, name)]
    return tuple(absent)


def lane_status() -> str:
    """What /readyz says of the lane: "on", or off and why."""
    absent = missing()
    if not absent:
        return "on"
    return f"off: uvicorn {_version()} lacks {', '.join(absent)}"


def _version() -> str:
    try:
        return importlib.metadata.version("uvicorn")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def run_workers(config: Any) -> None:
    """What uvicorn.run does for `--workers N` (uvicorn.run cannot take a Config object): its supervisor,
    on the socket the config binds."""
    Multiprocess(config, sockets=[config.bind_socket()]).run()


class _NoTransport(asyncio.Transport):
    """Enough of a transport for FlowControl's constructor."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class UvicornProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the hooks the lane and the limits need, by the proxy's names."""

    def __init__(
        self,
        config: Any,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)

    # -- hooks for subclasses: each runs inside the uvicorn callback named beside it --------------------

    def take_request(self, request: Request, app: ASGIApp) -> bool:
        """A request may start (`_start_asgi_task`): True if taken here (answered or held), else `app` runs."""
        return False

    def request_begins(self) -> None:
        """A request's first byte was parsed (after `on_message_begin`)."""

    def head_parsed(self) -> None:
        """A request's head is parsed (before `on_headers_complete` creates its cycle and starts or queues it);
        raising aborts the parse, which `feed` raises as an httptools.HttpParserError."""

    def body_received(self) -> None:
        """Body bytes were added to the current request (after `on_body`)."""

    def message_complete(self) -> None:
        """The current request's body is complete (after `on_message_complete`)."""

    def answer_complete(self) -> None:
        """An answer was completed (after `on_response_complete`, which starts the next queued request)."""

    def keepalive_expired(self) -> None:
        """The keep-alive timer fired (`timeout_keep_alive_handler`): by default the connection is closed."""
        super().timeout_keep_alive_handler()

    # -- uvicorn's callbacks, routed to the hooks above ----------------------------------------------

    def _start_asgi_task(self, cycle: Request, app: ASGIApp) -> None:
        if not self.take_request(cycle, app):
            super()._start_asgi_task(cycle, app)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begins()

    def on_headers_complete(self) -> None:
        self.head_parsed()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self.body_received()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.answer_complete()

    def timeout_keep_alive_handler(self) -> None:
        self.keepalive_expired()

    def start_app(self, request: Request, app: ASGIApp) -> None:
        """Start `app` on `request` (an asyncio task running the ASGI cycle)."""
        super()._start_asgi_task(request, app)

    # -- the connection ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Hand bytes to the parser (its callbacks run before this returns)."""
        self.parser.feed_data(data)

    def stop_keepalive_timer(self) -> None:
        self._unset_keepalive_if_required()

    def answer_malformed(self, message: str) -> None:
        self.send_400_response(message)

    def open_connections(self) -> set[Any]:
        """Every open connection of this server (uvicorn's own set, which its shutdown walks)."""
        connections: set[Any] = self.connections
        return connections

    def request_in_flight(self) -> bool:
        """A request has started and its answer is not complete."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def answer_started(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.response_started

    def has_request(self) -> bool:
        return self.cycle is not None

    def queued(self) -> int:
        """Requests parsed and waiting behind the one in flight (HTTP/1.1 pipelining)."""
        return len(self.pipeline)

    def writing_paused(self) -> bool:
        """The transport's buffer is full: the peer is not reading its answers."""
        paused: bool = self.flow.write_paused
        return paused

    def abandon_request(self) -> None:
        """The request in flight will not be answered: its app sees a disconnect, and what it sends is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def lane_state(self) -> dict[str, Any]:
        """The app's lifespan state, as uvicorn hands it to the protocol."""
        state: dict[str, Any] = self.app_state
        return state

    def serves_app(self, app: ASGIApp) -> bool:
        """`app` is the served app (not uvicorn's 503 under limit_concurrency), and no access log is written
        (only the ASGI cycle writes it)."""
        return app is self.app and not self.access_log

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = self.server_state.default_headers
        return headers

    # -- one request ---------------------------------------------------------------------------------

    @staticmethod
    def head(request: Request) -> tuple[str, str, Iterable[tuple[bytes, bytes]]]:
        scope = request.scope
        return scope["method"], scope["path"], scope["headers"]

    @staticmethod
    def body_pending(request: Request) -> bool:
        more: bool = request.more_body
        return more

    @staticmethod
    def body(request: Request) -> bytes:
        """The body read so far (uvicorn joins it into a bytearray)."""
        return bytes(request.body)

    @staticmethod
    def body_size(request: Request) -> int:
        return len(request.body)

    @staticmethod
    def expects_continue(request: Request) -> bool:
        waiting: bool = request.waiting_for_100_continue
        return waiting

    @staticmethod
    def gone(request: Request) -> bool:
        disconnected: bool = request.disconnected
        return disconnected

    @staticmethod
    def keeps_alive(request: Request) -> bool:
        keep: bool = request.keep_alive
        return keep

    @staticmethod
    def mark(request: Request, key: str) -> None:
        """Set `key` in the request's ASGI scope, for the app to read."""
        scope: dict[str, Any] = request.scope  # type: ignore[assignment]
        scope[key] = True

    def is_current(self, request: Request) -> bool:
        return request is self.cycle

    def answered(self, request: Request) -> None:
        """`request`'s answer was written whole, outside its ASGI cycle: uvicorn's bookkeeping as send() does it."""
        request.response_started = request.response_complete = True
        request.message_event.set()
        if not request.keep_alive:
            self.transport.close()
        self.on_response_complete()
