"""Shared state is signed: whoever can write the proxy's Redis keys or publish on its channel, but does not hold
the Nango secret key, cannot make a replica hand out a connection Nango did not confirm.

Every announcement, index overlay entry, index chunk and index meta carries an HMAC-SHA256 over its bytes and
the Redis key (or channel) it belongs to, so a value moved to another key, prefix or cluster does not verify.
The key is derived from the Nango secret key (`nango.secret_key`): every replica of a cluster holds it, and
whoever holds it can already read every connection and call every calendar through Nango, so signing with it
gives nobody anything new and needs no new secret to issue, store and rotate. Without a Nango secret key the
proxy has nothing to share (no index, no webhooks): a signer without a key signs with a random one of its own,
which no other replica accepts.

Values are stored as 64 hex characters of MAC, then the value itself (`seal`); `open` returns the value only
when the MAC is right (constant-time compare), else None.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from proxy.secret import Secret

__all__ = ["MAC_CHARS", "Signer"]

MAC_CHARS = 64
# Bumped when the signed formats change: replicas of different formats then ignore each other's shared state.
_CONTEXT = b"vapi-calendar-proxy shared state v1"


class Signer:
    """Seals and opens values bound to a Redis key; see the module docstring."""

    __slots__ = ("_key", "keyed")

    def __init__(self, secret: Secret | None) -> None:
        self.keyed = bool(secret)
        seed = str(secret).encode() if secret else os.urandom(32)
        self._key = hmac.new(seed, _CONTEXT, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Signer({'nango key' if self.keyed else 'no key: shares nothing'})"

    def mac(self, where: str, value: bytes) -> bytes:
        """The hex MAC of `value` stored at `where` (a Redis key, a hash field's key and field, a channel)."""
        message = where.encode() + b"\0" + value
        return hmac.new(self._key, message, hashlib.sha256).hexdigest().encode()

    def verify(self, where: str, value: bytes, mac: object) -> bool:
        return isinstance(mac, bytes) and hmac.compare_digest(mac, self.mac(where, value))

    def seal(self, where: str, value: bytes) -> bytes:
        return self.mac(where, value) + value

    def open(self, where: str, sealed: object) -> bytes | None:
        """The value sealed for `where`, or None for anything else (unsigned, forged, moved, another format)."""
        if not isinstance(sealed, bytes) or len(sealed) < MAC_CHARS:
            return None
        mac, value = sealed[:MAC_CHARS], sealed[MAC_CHARS:]
        return value if hmac.compare_digest(mac, self.mac(where, value)) else None
