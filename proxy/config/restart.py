"""The reload rule: a setting takes effect everywhere on reload, or nowhere until a restart.

Settings read once at start (the routes' paths, uvicorn's shutdown timings, the Nango client, its caches
and index, the Redis connection of the shared state) cannot follow a reload. A reloaded snapshot therefore
keeps their running values, so no part of the proxy sees the new value while another still acts on the old
one, and the reload names them as waiting for a restart. Everything else is read from the snapshot on each
use and takes effect at once.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from msgspec.structs import replace

from proxy.config.models import NangoSettings, RedisSection, ServerSettings
from proxy.config.snapshot import Config

__all__ = ["LIVE_NANGO", "RESTART_ONLY_SERVER", "keep_running_redis", "keep_running_server", "keep_running_values"]

RESTART_ONLY_SERVER = (
    "path",
    "webhook_path",
    "drain_seconds",
    "shutdown_delay_seconds",
    # uvicorn's settings and the connection limits (proxy/http/connections.py) are fixed when the listener starts.
    "max_header_bytes",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "send_timeout_seconds",
    "keepalive_timeout_seconds",
    "max_connections",
    "max_connections_per_address",
    "forwarded_allow_ips",
)
# The webhook handler reads its keys per request: a rotation must not wait for a restart.
LIVE_NANGO = ("webhook_signing_keys",)

S = TypeVar("S", bound=msgspec.Struct)


def keep_running_values(
    running: Config, server: ServerSettings, nango: NangoSettings
) -> tuple[ServerSettings, NangoSettings, tuple[str, ...]]:
    """`server` and `nango` with every restart-only setting at its running value, and the YAML keys
    whose new value therefore waits for a restart."""
    server, waiting = _keep("server", running.server, server, RESTART_ONLY_SERVER)
    restart_only_nango = tuple(name for name in NangoSettings.__struct_fields__ if name not in LIVE_NANGO)
    nango, waiting_nango = _keep("nango", running.nango, nango, restart_only_nango)
    return server, nango, waiting + waiting_nango


def keep_running_server(running: ServerSettings, server: ServerSettings) -> tuple[ServerSettings, tuple[str, ...]]:
    """An agency file's `server` section: the same rule, before its tenants are built around it."""
    return _keep("server", running, server, RESTART_ONLY_SERVER)


def keep_running_redis(running: Config, redis: RedisSection) -> tuple[RedisSection, tuple[str, ...]]:
    """The whole `redis` section is read once, when the shared state connects (`proxy.app`)."""
    return _keep("redis", running.redis, redis, RedisSection.__struct_fields__)


def _keep(section: str, running: S, new: S, restart_only: tuple[str, ...]) -> tuple[S, tuple[str, ...]]:
    waiting: list[str] = []
    kept: dict[str, object] = {}
    for name in restart_only:
        old = getattr(running, name)
        if getattr(new, name) != old:
            waiting.append(f"{section}.{_yaml_name(type(new), name)}")
            kept[name] = old
    return (replace(new, **kept) if kept else new), tuple(waiting)


def _yaml_name(model: type[msgspec.Struct], field: str) -> str:
    index = model.__struct_fields__.index(field)
    return model.__struct_encode_fields__[index]
