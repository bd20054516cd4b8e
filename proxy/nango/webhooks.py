"""Nango's auth webhooks: a new or replaced connection goes into the directory at once, a failed refresh
takes it out.

Trust model. Only `X-Nango-Hmac-Sha256` (hex HMAC-SHA256 of the raw body) is accepted; the older
`X-Nango-Signature` is deprecated by Nango as unsafe. Nango's scheme has no timestamp or nonce
(NangoHQ/nango `packages/webhooks/lib/utils.ts`), so a captured webhook can be replayed and whoever holds
the signing key can write any body. A webhook is therefore only a hint that a connection changed: the
directory asks Nango about it (one request, `confirm`) and applies Nango's answer, never the
body. A replayed `creation` cannot roll a user back, a forged one cannot point a user at another user's
connection or add users Nango does not have, and a replayed failed `refresh` is ignored once Nango says
the connection is healthy. Only while Nango cannot be asked does a failed `refresh` hold the connection
back, for UNCONFIRMED_FAILURE_SECONDS; a `creation`/`override` is then answered 503, so Nango delivers
it again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import orjson

from proxy.metrics import Metrics
from proxy.nango.client import Connection, NangoClient, NangoError, owner_of
from proxy.nango.directory import ConnectionDirectory
from proxy.secret import Secret

__all__ = ["SIGNATURE_HEADER", "handle_nango_webhook", "verify_nango_signature"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Nango-Hmac-Sha256"
# Types Nango documents; anything else is counted as "other" to keep the metric's labels bounded.
KNOWN_TYPES = frozenset({"auth", "sync", "forward", "async_action"})
KNOWN_OPERATIONS = frozenset({"creation", "override", "refresh", "unknown"})
# Webhooks waiting for Nango's answer at once; more get 503 and Nango delivers them again later.
MAX_PENDING_CONFIRMATIONS = 32


def verify_nango_signature(body: bytes, header_value: str | None, keys: Sequence[Secret]) -> bool:
    """True when the header is the hex HMAC-SHA256 of `body` under any non-empty key (constant time)."""
    if not header_value:
        return False
    candidate = header_value.strip().lower()
    if len(candidate) != 64 or not all(c in string.hexdigits for c in candidate):
        return False
    matched = False
    for key in keys:
        if not key:  # an empty key would let anyone sign
            continue
        expected = hmac.new(str(key).encode(), body, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


async def handle_nango_webhook(
    body: bytes,
    headers: Mapping[str, str],
    *,
    directory: ConnectionDirectory,
    keys: Sequence[Secret],
    integration_id: str | Collection[str],
    user_tag: str,
    metrics: Metrics,
) -> tuple[int, dict[str, object]]:
    """Verify and apply one webhook; returns (HTTP status, JSON body)."""
    if not verify_nango_signature(body, _header(headers, SIGNATURE_HEADER), keys):
        metrics.webhooks.labels(type="unknown", result="unauthorised").inc()
        if not any(keys):
            logger.warning("nango webhook rejected: no signing key configured")
        else:
            logger.warning("nango webhook rejected: missing or invalid %s", SIGNATURE_HEADER)
        return 401, {"error": "missing or invalid signature"}
    try:
        # orjson refuses nesting deeper than 1,024 levels with a JSONDecodeError (a ValueError): a body of
        # 100,000 nested arrays is a 400, never a RecursionError. Nango's own bodies nest 3 levels deep.
        payload = orjson.loads(body)
    except ValueError as exc:
        metrics.webhooks.labels(type="unknown", result="invalid").inc()
        reason = "nested too deeply" if "depth" in str(exc) else "not valid JSON"
        return 400, {"error": f"body is {reason}: expected a JSON object"}
    if not isinstance(payload, dict):
        metrics.webhooks.labels(type="unknown", result="invalid").inc()
        return 400, {"error": "body is not a JSON object"}

    kind = payload.get("type")
    if kind != "auth":
        label = kind if isinstance(kind, str) and kind in KNOWN_TYPES else "other"
        metrics.webhooks.labels(type=label, result="ignored").inc()
        return 200, {"ok": True, "result": "ignored"}

    operation = payload.get("operation")
    label = f"auth:{operation if isinstance(operation, str) and operation in KNOWN_OPERATIONS else 'other'}"
    status, result = await _apply_auth(payload, directory, integration_id, user_tag)
    metrics.webhooks.labels(type=label, result=result).inc()
    if status != 200:
        return status, {"error": f"cannot confirm with Nango now ({result}); deliver again later"}
    return 200, {"ok": True, "result": result}


async def _apply_auth(
    payload: Mapping[str, object], directory: ConnectionDirectory, integration_id: str | Collection[str], user_tag: str
) -> tuple[int, str]:
    ids = (integration_id,) if isinstance(integration_id, str) else integration_id
    if payload.get("providerConfigKey") not in ids:
        return 200, "other_integration"
    operation = payload.get("operation")
    success = payload.get("success")
    connection_id = payload.get("connectionId")
    if not isinstance(connection_id, str) or not 0 < len(connection_id) <= 255:
        return 200, "ignored"
    changed = operation in ("creation", "override") and success is True
    failed = operation in ("refresh", "override") and success is False
    if not (changed or failed):
        return 200, "ignored"
    user_id = owner_of(payload, user_tag, end_user_key="endUser", id_key="endUserId")
    if user_id is not None and len(user_id) > 255:
        return 200, "ignored"
    try:
        confirmation = await confirm(directory, connection_id, user_id)
    except NangoError as exc:
        if failed:
            directory.suspend(connection_id)
            logger.warning("nango %s failed for connection %s; Nango unreachable (%s): held back briefly",
                           operation, connection_id, exc.code)  # fmt: skip
            return 200, "suspended_unconfirmed"
        logger.warning(
            "nango %s for connection %s not confirmed (%s); Nango will retry", operation, connection_id, exc.code
        )
        return 503, "unconfirmed"
    conn = confirmation.connection
    if confirmation.result != "applied" or conn is None:
        logger.warning(
            "nango %s for connection %s: %s in Nango; nothing applied", operation, connection_id, confirmation.result
        )
        return 200, confirmation.result
    if failed:
        if conn.healthy:
            logger.info(
                "nango %s failure for connection %s: Nango says it is healthy now; ignored", operation, connection_id
            )
            return 200, "not_confirmed"
        logger.warning(
            "nango refresh failed for user %s connection %s: the user must reconnect", conn.user_id, connection_id
        )
        return 200, "marked_unusable"
    if confirmation.connection_id != connection_id:
        logger.info("nango %s: user %s keeps connection %s (%s ranks lower)",
                    operation, conn.user_id, confirmation.connection_id, connection_id)  # fmt: skip
        return 200, "kept_newer"
    logger.info("nango %s: user %s now uses connection %s", operation, conn.user_id, connection_id)
    return 200, "applied"


@dataclass(frozen=True)
class Confirmation:
    """What Nango said about a connection a webhook named: `result` for the metric and the reply,
    `connection_id` the one the user is served now."""

    result: str
    connection: Connection | None = None
    connection_id: str | None = None


async def confirm(directory: ConnectionDirectory, connection_id: str, user_id: str | None) -> Confirmation:
    """Ask Nango about a connection a webhook names, and apply what Nango says, never the webhook's body.

    One request: the user's connections (`tags[user_tag]=`) when the webhook names a user, else the
    connection itself (`connectionId=`). A replayed or forged webhook can therefore neither roll a user
    back to an old connection nor point a user at someone else's: the result is what Nango holds now,
    ranked like the index ranks it. Concurrent webhooks about one connection share the request.
    """
    client = directory.client
    if client is None:
        return Confirmation("nango_not_configured")
    if directory.breaker_open():
        raise NangoError("confirm", None, "breaker_open")
    key = (connection_id, user_id)
    pending = directory.confirming
    task = pending.get(key)
    if task is None:
        if len(pending) >= MAX_PENDING_CONFIRMATIONS:
            raise NangoError("confirm", None, "busy")
        task = asyncio.create_task(_confirm(directory, client, connection_id, user_id), name="nango-confirm")
        pending[key] = task
        task.add_done_callback(lambda _: pending.pop(key, None))
    confirmation: Confirmation = await asyncio.shield(task)
    return confirmation


async def _confirm(
    directory: ConnectionDirectory, client: NangoClient, connection_id: str, user_id: str | None
) -> Confirmation:
    if user_id is not None:
        conns = await client.find_user_connections(user_id)
    else:
        found = await client.find_connection(connection_id)
        conns = [found] if found is not None else []
    conn = next((c for c in conns if c.connection_id == connection_id), None)
    if conn is None:
        # Deleted, or not this user's: whatever we hold about it is wrong now.
        directory.forget_connection(connection_id, user_id)
        return Confirmation("not_found")
    if conn.user_id is None:
        return Confirmation("no_user", conn)
    directory.apply_user_connections(conn.user_id, conns)
    return Confirmation("applied", conn, directory.current(conn.user_id))
