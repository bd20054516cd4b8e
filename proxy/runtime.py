"""The state one app instance holds: the config snapshot served now and the parts built around it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from proxy.config import Config, ConfigError
from proxy.http.peers import PeerBound
from proxy.metrics import Metrics
from proxy.nango.directory import ConnectionDirectory
from proxy.reload import ConfigWatcher
from proxy.shared import Cluster
from proxy.vapi.service import CallService

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """Everything one app instance holds. Created in `create_app`, filled in by the lifespan."""

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
