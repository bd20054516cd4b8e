"""Nango's auth webhooks: a new or replaced connection goes into the directory at once, a failed refresh
takes it out.

Only `X-Nango-Hmac-Sha256` (hex HMAC-SHA256 of the raw body) is accepted; the older `X-Nango-Signature`
is deprecated by Nango as unsafe. The scheme has no timestamp, so a captured webhook can be replayed:
harmless here, as every effect is idempotent and a later index refresh or lookup corrects the state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import string
from collections.abc import Mapping, Sequence

from proxy.directory import ConnectionDirectory
from proxy.metrics import Metrics
from proxy.nango import owner_of
from proxy.secret import Secret

__all__ = ["SIGNATURE_HEADER", "handle_nango_webhook", "verify_nango_signature"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Nango-Hmac-Sha256"
# Types Nango documents; anything else is counted as "other" to keep the metric's labels bounded.
KNOWN_TYPES = frozenset({"auth", "sync", "forward", "async_action"})
KNOWN_OPERATIONS = frozenset({"creation", "override", "refresh", "unknown"})


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
    integration_id: str,
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
        payload = json.loads(body)
    except ValueError:
        payload = None
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
    result = _apply_auth(payload, directory, integration_id, user_tag)
    metrics.webhooks.labels(type=label, result=result).inc()
    return 200, {"ok": True, "result": result}


def _apply_auth(
    payload: Mapping[str, object], directory: ConnectionDirectory, integration_id: str, user_tag: str
) -> str:
    if payload.get("providerConfigKey") != integration_id:
        return "other_integration"
    operation = payload.get("operation")
    success = payload.get("success")
    connection_id = payload.get("connectionId")
    if not isinstance(connection_id, str) or not connection_id:
        return "ignored"
    user_id = owner_of(payload, user_tag, end_user_key="endUser", id_key="endUserId")
    if user_id is None:
        logger.warning("nango auth webhook for connection %s carries no user id; ignored", connection_id)
        return "no_user"
    if operation in ("creation", "override") and success is True:
        directory.apply_connection(user_id, connection_id)
        logger.info("nango %s: user %s now uses connection %s", operation, user_id, connection_id)
        return "applied"
    if operation == "refresh" and success is False:
        directory.mark_unusable(user_id, connection_id)
        logger.warning(
            "nango refresh failed for user %s connection %s: the user must reconnect", user_id, connection_id
        )
        return "marked_unusable"
    return "ignored"
