"""The state one app instance holds: the config snapshot served now and the parts built around it.

In agency mode (proxy.config.tenants) each tenant has a `Runtime` of its own (its snapshot, Nango
client, directory, service, budgets, breaker, locks and shared state under its own Redis prefix), so
nothing one tenant caches or counts is seen by another; `Tenants` holds them by tenant id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from proxy.config import Agency, Config, ConfigError
from proxy.http.peers import PeerBound
from proxy.logs import CallLog, tenant_context
from proxy.metrics import Metrics
from proxy.nango.client import NangoClient, RequestGate
from proxy.nango.directory import ConnectionDirectory
from proxy.reload import ConfigWatcher
from proxy.shared import Cluster, RedisSettings
from proxy.vapi.service import CallService

__all__ = ["Runtime", "Tenants", "tenant_redis"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything one app instance (or one agency tenant) holds. Created in `create_app`, started by the
    lifespan (or, for a tenant a reload adds, by `Tenants.apply`)."""

    config: Config
    metrics: Metrics
    insecure: bool = False
    http: httpx.AsyncClient | None = None
    directory: ConnectionDirectory | None = None
    service: CallService | None = None
    draining: bool = False
    config_error: ConfigError | None = None  # why the file on disk is not the one served
    unauthenticated_reads: PeerBound = field(default_factory=PeerBound)
    watcher: ConfigWatcher | None = None
    cluster: Cluster | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # What the directory's caches, breaker and index refresh count time with (tests move it by hand).
    clock: Callable[[], float] = time.monotonic

    def start(self, http: httpx.AsyncClient, call_log: CallLog, redis: RedisSettings) -> None:
        """Build the Nango client, directory, service and (with Redis) shared state around the snapshot;
        start their background work, each task logging under this runtime's tenant."""
        self.http = http
        nango = self.config.nango
        gate = RequestGate.for_settings(nango)  # one cap for Nango lookups and calendar tools alike
        client = NangoClient(http, nango, self.metrics, gate=gate) if nango.secret_key else None
        self.directory = ConnectionDirectory(client, nango, self.metrics, clock=self.clock)
        self.service = CallService(self.directory, self.metrics, http=http, call_log=call_log, gate=gate)
        with tenant_context(self.config.tenant):  # tasks copy the context: their lines name the tenant
            if redis.enabled:
                self.cluster = Cluster(redis, self.directory, client, nango, self.metrics)
                self.service.locks = self.cluster.user_locks  # bookings: one user at a time, cluster-wide
                self.service.counts = self.cluster.counts  # per-call bounds, cluster-wide
                self.background.extend(self.cluster.start())  # the cluster's index replaces the refresher
            elif client is not None and nango.index_refresh_interval > 0:
                self.background.append(asyncio.create_task(self.directory.run_index_refresher()))

    async def stop(self) -> None:
        self.draining = True
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.directory is not None:
            await self.directory.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()

    def apply(self, config: Config) -> None:
        """Swap in a validated snapshot; requests already running keep the one they started with."""
        self.config = config
        self.config_error = None
        if self.directory is not None:
            self.directory.retain_users({user.nango_user_id for user in config.users.values()})
            if self.cluster is not None:
                self.cluster.wake()  # the cluster's index: load a newer one, or refresh if due
            else:
                self.directory.start_index_refresh()
        self.metrics.set_config_version(config.version)
        self.metrics.deadline.set(config.server.deadline_seconds)


def tenant_redis(settings: RedisSettings, tenant: str | None) -> RedisSettings:
    """A tenant's shared state: every key and channel under its own prefix, so the same user id or line
    in two tenants are two users, and one tenant's announcements reach only its own replicas."""
    return settings if tenant is None else dataclasses.replace(settings, prefix=f"{settings.prefix}tenant:{tenant}:")


# What the app does when a tenant starts or stops serving (its routes in the fast path).
Started = Callable[[Runtime], None]


@dataclass
class Tenants:
    """Agency mode: a `Runtime` per tenant, by id. `config` is the agency snapshot last applied; a tenant
    whose part of it is invalid keeps its running runtime, with the error in its `config_error`."""

    config: Agency
    metrics: Metrics  # the deployment's own: connection refusals and the agency file's reloads
    insecure: bool = False
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    errors: dict[str, ConfigError] = field(default_factory=dict)  # tenants never loaded
    config_error: ConfigError | None = None  # the agency file itself is invalid
    draining: bool = False
    unauthenticated_reads: PeerBound = field(default_factory=PeerBound)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    watcher: ConfigWatcher | None = None
    http: httpx.AsyncClient | None = None
    call_log: Callable[[str], CallLog] | None = None
    redis: RedisSettings = field(default_factory=RedisSettings)
    on_start: list[Started] = field(default_factory=list)
    on_stop: list[Started] = field(default_factory=list)

    def __post_init__(self) -> None:
        for tenant, config in self.config.tenants.items():
            self.runtimes[tenant] = self._runtime(config)
        self.errors = dict(self.config.errors)

    def _runtime(self, config: Config) -> Runtime:
        runtime = Runtime(config=config, metrics=Metrics(), insecure=self.insecure)
        runtime.metrics.set_config_version(config.version)
        runtime.metrics.deadline.set(config.server.deadline_seconds)
        return runtime

    def start(self, http: httpx.AsyncClient, call_log: Callable[[str], CallLog], redis: RedisSettings) -> None:
        self.http, self.call_log, self.redis = http, call_log, redis
        for tenant, runtime in self.runtimes.items():
            self._start(tenant, runtime)

    def _start(self, tenant: str, runtime: Runtime) -> None:
        assert self.http is not None and self.call_log is not None
        runtime.start(self.http, self.call_log(tenant), tenant_redis(self.redis, tenant))
        for started in self.on_start:
            started(runtime)

    async def stop(self) -> None:
        self.draining = True
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.gather(*(runtime.stop() for runtime in self.runtimes.values()))

    async def apply(self, agency: Agency) -> None:
        """Apply a reloaded agency file tenant by tenant: a valid tenant's new snapshot is swapped in, a new
        one starts serving, a removed one stops; an invalid one keeps its running snapshot."""
        self.config = agency
        self.config_error = None
        stopped = [tenant for tenant in self.runtimes if tenant not in agency.sources]
        for tenant in stopped:
            runtime = self.runtimes.pop(tenant)
            for stopping in self.on_stop:
                stopping(runtime)
            await runtime.stop()
            logger.info("tenant stopped serving", extra={"fields": {"tenant": tenant}})
        self.errors = {tenant: error for tenant, error in agency.errors.items() if tenant not in self.runtimes}
        for tenant, error in agency.errors.items():
            if (kept := self.runtimes.get(tenant)) is not None:
                if kept.config_error is None or str(kept.config_error) != str(error):
                    kept.metrics.config_reloads.labels("invalid").inc()
                kept.config_error = error  # its running config stays
                kept.metrics.config_file_invalid.set(1)
        for tenant, config in agency.tenants.items():
            running = self.runtimes.get(tenant)
            if running is None:
                running = self.runtimes[tenant] = self._runtime(config)
                if self.http is not None:
                    self._start(tenant, running)
                logger.info("tenant started serving", extra={"fields": {"tenant": tenant}})
                continue
            if running.config is not config:
                running.apply(config)
                running.metrics.config_reloads.labels("ok").inc()
            running.config_error = None
            running.metrics.config_file_invalid.set(0)
