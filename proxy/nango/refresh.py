"""The directory's bulk index over its life: rebuilt by paging Nango, patched by webhooks in between.

A rebuild takes a while (one request per page of connections). Webhook effects that land meanwhile are
applied to the index being served and recorded, then replayed onto the new index before it is installed,
so a rebuild never undoes what a webhook taught. Replicas install an index another replica built the same
way (`proxy.shared.cluster`), with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from proxy.metrics import Metrics
from proxy.nango.client import NangoClient, NangoError
from proxy.nango.index import ConnectionIndex
from proxy.nango.lines import report_conflicts

__all__ = ["REFRESH_RETRY_SECONDS", "IndexEffect", "IndexRefresher"]

# The directory's logger: these lines were always its own, and log filters select on the name.
logger = logging.getLogger(__name__)

IndexEffect = Callable[[ConnectionIndex], object]

# After a failed index refresh, try again sooner than the full interval.
REFRESH_RETRY_SECONDS = 30.0


class IndexRefresher:
    """Holds the index served now and replaces it as a whole; see the module docstring."""

    def __init__(
        self,
        client: NangoClient | None,
        interval: float,
        metrics: Metrics,
        clock: Callable[[], float],
        report_error: Callable[[str | None], None],
    ) -> None:
        self.index = ConnectionIndex()
        self.built_at: float | None = None
        # Users that webhooks added to the index since it was installed (bounded by proxy.nango.directory).
        self.webhook_users = 0
        self._client = client
        self._interval = interval
        self._metrics = metrics
        self._clock = clock
        self._report_error = report_error
        self._task: asyncio.Task[bool] | None = None
        # Webhook effects seen while an index is built or loaded, replayed onto it before it is installed.
        self._recorders: list[list[IndexEffect]] = []

    @property
    def enabled(self) -> bool:
        return self._client is not None and self._interval > 0

    @property
    def task(self) -> asyncio.Task[bool] | None:
        """The rebuild running or last run, if any."""
        return self._task

    def apply(self, effect: IndexEffect) -> None:
        """A webhook's effect on the index, kept for the index being built too."""
        # Without a periodic refresh nothing would ever correct an index entry: webhooks then only fill the cache.
        if not self.enabled:
            return
        effect(self.index)
        for recorder in self._recorders:
            recorder.append(effect)

    @contextlib.contextmanager
    def recording_effects(self) -> Iterator[list[IndexEffect]]:
        """Collects webhook effects while a new index is built or loaded, for `install` to replay."""
        effects: list[IndexEffect] = []
        self._recorders.append(effects)
        try:
            yield effects
        finally:
            self._recorders.remove(effects)

    def start(self) -> asyncio.Task[bool] | None:
        """Start rebuilding the index unless a rebuild is running; None when disabled."""
        if not self.enabled:
            return None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rebuild(), name="nango-index-refresh")
        return self._task

    async def refresh(self) -> bool:
        """Rebuild the whole index from Nango; concurrent calls share one rebuild. True when it succeeded."""
        task = self.start()
        return False if task is None else await asyncio.shield(task)

    async def _rebuild(self) -> bool:
        started = self._clock()
        with self.recording_effects() as effects:
            index = await self.page()
        if index is None:
            return False
        self.install(index, effects)
        logger.info("nango index refreshed: %d users in %.1fs", len(index), self._clock() - started)
        return True

    async def page(self) -> ConnectionIndex | None:
        """Every connection from Nango, indexed; None (logged, shown in `status`) when paging failed."""
        assert self._client is not None
        index = ConnectionIndex()
        try:
            async for page in self._client.list_connections_pages():
                for conn in page:
                    index.add(conn)
        except NangoError as exc:
            self._report_error(exc.code)
            logger.warning("nango index refresh failed (%s); keeping the index of %d users", exc.code, len(self.index))
            return None
        except Exception:  # nobody may be awaiting this task: a bug must be logged, not lost
            self._report_error("internal_error")
            logger.exception("nango index refresh crashed; keeping the index of %d users", len(self.index))
            return None
        self._report_error(None)
        return index

    def install(self, index: ConnectionIndex, effects: list[IndexEffect], *, age: float = 0.0) -> None:
        """Serve `index` from now on (built `age` seconds ago), after replaying the webhook effects recorded
        while it was made."""
        for effect in effects:
            effect(index)
        self.index = index
        self.webhook_users = 0
        self.built_at = self._clock() - age
        self._metrics.index_size.set(len(index))
        self._metrics.tagged_lines.set(index.claimed_lines)
        report_conflicts(index, self._metrics)
        self._metrics.index_age.set(time.time() - age)

    def age(self) -> float | None:
        """Seconds since the index served now was built (None before the first)."""
        return None if self.built_at is None else self._clock() - self.built_at

    async def run(self) -> None:
        """Refresh the index now and every interval, until cancelled (app lifespan)."""
        if not self.enabled:
            return
        while True:
            ok = await self.refresh()
            await asyncio.sleep(self._interval if ok else min(self._interval, REFRESH_RETRY_SECONDS))
