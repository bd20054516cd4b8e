"""The fast lane: a warm call answered by the protocol itself, without an ASGI cycle.

Every request uvicorn serves costs an asyncio task, a coroutine per ASGI layer, `receive()` and two
`send()` calls with their header checks: more than the whole of what the proxy does for a warm call.
When the app offers a `FastLane` (proxy.http.fastpath.FastPath, through the lifespan state), a request whose
head the lane takes (the Vapi path, POST, the right shared secret) is held until its body is complete,
and then answered in place with the bytes the ASGI path would have sent, uvicorn's default headers
(`date`, `server`) first, as its `send()` writes them. Anything the lane does not answer (a body over
LANE_BODY_BYTES, a call that is not warm, an `Expect: 100-continue`, an app other than the served one,
such as uvicorn's 503 under `limit_concurrency`, a server with uvicorn's access log on, which only
the ASGI cycle writes, a peer that is not reading its answers: writing paused) starts the ASGI app as
usual, with the body already read. tests/http/test_lane.py
compares the two over real sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from proxy.http.uvicorn_hooks import ASGIApp, Request, UvicornProtocol

__all__ = ["FAST_LANE", "LANE_DECLINED", "FastLane", "FastLaneProtocol"]

# The lifespan state key under which the app hands its `FastLane` to the protocol.
FAST_LANE = "proxy.fast_lane"
# The scope key of a request the lane's `FastLane` turned down (its head or its body): the same FastLane,
# called again as the ASGI app, passes it straight to the general path instead of deciding it twice.
LANE_DECLINED = "proxy.lane_declined"
# Bodies the lane waits for: a longer one goes to the app as it streams (uvicorn pauses reading at
# READ_HIGH_WATER, 64 KiB, and only the app's `receive()` resumes it).
LANE_BODY_BYTES = 32_768
OK_HEAD = b"HTTP/1.1 200 OK\r\n"
JSON_HEADERS = b"content-length: %d\r\ncontent-type: application/json\r\n"


class FastLane(Protocol):
    """What the app answers without an ASGI cycle: whether it may answer a request with this head, then
    the answer to its whole body, or None for the ASGI app to take the request after all."""

    def takes(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> bool: ...

    def answer(self, body: bytes, *, path: str) -> bytes | None: ...


class FastLaneProtocol(UvicornProtocol):
    """uvicorn's httptools protocol with the fast lane in front of the ASGI app."""

    lane_waits_for: tuple[Request, ASGIApp] | None = None

    def take_request(self, request: Request, app: ASGIApp) -> bool:
        lane: FastLane | None = self.lane_state().get(FAST_LANE)
        if lane is None or not self.serves_app(app) or self.expects_continue(request):
            return False
        if not lane.takes(*self.head(request)):
            self.mark(request, LANE_DECLINED)
            return False
        if self.body_pending(request):
            self.lane_waits_for = (request, app)  # answered by message_complete
            return True
        return self._answer_in_lane(request, lane)

    def body_received(self) -> None:
        super().body_received()
        waiting = self.lane_waits_for
        if waiting is not None and self.body_size(waiting[0]) > LANE_BODY_BYTES:
            self.lane_waits_for = None
            self.start_app(*waiting)

    def message_complete(self) -> None:
        super().message_complete()
        waiting = self.lane_waits_for
        if waiting is not None and self.is_current(waiting[0]):
            self.lane_waits_for = None
            request, app = waiting
            lane: FastLane | None = self.lane_state().get(FAST_LANE)
            if lane is None or not self._answer_in_lane(request, lane):
                self.start_app(request, app)

    def _lane_may_write(self) -> bool:
        """Whether an answer may be written now: not while the peer is not reading its answers (writing
        paused). Declined, the call goes to the ASGI cycle, which waits for the drain before it writes, and
        the requests behind it queue in uvicorn's pipeline, reading paused, bounded (proxy.http.connections)."""
        return not self.writing_paused()

    def _answer_in_lane(self, request: Request, lane: FastLane) -> bool:
        if self.gone(request):
            return True  # nobody to answer; the ASGI app would only see the disconnect
        if not self._lane_may_write():
            return False
        # The body read so far; the path: each agency tenant has its own.
        answer = lane.answer(self.body(request), path=self.head(request)[1])
        if answer is None:
            self.mark(request, LANE_DECLINED)
            return False
        # What RequestResponseCycle.send writes for http.response.start and one http.response.body.
        content = [OK_HEAD]
        for name, value in self.default_headers():
            content += (name, b": ", value, b"\r\n")
        content.append(JSON_HEADERS % len(answer))
        keep_alive = self.keeps_alive(request)
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", answer)
        self.transport.write(b"".join(content))
        self.answered(request)
        return True
