"""What a directory lookup answers for one user, and the names of where that answer came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.nango import Connection

__all__ = ["Lookup", "Negative", "Source", "answer_for"]

# Also what the call log line shows as "connection" and `resolve` as "connection_source".
Source = Literal["index", "cache", "nango", "stale", "negative", "timeout", "error", "unhealthy", "fixed"]
Negative = Literal["negative", "unhealthy"]


@dataclass(frozen=True)
class Lookup:
    """The answer for one user: a usable connection id or None, and where the answer came from."""

    connection_id: str | None
    source: Source
    detail: str = ""


def answer_for(conn: Connection, source: Source) -> Lookup:
    if conn.healthy:
        return Lookup(conn.connection_id, source)
    return Lookup(None, "unhealthy", f"connection {conn.connection_id} has errors; the user must reconnect")
