"""The reload rule: a setting takes effect everywhere on reload, or nowhere until a restart.

Settings read once at start (the routes' paths, uvicorn's shutdown timings, the Nango client, its caches
and index) cannot follow a reload. A reloaded snapshot therefore keeps their running values, so no part
of the proxy sees the new value while another still acts on the old one, and the reload names them as
waiting for a restart. Everything else is read from the snapshot on each use and takes effect at once.
"""

from __future__ import annotations

from msgspec.structs import replace

from proxy.config.models import NangoSettings, ServerSettings
from proxy.config.snapshot import Config

__all__ = ["LIVE_NANGO", "RESTART_ONLY_SERVER", "keep_running_values"]

RESTART_ONLY_SERVER = (
    "path",
    "webhook_path",
    "drain_seconds",
    "shutdown_delay_seconds",
    # uvicorn's settings and the connection limits (proxy/connections.py) are fixed when the listener starts.
    "max_header_bytes",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "send_timeout_seconds",
    "keepalive_timeout_seconds",
    "max_connections",
    "forwarded_allow_ips",
)
# The webhook handler reads its keys per request: a rotation must not wait for a restart.
LIVE_NANGO = ("webhook_signing_keys",)


def keep_running_values(
    running: Config, server: ServerSettings, nango: NangoSettings
) -> tuple[ServerSettings, NangoSettings, tuple[str, ...]]:
    """`server` and `nango` with every restart-only setting at its running value, and the YAML keys
    whose new value therefore waits for a restart."""
    waiting: list[str] = []
    kept: dict[str, object] = {}
    for name in RESTART_ONLY_SERVER:
        old = getattr(running.server, name)
        if getattr(server, name) != old:
            waiting.append(f"server.{name}")
            kept[name] = old
    if kept:
        server = replace(server, **kept)
    kept = {}
    for info in NangoSettings.__struct_fields__:
        if info in LIVE_NANGO:
            continue
        old = getattr(running.nango, info)
        if getattr(nango, info) != old:
            waiting.append(f"nango.{_yaml_name(NangoSettings, info)}")
            kept[info] = old
    if kept:
        nango = replace(nango, **kept)
    return server, nango, tuple(waiting)


def _yaml_name(model: type[NangoSettings], field: str) -> str:
    index = model.__struct_fields__.index(field)
    return model.__struct_encode_fields__[index]
