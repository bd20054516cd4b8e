"""The warm assistant-request, answered in front of the Starlette router.

A warm call (the caller's line routed, the user's Nango connection already known) needs a few
microseconds of real work; the machinery around it (Starlette's request and response objects and its
ASGI hops, stdlib logging, `labels()`, datetimes and result objects) cost ten times that. This one ASGI
callable answers that call with the bytes the general path (proxy.app -> proxy.vapi.service) would send,
and hands everything else to the general path unchanged. tests/http/test_fastpath.py sends the suite's
request cases through both and compares the answers, status and headers byte for byte.

Under `serve` the protocol asks it first, without any ASGI cycle (`takes` on the head, `answer` on the
whole body: proxy/http/lane.py); a call it turned down there arrives marked (`LANE_DECLINED` in its
scope) and goes to the general path at once, not decided twice. As an ASGI callable it serves any other
ASGI server the same way.

It shares with the general path everything that decides: the shared-secret verdict
(proxy.vapi.auth.shared_secret_verdict), the body reader (proxy.http.bodies), the message parser
(proxy.vapi.messages.parse_message) and the call line (proxy.vapi.messages.call_line). What it skips, and
why that is safe:
- Starlette (routing, Request, Response): it serves one path and one method, and writes the two ASGI
  messages Starlette's `Response` would write (`send_json`).
- `authenticate()`'s header index and result object: one pass over the raw headers collects the
  X-Vapi-Secret values and checks the declared length. The body is read only after that check passes.
- `call_context` (a contextvar for the call id of other log lines): nothing here logs but the call
  line, which carries the call id itself, and nothing awaits but `receive()`.
- `resolve()`'s datetime, `InboundCall`, `Match` and `Resolution` objects: plain values instead.
- Rendering the assistant: answers are prepared once per config snapshot as formats shared by every
  route of the same shape (proxy/http/prepared.py); a call fills in the route's own values (user id and
  name, route name), the clock variables (formatted once per time zone and minute) and the JSON-escaped
  connection id.
- `labels()` and a prometheus-client call per count: the counters are added up in plain integers and
  handed over in one `inc(n)` before /metrics renders and at least once a second (`_Counts`); the call
  line is one `orjson.dumps` through `CallLog`, not a logging record.

A body that grows past `server.max_body_bytes` or ends in a disconnect is refused here as the general
path refuses it (413 or 400, the same reader's reason). Everything else unusual takes the general path,
with the body (if read) replayed to it: bearer or HMAC authentication, a missing, wrong or repeated
secret (failures are logged and counted in one place), insecure mode, a declared length over the limit,
a body that is not a JSON object with an assistant-request message, an unknown number (or, with tag
routing on, one only the YAML default routes: the line's Nango tags may claim it), a connection that
is not already known and healthy (cold, negative, unhealthy: Nango and the deadline live there), and
any exception. Only the `assistant-request` label is ever counted here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import orjson
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.config import Config
from proxy.http.bodies import declared_too_large, read_body, replayed, send_json
from proxy.http.lane import LANE_DECLINED
from proxy.http.prepared import PreparedBudget, PreparedSnapshot
from proxy.logs import CallLog
from proxy.metrics import Metrics
from proxy.numbers import mask_number
from proxy.vapi.assistant import clock_fragments, route_fills
from proxy.vapi.auth import shared_secret_verdict
from proxy.vapi.messages import BadRequest, call_keys, call_line, parse_message

if TYPE_CHECKING:
    from proxy.vapi.service import CallService

__all__ = ["FastPath", "FastPathApp", "Runtime"]


class Runtime(Protocol):
    """What the fast path reads of the app's runtime (`proxy.runtime.Runtime`), read afresh on each call."""

    config: Config
    metrics: Metrics
    service: CallService | None


ASSISTANT_REQUEST = "assistant-request"
SECRET_HEADER = b"x-vapi-secret"
CONTENT_LENGTH = b"content-length"
CONNECTION_KEY = b"__connection_id__"
MASKED_NUMBERS = 4096
FLUSH_SECONDS = 1.0

logger = logging.getLogger(__name__)


class _Counts:
    """What fast answers add to the counters, kept as plain integers and handed to prometheus-client in one
    `inc(n)` per counter: before /metrics renders, at least every FLUSH_SECONDS (for the other workers'
    scrapes), and when the app stops. The children are bound on their first count, as the general path's
    are, so no series appears that the general path would not show. The latency histogram is observed
    per call."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._answered = 0
        self._events: dict[str, int] = {}
        self._scheduled = False
        metrics.before_render.append(self.flush)

    def count(self, event: str, elapsed: float) -> None:
        self._metrics.assistant_request_latency.observe(elapsed)
        self._answered += 1
        self._events[event] = self._events.get(event, 0) + 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        answered, self._answered = self._answered, 0
        events, self._events = self._events, {}
        if answered:
            self._metrics.server_messages.labels(ASSISTANT_REQUEST).inc(answered)
            self._metrics.assistant_requests.labels("assistant", "ok").inc(answered)
        for event, count in events.items():
            self._metrics.cache_events.labels(event).inc(count)


class FastPathApp(Starlette):
    """Starlette with a `FastPath` in front of its router, once `fast_path` is set."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def add_fast_path(self, runtime: Runtime, call_log: CallLog, *, path: str) -> None:
        """Answer warm calls on `path` from `runtime`; called once per agency tenant, each on its own path."""
        if self.fast_path is None:
            self.fast_path = FastPath(None, functools.partial(Starlette.__call__, self), call_log, path=path)
        self.fast_path.serve(path, runtime, call_log)


class _Served:
    """What the fast path keeps for one path's runtime (one agency tenant): the current snapshot's
    derivations, the counts not yet handed to its metrics, and its call log."""

    __slots__ = ("budget", "call_log", "counts", "runtime", "snapshot")

    def __init__(self, runtime: Runtime, call_log: CallLog, budget: PreparedBudget) -> None:
        self.runtime = runtime
        self.call_log = call_log
        self.budget = budget
        self.counts = _Counts(runtime.metrics)
        self.snapshot: PreparedSnapshot | None = None

    def snapshot_now(self) -> PreparedSnapshot:
        config = self.runtime.config
        snapshot = self.snapshot
        if snapshot is None or snapshot.config is not config:
            if snapshot is not None:
                snapshot.drop()  # a reloaded config: the old snapshot's answers leave the budget
            snapshot = self.snapshot = PreparedSnapshot(config, self.budget)
        return snapshot


class FastPath:
    """ASGI: answers warm assistant-requests on the paths it serves (`path` for `runtime`, and any added
    by `serve`); passes every other request to `general`."""

    def __init__(self, runtime: Runtime | None, general: ASGIApp, call_log: CallLog, *, path: str) -> None:
        self.general = general
        self.path = path
        self.served: dict[str, _Served] = {}
        self.budget = PreparedBudget()
        self.budget.drop = self._drop_prepared
        if runtime is not None:
            self.serve(path, runtime, call_log)
        self._clock: Callable[[], float] = time.perf_counter
        # Called lines repeat call after call; masking one is a regex and a format.
        self._mask = functools.lru_cache(maxsize=MASKED_NUMBERS)(mask_number)

    def serve(self, path: str, runtime: Runtime, call_log: CallLog) -> None:
        self.served[path] = _Served(runtime, call_log, self.budget)

    def stop_serving(self, path: str) -> None:
        served = self.served.pop(path, None)
        if served is not None:
            served.counts.flush()
            if served.snapshot is not None:
                served.snapshot.drop()

    def _drop_prepared(self) -> None:
        for served in self.served.values():
            if served.snapshot is not None:
                served.snapshot.drop()
        self.budget.used = 0  # what dropped snapshots still counted, too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or LANE_DECLINED in scope  # the lane asked this FastPath already: its answer was no
            or not self.takes(scope["method"], scope["path"], scope["headers"])
        ):
            await self.general(scope, receive, send)
            return
        started = self._clock()
        path = scope["path"]
        try:
            body = await read_body(receive, self.served[path].snapshot_now().max_body)
        except BadRequest as exc:  # authenticated: refused as the general path refuses it, connection kept
            await send_json(send, exc.status_code, {"error": exc.reason})
            return
        answer = self.answer(body, started, path=path)
        if answer is None:
            await self.general(scope, replayed([{"type": "http.request", "body": body}], receive), send)
            return
        await send_json(send, 200, answer)

    def takes(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether a request with this head may be a warm call: a served path, POST, and its shared secret."""
        served = self.served.get(path)
        if served is None or method != "POST":
            return False
        return served.runtime.service is not None and self._authenticated(headers, served.snapshot_now())

    def answer(self, body: bytes, started: float | None = None, *, path: str | None = None) -> bytes | None:
        """The answer to a whole body whose head `takes` accepted; None hands the call to the general path."""
        served = self.served.get(self.path if path is None else path)
        if served is None:
            return None  # its tenant stopped serving between head and body: the general path says so
        snapshot = served.snapshot_now()
        if len(body) > snapshot.max_body:
            return None
        try:
            return self._answer(served, snapshot, body, self._clock() if started is None else started)
        except Exception:  # a bug here must cost the call nothing: the general path answers it
            logger.exception("fast path failed; the general path answers")
            return None

    def _authenticated(self, headers: Iterable[tuple[bytes, bytes]], snapshot: PreparedSnapshot) -> bool:
        """The shared secret's verdict (proxy.vapi.auth, as the general path decides it) on the X-Vapi-Secret
        values, collected in one pass over the raw headers, and a declared length within the limit."""
        if not snapshot.secrets:
            return False
        presented: list[bytes] = []
        for name, value in headers:
            # ASGI servers lower-case header names; the lower() only matters for one that does not.
            if len(name) == 13 and name.lower() == SECRET_HEADER:
                presented.append(value)
            elif len(name) == 14 and name.lower() == CONTENT_LENGTH and declared_too_large(value, snapshot.max_body):
                return False
        return shared_secret_verdict(snapshot.secrets, presented) == "ok"

    def _answer(self, served: _Served, snapshot: PreparedSnapshot, body: bytes, started: float) -> bytes | None:
        try:
            message = parse_message(body)
        except BadRequest:
            return None  # the general path refuses it with the reason
        if message["type"] != ASSISTANT_REQUEST:
            return None
        keys = call_keys(message)
        _, to, phone_number_id, caller = keys
        found = snapshot.config.routing.find(to, phone_number_id, caller)
        if found is None:
            return None
        route, rule = found
        service = served.runtime.service
        assert service is not None
        if rule == "default" and service.directory.lines is not None:
            return None  # tag routing: the line's Nango tags may route it before the YAML default
        connection_id = route.user.connection_id
        event = "fixed"
        # A fixed id is the default integration's: a Microsoft one is served in proxy mode by the general path.
        nango = snapshot.config.nango
        if connection_id is not None and nango.integrations and nango.kind_of(nango.integration_id) != "google":
            return None
        if connection_id is None:
            warm = service.directory.warm(route.user.nango_user_id)
            if warm is None:
                return None
            connection_id, event = warm
        answer_format = snapshot.format_for(route)
        minute = int(service.wall_clock()) // 60
        values = dict(clock_fragments(route.user.timezone, minute))
        values.update(route_fills(route))
        values[CONNECTION_KEY] = orjson.dumps(connection_id)[1:-1]
        answer: bytes = answer_format % values
        elapsed = self._clock() - started
        served.counts.count(event, elapsed)
        line = call_line(
            keys,
            rule=f"{route.name} ({rule})",
            user=route.user.id,
            connection=_SOURCES[event],
            provider="google",  # the directory's `warm` holds back every other calendar API
            outcome="assistant",
            reason="ok",
            elapsed=elapsed,
            mask=self._mask,
        )
        served.call_log.info(ASSISTANT_REQUEST, line)
        return answer


# The call line's "connection" field: where the directory says the id came from (proxy.nango.directory.Source).
_SOURCES = {"fixed": "fixed", "index_hit": "index", "hit": "cache"}
