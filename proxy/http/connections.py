"""Per-connection limits on uvicorn's httptools protocol: header size and time, body time, connection count.

uvicorn's httptools protocol (the fast parser, kept for speed) accepts a request head of any size at any
speed and holds a connection that never sends a byte forever. One peer could then exhaust memory (a 64 MB
header), the event loop (httptools joins a header's pieces by concatenation, quadratic in its size) or file
descriptors (idle sockets). `LimitedHttpToolsProtocol` bounds each of those and keeps the parser:

- the request line plus headers may be at most `max_header_bytes`; a longer head gets 431 and the
  connection is closed while it is still arriving, before the parser buffers more than the bound (a
  pipelined head that starts in the same read as the previous request ends may reach twice the bound);
- at most MAX_PIPELINED requests may wait behind the one being answered; a deeper pipeline is cut off;
- malformed requests get uvicorn's 400, but are logged only in the throttled summary, not one line each;
- the head must arrive within `header_timeout` of the connection opening (or, on a kept-alive connection,
  of its first byte) and the body within `body_timeout` of the head; else 408 and close;
- at most `max_connections` connections are open at once, at most `max_connections_per_address` of them
  from one peer (proxy.http.slots); at the cap a new one replaces the oldest connection that is owed
  nothing (idle, half-sent, kept alive, or answered while an unneeded body still arrives), and if there is
  none it is answered 503 and closed at once, so its descriptor is released before any byte is read;
- no keep-alive timer runs while a request is in flight: it is stopped when a request begins;
- a peer that stops reading its answers (the transport's write buffer stays full) is cut off after
  `send_timeout`;
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn

from proxy.http.coalescing import CoalescingTransport
from proxy.http.lane import FastLaneProtocol
from proxy.http.peers import PeerKeys
from proxy.http.slots import HEADER_TOO_LARGE, TIMED_OUT, TOO_MANY_CONNECTIONS, TOO_MANY_FROM_PEER, RefusalLog, Slots
from proxy.http.uvicorn_hooks import ServerState

__all__ = ["ConnectionLimits", "LimitedConfig", "LimitedHttpToolsProtocol", "connection_cap"]

# Descriptors kept free for everything but inbound connections: the shared httpx pool (at most 100
# connections to Nango and Google), the listener, the event loop's own (epoll, self-pipe), stdio, and
# a config file being read.
FD_RESERVE = 128
# The lifespan state key under which the app hands its refusal counter (a prometheus Counter by kind).
CONNECTION_REFUSALS = "proxy.connection_refusals"
# Requests a client may send ahead of the answers (HTTP/1.1 pipelining); Vapi and browsers send none.
MAX_PIPELINED = 16


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 16_384
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    max_connections: int = 1000
    send_timeout: float = 10.0
    max_connections_per_address: int = 250
    # Peers not bounded per address: the load balancers of `server.forwarded_allow_ips` (proxy.http.peers).
    trusted_peers: tuple[str, ...] = ()


class PipelineTooDeep(Exception):
    pass


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config plus the limits, so that worker processes (which get the config pickled) get them too."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        # No WebSocket upgrades: the proxy serves none, and an upgraded connection would leave these limits.
        super().__init__(app, http=LimitedHttpToolsProtocol, ws="none", **kwargs)
        self.connection_limits = limits
        self.refusals = RefusalLog()
        self.slots: Slots[LimitedHttpToolsProtocol] = Slots(
            PeerKeys(limits.trusted_peers), limits.max_connections_per_address
        )


class LimitedHttpToolsProtocol(FastLaneProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "connection_limits", None)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()
        refusals = getattr(config, "refusals", None)
        self.refusals = refusals if isinstance(refusals, RefusalLog) else RefusalLog()
        slots = getattr(config, "slots", None)
        self.slots: Slots[LimitedHttpToolsProtocol] = (
            slots if isinstance(slots, Slots) else Slots(PeerKeys(), self.limits.max_connections_per_address)
        )
        self.refused = False
        self.pipeline_too_deep = False
        self.completed = 0
        self.reading_head = True
        self.head_bytes = 0
        self.head_started_at = 0.0
        self.head_done_at = 0.0
        self.coalescing: CoalescingTransport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        key = self.slots.keys.key(peer[0] if isinstance(peer, tuple) else None)
        if self.slots.peer_full(key):
            refusal = None if self._evict(self.slots.victim(key, of_peer=True)) else TOO_MANY_FROM_PEER
        elif len(self.open_connections()) >= self.limits.max_connections:
            refusal = None if self._evict(self.slots.victim()) else TOO_MANY_CONNECTIONS
        else:
            refusal = None
        if refusal is not None:
            # Refused before anything is parsed or buffered: the descriptor is free again at once.
            self.refused = True
            self.transport = transport
            transport.write(refusal)
            transport.close()
            self._note("too_many_connections" if refusal is TOO_MANY_CONNECTIONS else "too_many_from_address")
            return
        # Every write of the connection joins the others of its event-loop turn: one send(2) per answer.
        self.coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(self.coalescing)
        self.slots.take(self, key)
        self.head_started_at = self.loop.time()
        self.deadline = self.loop.call_later(self.limits.header_timeout, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.transport, CoalescingTransport):
            self.transport.discard()
        self._disarm()
        if self.send_deadline is not None:
            self.send_deadline.cancel()
            self.send_deadline = None
        self.slots.release(self)
        super().connection_lost(exc)

    def eof_received(self) -> None:
        # The peer has ended its side: the event loop closes the transport when this returns, past the
        # CoalescingTransport, so what this turn wrote (an answer to the request that came with the EOF)
        # must leave first; uvicorn's own eof_received (nothing kept open) decides the rest.
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        super().eof_received()

    def _evict(self, victim: LimitedHttpToolsProtocol | None) -> bool:
        """A new connection replaces `victim`, the one that has been owed nothing longest (as nginx reuses
        keep-alive connections when it runs out); without one, the new connection is refused."""
        if victim is None:
            return False
        self.slots.release(victim)
        self.open_connections().discard(victim)
        victim._disarm()
        victim.transport.abort()  # owed nothing: not even the flush of a buffered answer
        self._note("evicted")
        return True

    def data_received(self, data: bytes) -> None:
        if self.refused or self.transport.is_closing():
            return
        if not self.reading_head:
            self._feed(data)
            return
        room = self.limits.max_header_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            self._feed(data)
            return
        # More than the head may still take: feed what fits. The head may end inside it; then the rest is
        # body, or (pipelining) the next request, whose head is counted afresh from there.
        completed = self.completed
        self.head_bytes += room
        if room > 0:
            self._feed(data[:room])
        if self.transport.is_closing():
            return
        if self.completed != completed:
            self.data_received(data[room:])  # at most one level per max_header_bytes of this read
        elif self.reading_head:
            self._refuse(HEADER_TOO_LARGE, "header_too_large")
        else:
            self._feed(data[room:])

    def _feed(self, data: bytes) -> None:
        # uvicorn's data_received, with its per-request warnings replaced by the throttled RefusalLog: a
        # flood of malformed requests must not become a flood of log lines.
        self.stop_keepalive_timer()
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here (ws="none"): the request was answered as plain HTTP
        except httptools.HttpParserError:
            if self.pipeline_too_deep:
                self._refuse(b"", "pipeline_too_deep")
            elif not self.transport.is_closing():
                self._note("invalid_request")
                self.answer_malformed("Invalid HTTP request received.")

    # Parser callbacks
    def request_begins(self) -> None:
        # A request begins: the keep-alive timer armed by the answer before it (the lane answers inside this
        # same read) must not cut it while it is in flight.
        self.stop_keepalive_timer()
        super().request_begins()
        # The first request's head is timed from connection_made, so a peer that never sends is closed too.
        # Only timestamps here: the one timer per connection checks them when it fires (no timer per request).
        if self.completed:
            self.head_started_at = self.loop.time()

    def head_parsed(self) -> None:
        if self.queued() >= MAX_PIPELINED:
            # Each queued request holds its scope and headers until those before it are answered, and
            # one read can carry thousands of them: a client that pipelines this deep is cut off.
            self.pipeline_too_deep = True
            raise PipelineTooDeep
        self.reading_head = False
        self.slots.busy(self)
        self.head_done_at = self.loop.time()
        super().head_parsed()

    def message_complete(self) -> None:
        self.completed += 1
        self.reading_head = True
        self.head_bytes = 0
        super().message_complete()
        self._mark_waiting()

    def answer_complete(self) -> None:
        super().answer_complete()
        self._mark_waiting()

    def _mark_waiting(self) -> None:
        # Evictable once the request is answered, unless a pipelined one is queued: the rest of a body the
        # app did not read (a 404 answers at once) is owed nothing, and reading_head may still be False.
        if not self.request_in_flight() and not self.queued() and not self.transport.is_closing():
            self.slots.evictable_now(self)

    def keepalive_expired(self) -> None:
        # Only between requests: never while one is in flight (its own answer re-arms the timer).
        if not self.request_in_flight() and not self.queued():
            super().keepalive_expired()

    def _note(self, kind: str) -> None:
        self.refusals.note(kind)
        counter = self.lane_state().get(CONNECTION_REFUSALS)
        if counter is not None:
            counter.labels(kind).inc()

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _check_deadlines(self) -> None:
        """The connection's one timer: refuse a head or body that is late, else sleep until the next deadline."""
        self.deadline = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if not self.reading_head:
            due = self.head_done_at + self.limits.body_timeout
            if now >= due:
                # The app may have answered already (e.g. 401 before reading): then only the close is left to do.
                self._refuse(b"" if self.answer_started() else TIMED_OUT, "body_timeout")
                return
        elif self.head_bytes or not self.completed:
            due = self.head_started_at + self.limits.header_timeout
            if now >= due:
                if self.head_bytes == 0 and not self.has_request():
                    self._refuse(b"", "idle")  # opened and never used: nobody is waiting for an answer
                else:
                    # A head arriving behind a request still being answered (pipelining) gets no 408 in between.
                    self._refuse(b"" if self.request_in_flight() else TIMED_OUT, "header_timeout")
                return
        else:
            due = now + self.limits.header_timeout  # between requests: uvicorn's keep-alive timeout applies
        self.deadline = self.loop.call_at(due, self._check_deadlines)

    def _refuse(self, response: bytes, kind: str) -> None:
        self.abandon_request()  # the app (if it is still running) sees a disconnect; what it sends is dropped
        if response:
            self.transport.write(response)
        self.transport.close()
        self._note(kind)

    def _lane_may_write(self) -> bool:
        # The lane answers a whole request within the read that completes it, so uvicorn's pipeline never
        # counts it: its answers not yet sent (this turn's writes) are bounded as a pipeline is. Past
        # MAX_PIPELINED a request takes the ASGI cycle, and those behind it queue (reading paused) or are cut
        # off, so one read loop cannot answer thousands of pipelined calls while other connections wait.
        coalescing = self.coalescing
        return coalescing is not None and coalescing.turn_writes < MAX_PIPELINED and super()._lane_may_write()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send_deadline is None:
            self.send_deadline = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.send_deadline is not None:
            self.send_deadline.cancel()
            self.send_deadline = None

    def _send_timed_out(self) -> None:
        # A peer that stops reading holds its request (and whatever is buffered for it) forever, beyond the
        # reach of the other limits: the answers it does not read within send_timeout are dropped, and the
        # connection with them (abort: close() would wait for a flush that never comes).
        self.send_deadline = None
        self.abandon_request()
        self.transport.abort()
        self._note("send_timeout")


def connection_cap(wanted: int, reserve: int = FD_RESERVE) -> int:
    """How many connections fit under the open-file limit, raising the soft limit towards the hard one if needed.

    The result is at most `wanted`, and leaves `reserve` descriptors for everything else, so that
    refusing a connection with 503 happens before accept() itself starts failing.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + reserve
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))
