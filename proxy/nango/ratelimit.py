"""Nango's request budget as its responses report it, so background work yields to live calls."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# Nango's windows are per minute: a reset or Retry-After further out than this is clock skew or garbage,
# and must not park the background index for hours.
MAX_RATE_WAIT = 120.0
# A 429 without a usable Retry-After still means "not right now".
DEFAULT_RETRY_AFTER = 1.0
# Share of the per-minute budget that background paging leaves to the lookups live calls wait for.
BACKGROUND_RESERVE = 0.10


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class RateLimit:
    """What Nango's last response said about the request budget; times are on the monotonic clock."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    blocked_until: float = 0.0

    def observe(self, status: int, headers: Mapping[str, str], now: float, wall_now: float) -> None:
        """Take in one response's status and headers (any casing)."""
        headers = {name.lower(): value for name, value in headers.items()}
        limit = _header_number(headers, "x-ratelimit-limit")
        remaining = _header_number(headers, "x-ratelimit-remaining")
        reset = _header_number(headers, "x-ratelimit-reset")  # epoch seconds
        if limit is not None:
            self.limit = int(limit)
        if remaining is not None:
            self.remaining = int(remaining)
        if reset is not None:
            self.reset_at = now + min(max(reset - wall_now, 0.0), MAX_RATE_WAIT)
        if status == 429:
            retry_after = _header_number(headers, "retry-after")
            if retry_after is None:
                fallback = self.reset_at - now if self.reset_at is not None else 0.0
                retry_after = max(fallback, DEFAULT_RETRY_AFTER)
            self.blocked_until = now + min(max(retry_after, 0.0), MAX_RATE_WAIT)

    def blocked_for(self, now: float) -> float:
        """Seconds left in a 429 Retry-After window."""
        return max(self.blocked_until - now, 0.0)

    def background_delay(self, now: float) -> float:
        """Seconds background work should wait so the reserve stays for live lookups."""
        delay = self.blocked_for(now)
        if self.limit and self.remaining is not None and self.reset_at is not None and now < self.reset_at:
            reserve = max(1, math.ceil(self.limit * BACKGROUND_RESERVE))
            if self.remaining <= reserve:
                delay = max(delay, self.reset_at - now)
        return delay


class SharedBudget(Protocol):
    """The budget of every replica together (proxy.shared.cluster): consulted before each Nango request,
    fed with each response. Never raises and never waits long: without an answer it grants."""

    async def wait_for(self, *, background: bool) -> float:
        """0.0 to go ahead now, else the seconds until a request fits the shared budget."""
        ...

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in one response's status and rate-limit headers (does its I/O in the background)."""
        ...
