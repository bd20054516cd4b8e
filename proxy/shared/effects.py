"""Webhook effects as they travel between replicas: an announcement's data read back as the overlay entry the
sender also wrote (`proxy.shared.index.OverlayEntry`), within bounds a sender of ours never exceeds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.shared.fanout import Announcement
from proxy.shared.index import OverlayEntry, decode_connection

__all__ = ["MAX_ANNOUNCED_CONNECTIONS", "MAX_FIELD_CHARS", "entry_of"]

# Bounds on announced fields: anything longer is not ours.
MAX_FIELD_CHARS = 512
MAX_ANNOUNCED_CONNECTIONS = 50


def _field(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS else None


def entry_of(message: Announcement) -> OverlayEntry | None:
    """A user/forget/learn/suspend announcement as the overlay entry it also wrote; None for others or junk."""
    data, at_ms = message.data, int(message.sent_at * 1000)
    if message.kind in ("forget", "suspend"):
        connection_id = _field(data, "c")
        owner = _field(data, "u") if message.kind == "forget" else None
        return OverlayEntry(at_ms, message.kind, connection_id, owner=owner) if connection_id else None
    if message.kind not in ("user", "learn"):
        return None
    raw = data.get("cs")
    if not isinstance(raw, list) or len(raw) > MAX_ANNOUNCED_CONNECTIONS:
        return None
    try:
        conns = tuple(decode_connection(item) for item in raw)
    except (TypeError, ValueError):
        return None
    if message.kind == "learn":
        return OverlayEntry(at_ms, "put", conns[0].connection_id, conns) if conns else None
    user_id = _field(data, "u")
    return OverlayEntry(at_ms, "user", user_id, conns) if user_id is not None else None
