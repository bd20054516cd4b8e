"""Prometheus metrics, one registry per app instance (no module-level mutable state).

With `serve --workers N` the workers count into one directory (prometheus-client's multiprocess mode,
PROMETHEUS_MULTIPROC_DIR, set up by proxy.server) and /metrics adds them up: counters and histograms
are summed over every worker that ever ran, gauges show the largest value among the live workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Self

from prometheus_client import CollectorRegistry, Gauge, generate_latest, multiprocess, values
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "render_tenants"]

# Vapi drops an assistant-request after 7.5 s: buckets are dense below that and stop just above it.
# Gauges across workers: the largest value among the live ones (each worker has its own index and config).
LIVE_MAX: Literal["livemax"] = "livemax"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 7.5, 10.0)


class _LabelCache:
    """`labels()` with a dict in front. prometheus_client validates the values and takes a lock on every
    call (about 1 us, most of what a count costs); the child for given values never changes, so the
    hot path looks it up once. Only for metrics whose children are never removed."""

    _children: dict[object, Any]

    def labels(self, *values: Any, **named: Any) -> Self:
        key = values or tuple(named.items())
        try:
            child: Self = self._children[key]
        except AttributeError:
            self._children = {}
        except KeyError:
            pass
        else:
            return child
        child = super().labels(*values, **named)  # type: ignore[misc]
        self._children[key] = child
        return child


class Counter(_LabelCache, _Counter):
    pass


class Histogram(_LabelCache, _Histogram):
    pass


class Metrics:
    """Every metric the proxy exports. Pass one instance to whatever needs to count."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # Decided by prometheus_client when it was imported (PROMETHEUS_MULTIPROC_DIR set then), not now.
        self.multiprocess = values.ValueClass is not values.MutexValue
        self._version: str | None = None
        # Counts kept outside prometheus-client for speed (proxy.http.fastpath) are added in before any render.
        self.before_render: list[Callable[[], None]] = []
        r = self.registry
        self.assistant_requests = Counter(
            "vapi_proxy_assistant_requests",
            "assistant-requests, by outcome (assistant, take_message, transfer, rejected, unauthorised) and reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.assistant_request_latency = Histogram(
            "vapi_proxy_assistant_request_seconds",
            "Time to answer an assistant-request.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.server_messages = Counter(
            "vapi_proxy_server_messages", "Vapi server messages received, by type.", ["type"], registry=r
        )
        self.tool_calls = Counter(
            "vapi_proxy_tool_calls",
            "Calendar tool calls served in proxy mode, by tool and result.",
            ["tool", "result"],
            registry=r,
        )
        self.bookings_unconfirmed = _Counter(
            "vapi_proxy_bookings_unconfirmed",
            "Bookings whose insert got no answer in time and could not be read back: the event may exist "
            "without the caller having been told. Alert on any increase and check the logged call id.",
            registry=r,
        )
        self.nango_requests = Counter(
            "vapi_proxy_nango_requests",
            "Requests to Nango, by operation and result (ok, not_found, rate_limited, http_error, timeout, ...).",
            ["operation", "result"],
            registry=r,
        )
        self.cache_events = Counter(
            "vapi_proxy_connection_cache",
            "Connection lookups, by event (fixed, index_hit, hit, miss, negative_hit, recent_failure, "
            "breaker_open, stale_served, timeout).",
            ["event"],
            registry=r,
        )
        self.index_size = Gauge(
            "vapi_proxy_nango_index_connections", "Users in the Nango index.", registry=r, multiprocess_mode=LIVE_MAX
        )
        self.tagged_lines = Gauge(
            "vapi_proxy_tag_routed_lines",
            "Lines (numbers, Vapi phone-number ids) routed by connection tags.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.line_conflicts = Gauge(
            "vapi_proxy_tag_routing_conflicts",
            "Lines claimed by more than one connection's tags.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.index_age = Gauge(
            "vapi_proxy_nango_index_refreshed_timestamp_seconds",
            "When the Nango index was last refreshed.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.config_reloads = Counter(
            "vapi_proxy_config_reloads",
            "Config reload attempts, by result (ok, invalid, unchanged).",
            ["result"],
            registry=r,
        )
        self.config_info = Gauge(
            "vapi_proxy_config_info",
            "The loaded config: 1 for its version hash.",
            ["version"],
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.config_file_invalid = Gauge(
            "vapi_proxy_config_file_invalid",
            "1 while the config file on disk is invalid (the last good config keeps serving), else 0.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.deadline = Gauge(
            "vapi_proxy_deadline_seconds",
            "server.deadline_seconds of the loaded config: the answer budget the latency alert compares with.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.webhooks = Counter(
            "vapi_proxy_nango_webhooks",
            "Nango webhooks received, by type/operation and result.",
            ["type", "result"],
            registry=r,
        )

        self.redis_up = Gauge(
            "vapi_proxy_redis_up",
            "1 while the shared state's Redis answers; 0 while replicas fall back to local state or without REDIS_URL.",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.redis_operations = Counter(
            "vapi_proxy_redis_operations",
            "Redis operations of the shared state, by operation and result (ok, timeout, error, skipped; "
            "rejected: an announcement, overlay entry or index read from Redis that failed its signature).",
            ["operation", "result"],
            registry=r,
        )
        self.redis_fanout_delay = Histogram(
            "vapi_proxy_redis_fanout_delay_seconds",
            "From another replica announcing a change (webhook, index, breaker) to this replica receiving it.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.connections_refused = Counter(
            "vapi_proxy_connections_refused",
            "Connections the connection limits closed or refused, by kind (too_many_connections, evicted, "
            "header_too_large, header_timeout, body_timeout, send_timeout, idle, invalid_request, pipeline_too_deep).",
            ["kind"],
            registry=r,
        )

    def set_config_version(self, version: str) -> None:
        if not self.multiprocess:
            self.config_info.clear()
        elif self._version is not None and self._version != version:
            # Multiprocess mode cannot clear a child (its value stays in this worker's file): zero it instead.
            self.config_info.labels(version=self._version).set(0)
        self.config_info.labels(version=version).set(1)
        self._version = version

    def render(self) -> bytes:
        for flush in self.before_render:
            flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """This worker is stopping: its gauges leave the totals (its counts stay in them)."""
        for flush in self.before_render:
            flush()
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# Agency mode: the deployment's own series, unlabelled beside the tenants' (the listener's refusals, the
# agency file's reloads); every other series is a tenant's.
DEPLOYMENT_FAMILIES = frozenset(
    {"vapi_proxy_connections_refused", "vapi_proxy_config_reloads", "vapi_proxy_config_file_invalid"}
)


class _TenantLabelled:
    """A collector of every tenant's registry with a `tenant` label added, one family per metric name;
    the label's values are the configured tenants' ids, so its cardinality is theirs."""

    def __init__(self, deployment: Metrics, tenants: Mapping[str, Metrics]) -> None:
        self.deployment = deployment
        self.tenants = tenants

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}

        def add(family: Metric, tenant: str | None) -> None:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                labels = sample.labels if tenant is None else {"tenant": tenant, **sample.labels}
                merged.samples.append(sample._replace(labels=labels))

        for family in self.deployment.registry.collect():
            if family.name in DEPLOYMENT_FAMILIES:
                add(family, None)
        for tenant, metrics in sorted(self.tenants.items()):
            for family in metrics.registry.collect():
                add(family, tenant)
        return iter(families.values())


def render_tenants(deployment: Metrics, tenants: Mapping[str, Metrics]) -> bytes:
    """/metrics in agency mode (one process: `serve` runs an agency file with one worker)."""
    for metrics in (deployment, *tenants.values()):
        for flush in metrics.before_render:
            flush()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_TenantLabelled(deployment, tenants))
    return generate_latest(registry)
