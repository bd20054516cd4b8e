"""The connection slots of one process: how many each peer holds, which may be given to a newcomer, refusals.

A slot is evictable while its connection is owed nothing: no request in progress (idle, half-sent head,
kept alive) or its answer complete while the rest of a body the app did not need is still arriving.
At the cap a newcomer takes the slot that has been evictable longest; one peer (proxy.http.peers) may
hold at most `per_peer` slots, and at that bound a newcomer from it takes its own oldest evictable slot
or is refused. So neither connections that send nothing nor one address can lock real calls out.
"""

from __future__ import annotations

import logging
import time
from typing import Generic, TypeVar

from proxy.http.peers import PeerKeys, PerPeer

__all__ = ["HEADER_TOO_LARGE", "TIMED_OUT", "TOO_MANY_CONNECTIONS", "TOO_MANY_FROM_PEER", "RefusalLog", "Slots"]

logger = logging.getLogger(__name__)

# A refusal is logged at most this often (with the count since the last line), so a flood cannot
# turn into a log flood.
LOG_EVERY_SECONDS = 10.0

C = TypeVar("C")


def _response(status: int, reason: str, text: str) -> bytes:
    body = text.encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


HEADER_TOO_LARGE = _response(431, "Request Header Fields Too Large", "request line and headers too large")
TIMED_OUT = _response(408, "Request Timeout", "request not received in time")
TOO_MANY_CONNECTIONS = _response(503, "Service Unavailable", "too many connections")
TOO_MANY_FROM_PEER = _response(503, "Service Unavailable", "too many connections from one address")


class RefusalLog:
    """Counts refusals by kind and logs them at most once per LOG_EVERY_SECONDS."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._logged_at = -LOG_EVERY_SECONDS

    def note(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            logger.warning("connections refused", extra={"fields": dict(self._counts)})
            self._counts.clear()


class Slots(Generic[C]):
    """The open connections `C` of one process, by peer, and the evictable ones, longest evictable first."""

    def __init__(self, keys: PeerKeys, per_peer: int) -> None:
        self.keys = keys
        self.per_peer = per_peer
        self.evictable: dict[C, None] = {}
        self._peers = PerPeer()
        self._peer_of: dict[C, str | None] = {}

    def peer_full(self, key: str | None) -> bool:
        return self._peers.held(key) >= self.per_peer

    def victim(self, key: str | None = None, *, of_peer: bool = False) -> C | None:
        """The connection evictable longest: of any peer, or (`of_peer`) of the peer `key`."""
        for connection in self.evictable:
            if not of_peer or self._peer_of.get(connection) == key:
                return connection
        return None

    def take(self, connection: C, key: str | None) -> None:
        self._peer_of[connection] = key
        self._peers.take(key)
        self.evictable[connection] = None  # no request yet: a connection that never sends is evicted first

    def release(self, connection: C) -> None:
        """The connection is gone (or going): its slot is free. Safe to call more than once."""
        self.evictable.pop(connection, None)
        if connection in self._peer_of:
            self._peers.give_back(self._peer_of.pop(connection))

    def evictable_now(self, connection: C) -> None:
        if connection in self._peer_of:
            self.evictable.pop(connection, None)  # re-inserted last: the most recently used is evicted last
            self.evictable[connection] = None

    def busy(self, connection: C) -> None:
        self.evictable.pop(connection, None)
