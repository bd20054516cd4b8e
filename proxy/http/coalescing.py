"""One send(2) per answer: a connection's writes within one event-loop turn leave together.

uvicorn writes an answer as two transport writes, the status line and headers on `http.response.start`
and the body on `http.response.body`. On an idle socket each write is its own send(2) system call and,
with TCP_NODELAY, its own TCP segment. A system call is the dearest thing a warm answer does (on the
benchmark machine each costs more than the proxy's whole routing and rendering), so `CoalescingTransport`
holds what is written during one turn of the event loop and writes it joined at the end of that turn:
the head and body of an answer go out as one send(2) and one segment, a few microseconds later than
before and never later than the loop's next turn (at once when more than HOLD_BYTES are held).

Order is kept because every write of the connection, the protocol's own (400, 408, 431, 503) as well as
the app's, goes through it. `close()` writes what is held before closing; `abort()` drops it, as the
transport's own abort drops its buffer, and so does `discard()` once the connection is lost. The one
close that does not pass through it, the event loop's own when the peer ends its side (EOF), still
sends what is written after it, and the protocol's `eof_received` flushes first anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

__all__ = ["CoalescingTransport"]

# Held bytes written through at once rather than at the turn's end: the transport's own flow control
# (pause_writing when its buffer is full) must see a peer that reads nothing while one read's requests are
# still being answered, not after all of them.
HOLD_BYTES = 65_536


class CoalescingTransport(asyncio.Transport):
    """`transport`, with the writes of one event-loop turn joined into one."""

    __slots__ = ("_context", "_held", "_held_bytes", "_loop", "_lost", "_transport", "_turn_writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._turn_writes = 0
        self._lost = False
        # The flush reads no context variable: an empty context spares call_soon a copy of the caller's.
        self._context = contextvars.Context()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._lost:
            return
        if not self._turn_writes:
            self._loop.call_soon(self._end_turn, context=self._context)
        self._turn_writes += 1
        self._held.append(bytes(data) if type(data) is not bytes else data)
        self._held_bytes += len(data)
        if self._held_bytes > HOLD_BYTES:
            self.flush()

    @property
    def turn_writes(self) -> int:
        """Writes in this turn of the event loop so far: answers the peer has not been sent yet."""
        return self._turn_writes

    def _end_turn(self) -> None:
        self._turn_writes = 0
        self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is held now (the protocol calls it when the peer's EOF will close the connection)."""
        held = self._held
        if not held:
            return
        self._held = []
        self._held_bytes = 0
        # Even on a closing transport: closing (after the peer's EOF, say) still sends what was written.
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def discard(self) -> None:
        """The connection is gone (the protocol's connection_lost): drop what is held and whatever comes."""
        self._held = []
        self._held_bytes = 0
        self._lost = True

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._held_bytes = 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)
