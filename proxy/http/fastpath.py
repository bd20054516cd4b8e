"""The warm assistant-request, answered in front of the Starlette router.

A warm call (the caller's line routed, the user's Nango connection already known) needs a few
microseconds of real work; the machinery around it (Starlette's request and response objects and its
ASGI hops, stdlib logging, `labels()`, datetimes and result objects) cost ten times that. This one ASGI
callable answers that call with the bytes the general path (proxy.app -> proxy.vapi.service) would send,
and hands everything else to the general path unchanged. tests/test_fastpath.py sends the suite's
request cases through both and compares the answers, status and headers byte for byte.

Under `serve` the protocol asks it first, without any ASGI cycle (`takes` on the head, `answer` on the
whole body: proxy/http/lane.py); a call it turned down there arrives marked (`LANE_DECLINED` in its
scope) and goes to the general path at once, not decided twice. As an ASGI callable it serves any other
ASGI server the same way.

What it skips, and why that is safe:
- Starlette (routing, Request, Response): it serves one path and one method, and writes the two ASGI
  messages Starlette's `Response` would write.
- `authenticate()`'s header index and result object: one pass over the raw headers for exactly one
  X-Vapi-Secret, compared in constant time with every configured shared secret (pre-encoded once per
  config snapshot). The body is read only after that check passes.
- `call_context` (a contextvar for the call id of other log lines): nothing here logs but the call
  line, which carries the call id itself, and nothing awaits but `receive()`.
- `resolve()`'s datetime, `InboundCall`, `Match` and `Resolution` objects: plain values instead.
- Rendering the assistant: each route's answer is prepared once per config snapshot with its static
  variables filled in (`calendar_answer_format`); a call only fills in the clock variables (formatted
  once per time zone and minute) and the JSON-escaped connection id.
- `labels()` and a prometheus-client call per count: the counters are added up in plain integers and
  handed over in one `inc(n)` before /metrics renders and at least once a second (`_Counts`); the call
  line is one `orjson.dumps` through `CallLog`, not a logging record.

Everything unusual takes the general path, with the body (if read) replayed to it: bearer or HMAC
authentication, a missing, wrong or repeated secret (failures are logged and counted in one place),
insecure mode, a declared or actual body over `server.max_body_bytes`, a client that disconnects, a
body that is not a JSON object with an assistant-request message, an unknown number (or, with tag
routing on, one only the YAML default routes: the line's Nango tags may claim it), a connection that
is not already known and healthy (cold, negative, unhealthy: Nango and the deadline live there), and
any exception. Only the `assistant-request` label is ever counted here.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import orjson
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.config import Config
from proxy.http.lane import LANE_DECLINED
from proxy.http.prepared import PreparedBudget, PreparedSnapshot
from proxy.logs import CallLog
from proxy.metrics import Metrics
from proxy.numbers import mask_number
from proxy.vapi.assistant import clock_fragments
from proxy.vapi.messages import call_keys

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
        body, replay = await _read_body(receive, self.served[path].snapshot_now().max_body)
        if replay is not None:
            await self.general(scope, replay, send)
            return
        answer = self.answer(body, started, path=path)
        if answer is None:
            await self.general(scope, _replayed([{"type": "http.request", "body": body}], receive), send)
            return
        headers = [(b"content-length", b"%d" % len(answer)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

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
        """Exactly one X-Vapi-Secret equal to a shared secret, and a declared length within the limit."""
        if not snapshot.secrets:
            return False
        presented: bytes | None = None
        seen = 0
        for name, value in headers:
            # ASGI servers lower-case header names; the lower() only matters for one that does not.
            if len(name) == 13 and name.lower() == SECRET_HEADER:
                presented = value
                seen += 1
            elif (
                len(name) == 14
                and name.lower() == CONTENT_LENGTH
                and (not value.isdigit() or int(value) > snapshot.max_body)
            ):
                return False
        if seen != 1 or presented is None:
            return False
        presented = presented.strip(b" \t")
        matched = False
        for secret in snapshot.secrets:
            # Every secret is compared, so the time taken does not say which one matched.
            matched |= hmac.compare_digest(secret, presented)
        return matched

    def _answer(self, served: _Served, snapshot: PreparedSnapshot, body: bytes, started: float) -> bytes | None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        message = payload.get("message") if type(payload) is dict else None
        if type(message) is not dict or message.get("type") != ASSISTANT_REQUEST:
            return None
        call_id, to, phone_number_id, caller = call_keys(message)
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
        prepared = snapshot.route(route)
        minute = int(service.wall_clock()) // 60
        values = dict(clock_fragments(prepared.timezone, minute))
        values[CONNECTION_KEY] = prepared.fixed_connection or orjson.dumps(connection_id)[1:-1]
        answer: bytes = prepared.format % values
        elapsed = self._clock() - started
        served.counts.count(event, elapsed)
        rule_text = prepared.rules.get(rule)
        if rule_text is None:
            rule_text = prepared.rules[rule] = f"{route.name} ({rule})"
        served.call_log.info(
            ASSISTANT_REQUEST,
            {
                "call_id": call_id,
                "to": self._mask(to),
                "from": self._mask(caller),
                "phone_number_id": phone_number_id,
                "rule": rule_text,
                "user": prepared.user_id,
                "connection": _SOURCES[event],
                "provider": "google",  # the directory's `warm` holds back every other calendar API
                "outcome": "assistant",
                "reason": "ok",
                "latency_ms": round(elapsed * 1000, 2),
            },
        )
        return answer


# The call line's "connection" field: where the directory says the id came from (proxy.nango.directory.Source).
_SOURCES = {"fixed": "fixed", "index_hit": "index", "hit": "cache"}


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, Receive | None]:
    """The whole body, or (b"", a receive that replays what was read) when the general path must take over:
    the body grew past `limit` (it answers 413) or the client went away (it answers 400)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            read = {"type": "http.request", "body": b"".join(chunks), "more_body": True}
            return b"", _replayed([read, message], receive)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return b"", _replayed([{"type": "http.request", "body": b"".join(chunks), "more_body": True}], receive)
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), None


def _replayed(messages: list[Message], receive: Receive) -> Receive:
    """`receive` as if nothing had been read: `messages` first, then the real thing."""

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay
