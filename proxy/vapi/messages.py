"""Vapi server messages in: bytes -> a checked message, and the routing keys of its call.

Vapi's bodies are large, versioned and partly optional, so only the few fields the proxy needs are
read, each defensively: a wrong type anywhere yields "unknown", never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson

from proxy.config.snapshot import InboundCall
from proxy.numbers import mask_number, route_key

MAX_ID_LENGTH = 200

# Every `message.type` in Vapi's ServerMessage union (vapi-server-sdk's `ServerMessageMessage`; a test
# keeps the two in step). Only these become metric label values: a type from the body is attacker
# controlled, and each distinct label value is a time series held forever.
VAPI_MESSAGE_TYPES = frozenset(
    {
        "assistant-request",
        "assistant.speechStarted",
        "call.artifact.upload",
        "call.delete.failed",
        "call.deleted",
        "call.endpointing.request",
        "campaign.predial",
        "chat.created",
        "chat.deleted",
        "conversation-update",
        "end-of-call-report",
        "handoff-destination-request",
        "hang",
        "knowledge-base-request",
        "language-change-detected",
        "model-output",
        "phone-call-control",
        "session.created",
        "session.deleted",
        "session.updated",
        "speech-update",
        "status-update",
        "tool-calls",
        "transcript",
        'transcript[transcriptType="final"]',
        "transfer-destination-request",
        "transfer-update",
        "user-interrupted",
        "voice-input",
        "voice-request",
    }
)


def message_type_label(message_type: str) -> str:
    """The metric label for a message type: itself if Vapi publishes it, else "other"."""
    return message_type if message_type in VAPI_MESSAGE_TYPES else "other"


class BadRequest(Exception):
    """A request that is not a Vapi server message; the reason is safe to send back."""

    def __init__(self, reason: str, status_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


def parse_message(body: bytes) -> dict[str, object]:
    """The `message` object of a server-URL request, or BadRequest saying what is wrong."""
    if not body:
        raise BadRequest('empty body: expected JSON {"message": {...}}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise BadRequest('body must be a JSON object with a "message" object')
    message = payload.get("message")
    if not isinstance(message, dict):
        raise BadRequest('"message" is missing or not an object')
    message_type = message.get("type")
    if not isinstance(message_type, str) or not message_type:
        raise BadRequest('"message.type" is missing or not a string')
    return message


def _object(parent: Mapping[str, object] | None, key: str) -> Mapping[str, object] | None:
    value = parent.get(key) if parent is not None else None
    return value if isinstance(value, dict) else None


def _text(parent: Mapping[str, object] | None, key: str) -> str | None:
    value = parent.get(key) if parent is not None else None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


def _number_or_uri(party: Mapping[str, object] | None) -> str | None:
    if party is None:
        return None
    return route_key(party.get("number")) or route_key(party.get("sipUri"))


def call_id_of(message: Mapping[str, object]) -> str:
    return _text(_object(message, "call"), "id") or "-"


def call_keys(message: Mapping[str, object]) -> tuple[str, str | None, str | None, str | None]:
    """(call id, called line, its Vapi phoneNumberId, caller) of the message's call, as plain values."""
    call = _object(message, "call")
    phone_number = _object(message, "phoneNumber") or _object(call, "phoneNumber")
    customer = _object(message, "customer") or _object(call, "customer")
    return (
        _text(call, "id") or "-",
        _number_or_uri(phone_number),
        _text(phone_number, "id") or _text(call, "phoneNumberId"),
        _number_or_uri(customer) or _number_or_uri(_object(call, "customer")),
    )


def inbound_call(message: Mapping[str, object]) -> InboundCall:
    """Routing keys of the message's call: called line, its Vapi id, and the caller."""
    call_id, to, phone_number_id, caller = call_keys(message)
    return InboundCall(call_id=call_id, to=to, phone_number_id=phone_number_id, caller=caller)


def call_line(
    keys: tuple[str, str | None, str | None, str | None],
    *,
    rule: str,
    user: str | None,
    connection: str | None,
    provider: str | None,
    outcome: str,
    reason: str,
    elapsed: float,
    mask: Callable[[str | None], str | None] = mask_number,
) -> dict[str, object]:
    """The fields of the one log line each assistant-request leaves, whichever path answered it: `keys` as
    `call_keys` gives them, numbers masked (`mask`: the fast path passes a cached `mask_number`)."""
    call_id, to, phone_number_id, caller = keys
    return {
        "call_id": call_id,
        "to": mask(to),
        "from": mask(caller),
        "phone_number_id": phone_number_id,
        "rule": rule,
        "user": user,
        "connection": connection,
        "provider": provider,
        "outcome": outcome,
        "reason": reason,
        "latency_ms": round(elapsed * 1000, 2),
    }
