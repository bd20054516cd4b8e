"""The Redis connection every shared feature goes through: short timeouts, a health state, no retries.

A call never waits on Redis for longer than `op_timeout`. After any failure, operations are refused at once
(`SharedUnavailable`, no network wait) for `retry_after` seconds while a background probe pings; the first
good ping brings Redis back. The probe also notices a restart (a new `run_id`), so the owners of shared data
can put it back. redis-py reconnects on the next command by itself: nothing here needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.config.redis import RedisSection, redis_url_location, redis_url_problem
from proxy.metrics import Metrics
from proxy.secret import Secret

__all__ = ["RedisSettings", "SharedStore", "SharedUnavailable", "raise_if_cancelling"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Operation names that may appear as metric labels: a fixed set keeps the series bounded.
OPERATIONS = frozenset(
    {"ping", "lock", "unlock", "index_store", "index_load", "index_put", "publish", "budget", "breaker", "counts"}
)
# What `rejected` counts (result "rejected"): values read from Redis that failed their signature.
SIGNED = frozenset({"announcement", "overlay", "index"})
# A flood of forged values is logged once a minute at most; the metric counts every one.
REJECTION_LOG_SECONDS = 60.0


def raise_if_cancelling() -> None:
    """redis-py can turn a cancellation in the middle of a read into a ConnectionError, and even retry the
    command and return its result: a task being cancelled (app shutdown) must see CancelledError, or it
    carries on and never stops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class SharedUnavailable(Exception):
    """Redis did not answer in time, failed, or is being given a rest after a failure: use local state."""


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how long the proxy waits for it: the config's `redis` section, with the environment
    filling in what the file leaves unset (`from_config`). Read once at start-up."""

    url: Secret | None = None  # redis://[user:password@]host:port/db, rediss:// for TLS
    prefix: str = "vapi-proxy:"
    op_timeout: float = 0.05  # seconds, for anything a call waits on
    background_timeout: float = 5.0  # seconds, for index pages and other work no call waits on
    connect_timeout: float = 0.25
    retry_after: float = 1.0  # seconds without Redis after a failure, probing meanwhile
    max_connections: int = 32

    @classmethod
    def from_config(cls, section: RedisSection, environ: Mapping[str, str]) -> RedisSettings:
        """The file's keys first; `REDIS_URL` and `REDIS_KEY_PREFIX` for `url` and `key_prefix` left unset
        (an empty value is unset). Neither: no shared state. A malformed `REDIS_URL` raises ValueError
        without its text, which usually carries a password."""
        url = section.url
        if url is None:
            # The same checks as the file's key, so both ways in refuse the same URLs in the same words.
            text = environ.get("REDIS_URL", "").strip()
            if text and (problem := redis_url_problem(text)) is not None:
                raise ValueError(f"REDIS_URL {problem}")
            url = Secret(text) if text else None
        prefix = section.key_prefix or environ.get("REDIS_KEY_PREFIX", "").strip() or cls.prefix
        return cls(
            url=url,
            prefix=prefix,
            op_timeout=section.call_timeout_seconds,
            background_timeout=section.background_timeout_seconds,
            connect_timeout=section.connect_timeout_seconds,
            retry_after=section.retry_seconds,
            max_connections=section.max_connections,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RedisSettings:
        """`REDIS_URL` (unset or empty: no shared state) and `REDIS_KEY_PREFIX`, with default timeouts."""
        return cls.from_config(RedisSection(), environ)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        """Scheme, host and port for logs and /readyz; never the password."""
        return redis_url_location(str(self.url)) if self.url else "unconfigured"


class SharedStore:
    """One Redis client with bounded operations and a health state (see the module docstring)."""

    def __init__(
        self,
        settings: RedisSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.url:
            raise ValueError("RedisSettings.url is required for a SharedStore")
        self.settings = settings
        self.prefix = settings.prefix
        self._metrics = metrics
        self._clock = clock
        self.redis: Redis = Redis.from_url(
            str(settings.url),
            socket_timeout=settings.background_timeout,
            socket_connect_timeout=settings.connect_timeout,
            # One immediate retry on a fresh connection, so a pooled connection that died with a restarted Redis
            # costs nothing; no more, since a call falls back at once and the probe finds Redis again.
            retry=Retry(NoBackoff(), 1),
            max_connections=settings.max_connections,
            health_check_interval=10,
            client_name="vapi-calendar-proxy",
        )
        self._down_until = 0.0
        self._up = False
        self._last_error: str | None = None
        self._run_id: str | None = None
        self._restart_listeners: list[Callable[[], None]] = []
        self._recovery_listeners: list[Callable[[], None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._rejection_logged_at = -math.inf

    def __repr__(self) -> str:
        return f"SharedStore({self.settings.describe()!r}, prefix={self.prefix!r})"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def up(self) -> bool:
        """True while the last operation or probe succeeded."""
        return self._up and self._clock() >= self._down_until

    def on_restart(self, listener: Callable[[], None]) -> None:
        """Call `listener` when Redis comes back empty-handed: a different server run than before."""
        self._restart_listeners.append(listener)

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call `listener` when Redis answers again after a failure (anything announced meanwhile was lost)."""
        self._recovery_listeners.append(listener)

    async def run(
        self,
        operation: str,
        action: Callable[[Redis], Awaitable[T]],
        *,
        background: bool = False,
        even_if_down: bool = False,
    ) -> T:
        """`action(redis)` within the call or background timeout; raises SharedUnavailable instead of waiting.
        `even_if_down`: try even within `retry_after` of a failure (freeing a lock: the failure may have been
        one command's, and a lock left held stalls its next taker for the whole lease)."""
        label = operation if operation in OPERATIONS else "other"
        if self._clock() < self._down_until and not even_if_down:
            self._count(label, "skipped")
            raise SharedUnavailable(f"redis unavailable ({self._last_error})")
        timeout = self.settings.background_timeout if background else self.settings.op_timeout
        try:
            async with asyncio.timeout(timeout):
                result = await action(self.redis)
        except (TimeoutError, RedisError, OSError) as exc:
            raise_if_cancelling()
            code = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._count(label, "timeout" if code == "timeout" else "error")
            self._failed(f"{operation}: {code}")
            raise SharedUnavailable(f"redis {operation} failed: {code}") from exc
        raise_if_cancelling()
        self._count(label, "ok")
        if not self._up:
            self._recovered()
        return result

    def rejected(self, what: str) -> None:
        """A value read from Redis failed its signature (forged, another cluster's or version's) and was ignored."""
        self._count(what if what in SIGNED else "other", "rejected")
        now = self._clock()
        if now - self._rejection_logged_at >= REJECTION_LOG_SECONDS:
            self._rejection_logged_at = now
            logger.warning(
                "redis: an unsigned or forged %s was ignored (another cluster's or version's, or written by someone "
                'with access to this Redis); vapi_proxy_redis_operations_total{result="rejected"} counts them',
                what,
            )

    def _failed(self, error: str) -> None:
        if self._up or self._last_error is None:
            logger.warning("redis unavailable (%s); replicas fall back to local state", error)
        self._up = False
        self._last_error = error
        self._down_until = self._clock() + self.settings.retry_after
        self._metrics.redis_up.set(0)
        self.start_probe()

    def _recovered(self) -> None:
        was_down = self._last_error is not None
        self._up = True
        self._last_error = None
        self._down_until = 0.0
        self._metrics.redis_up.set(1)
        if was_down:
            logger.info("redis is back")
            for listener in self._recovery_listeners:
                listener()

    async def ping(self) -> bool:
        """One health check: PING plus the server's run id, whatever the health state says."""
        try:
            async with asyncio.timeout(max(self.settings.op_timeout * 4, self.settings.connect_timeout)):
                info: dict[str, Any] = await self.redis.info("server")
        except (TimeoutError, RedisError, OSError) as exc:
            raise_if_cancelling()
            self._count("ping", "timeout" if isinstance(exc, TimeoutError) else "error")
            self._failed(f"ping: {'timeout' if isinstance(exc, TimeoutError) else type(exc).__name__}")
            return False
        self._count("ping", "ok")
        run_id = str(info.get("run_id", ""))
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        self._recovered()
        if restarted:
            logger.warning("redis restarted (new run id): shared state is rebuilt from this replica's")
            for listener in self._restart_listeners:
                listener()
        return True

    def start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_up(), name="redis-probe")

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(max(self._down_until - self._clock(), 0.05))
            if await self.ping():
                return

    async def run_monitor(self, interval: float = 1.0) -> None:
        """Ping every `interval` seconds until cancelled (app lifespan): keeps health and run id current."""
        while True:
            await self.ping()
            await asyncio.sleep(interval)

    def status(self) -> dict[str, object]:
        """For /readyz: never makes the proxy unready, since every replica works without Redis."""
        return {"redis": "ok" if self.up else "degraded", "server": self.settings.describe(), "error": self._last_error}

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.redis.aclose()

    def _count(self, operation: str, result: str) -> None:
        self._metrics.redis_operations.labels(operation=operation, result=result).inc()
