"""Request bodies off ASGI's `receive`: the one reader every answer path uses, bounded, and the replay that
lets one ASGI callable read a body and still hand the request to another.

The lane (proxy.http.lane) does not come through here: uvicorn's protocol has the body in hand already,
and the lane only takes bodies under its own, smaller bound.
"""

from __future__ import annotations

import orjson
from starlette.types import Message, Receive, Send

from proxy.vapi.messages import BadRequest

__all__ = ["body_too_large", "declared_too_large", "read_body", "replayed", "send_json"]


def body_too_large(limit: int) -> BadRequest:
    return BadRequest(f"body larger than {limit} bytes", 413)


def declared_too_large(declared: str | bytes | None, limit: int) -> bool:
    """A Content-Length that is not a plain number, or one over `limit`: refused before reading a byte."""
    return declared is not None and (not declared.isdigit() or int(declared) > limit)


async def read_body(receive: Receive, limit: int, declared: str | bytes | None = None) -> bytes:
    """The whole body, or BadRequest: 413 when it is declared or grows past `limit` bytes (what was read is
    dropped at once), 400 when the client goes away before its end."""
    if declared_too_large(declared, limit):
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadRequest("client disconnected before sending the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replayed(messages: list[Message], receive: Receive) -> Receive:
    """`receive` as if nothing had been read: `messages` first, then the real thing."""

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


async def send_json(send: Send, status: int, content: bytes | object) -> None:
    """A JSON answer as the two ASGI messages Starlette's `Response` writes for it, headers in its order."""
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
