"""Catching up after a lost subscription: what other replicas announced while this one was not listening.

Pub/sub delivers nothing to a subscriber whose link is down (Redis failing over, a network blip, a killed
client), and redis-py resubscribes quietly. Every announced effect is also in the index overlay (one entry
per user or connection, the newest), so on each resubscription the overlay entries written since the last
announcement heard are applied, less a margin for clocks that differ between replicas. Without this, a
replica that missed a webhook's announcement would hand out the old connection until the next index build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from proxy.shared.index import IndexStore, OverlayEntry

__all__ = ["CatchUp"]

logger = logging.getLogger(__name__)

# Replicas' wall clocks differ (NTP keeps them within milliseconds; this leaves room for worse).
CLOCK_MARGIN_SECONDS = 2.0


class CatchUp:
    """Tracks the newest announcement heard; on a resubscription, replays the overlay entries after it."""

    def __init__(
        self,
        indexes: IndexStore,
        apply: Callable[[OverlayEntry], None],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._indexes = indexes
        self._apply = apply
        self._wall_clock = wall_clock
        self._heard_at: float | None = None  # epoch seconds; None until the first subscription
        self._live: set[str] | None = None  # overlay fields announced while a replay reads the overlay

    def heard(self, sent_at: float, fields: Iterable[str] = ()) -> None:
        """An announcement arrived (`fields`: the overlay fields its effect was also written to)."""
        self._heard_at = max(self._heard_at or 0.0, min(sent_at, self._wall_clock()))
        if self._live is not None:
            self._live.update(fields)

    def subscribed(self) -> Coroutine[Any, Any, None] | None:
        """Called on every (re)subscription: the replay to run, or None on the first one (the index that
        is loaded next includes the overlay)."""
        if self._heard_at is None:
            self._heard_at = self._wall_clock()
            return None
        return self.replay(self._heard_at - CLOCK_MARGIN_SECONDS)

    async def replay(self, since: float) -> None:
        """Apply every overlay entry written after `since`, oldest first, except those a live announcement
        superseded meanwhile. Raises SharedUnavailable (then the next resubscription or build catches up)."""
        started = self._wall_clock()
        self._live = set()
        try:
            entries = await self._indexes.overlay_since(int(since * 1000))
            for entry in entries:
                if entry.field not in self._live:
                    self._apply(entry)
        finally:
            self._live = None
        self._heard_at = max(self._heard_at or 0.0, started)
        if entries:
            logger.info("caught up on %d announcements missed while resubscribing", len(entries))
