"""A string that never shows itself in a repr, a log line or a traceback."""

from __future__ import annotations

import hmac


class Secret:
    """Wraps a key or token; `str()` is the only way to read it.

    Modelled on `starlette.datastructures.Secret`, with constant-time equality so callers
    cannot compare secrets the unsafe way by accident.
    """

    __slots__ = ("_encoded", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        # Encoded once: every request presenting a credential is compared with it.
        self._encoded = value.encode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"{type(self).__name__}('**********')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._encoded, other._encoded)

    def __hash__(self) -> int:
        return hash(self._value)

    def matches(self, candidate: str | bytes) -> bool:
        """Constant-time comparison against untrusted input."""
        raw = candidate.encode("utf-8", "surrogateescape") if isinstance(candidate, str) else candidate
        return hmac.compare_digest(self._encoded, raw)
