"""CoalescingTransport: one write(2) per event-loop turn, order kept, close flushes, abort drops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.http.coalescing import HOLD_BYTES, CoalescingTransport

pytestmark = pytest.mark.anyio


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_the_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(bytearray(b"{}"))
    transport.write(b"")
    assert raw.writes == [] and transport.get_write_buffer_size() == 40
    await next_turn()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.writelines([b"a", b"b"])
    await next_turn()
    transport.write(b"c")
    await next_turn()
    assert raw.writes[1:] == [b"ab", b"c"]


async def test_close_writes_what_is_held_first_and_abort_drops_it() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"408 answer")
    transport.close()
    assert raw.writes == [b"408 answer"] and raw.closed
    await next_turn()
    assert raw.writes == [b"408 answer"]  # the scheduled flush finds nothing left

    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"unread answer")
    transport.abort()
    await next_turn()
    assert raw.writes == [] and raw.aborted


async def test_a_transport_closing_after_the_peers_eof_still_gets_the_answer() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"answer")
    raw.closed = True  # the event loop closes it on the peer's EOF, past the wrapper: closing still sends
    await next_turn()
    assert raw.writes == [b"answer"]


async def test_nothing_is_written_once_the_connection_is_lost() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"answer")
    transport.discard()
    transport.write(b"more")
    await next_turn()
    assert raw.writes == []


async def test_more_than_the_hold_limit_in_one_turn_is_written_at_once() -> None:
    # So that the transport's flow control (pause_writing) sees a peer that reads nothing within the turn.
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    answer = b"a" * 1000
    for _ in range(HOLD_BYTES // len(answer)):
        transport.write(answer)
    assert raw.writes == []
    transport.write(answer)
    assert [len(data) for data in raw.writes] == [HOLD_BYTES // len(answer) * 1000 + 1000]
    assert transport.get_write_buffer_size() == 0
    transport.write(b"b")
    await next_turn()
    assert raw.writes[1:] == [b"b"]
