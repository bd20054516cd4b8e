"""The `redis` section: where the optional shared state lives (see proxy.shared), and how long a call waits on it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from msgspec import Meta
from msgspec.structs import force_setattr

from proxy.config.sections import Model, doc
from proxy.secret import Secret

__all__ = ["REDIS_SCHEMES", "RedisSection", "redis_url_location", "redis_url_problem"]

# -- redis ------------------------------------------------------------------------------------

REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisSection(Model, frozen=True, kw_only=True):
    """Optional: state several replicas share through Redis or Valkey (docs/scaling.md). Read at start
    only: a change waits for a restart. `url` and `key_prefix` left unset come from the REDIS_URL and
    REDIS_KEY_PREFIX environment variables; no url either way: nothing is shared."""

    # proxy.shared.store.RedisSettings.from_config applies the environment; proxy.config.restart the reload rule.

    url: Annotated[
        Secret | None,
        doc(
            "redis://[user:password@]host:port/db, rediss:// for TLS, unix:// (usually ${REDIS_URL}); a secret: "
            "never shown. Unset: the REDIS_URL environment variable; neither: no shared state"
        ),
    ] = None
    key_prefix: Annotated[
        Annotated[str, Meta(min_length=1, max_length=64)] | None,
        doc(
            "prefix of every key and channel, so clusters can share one Redis "
            "(unset: REDIS_KEY_PREFIX, else vapi-proxy:)"
        ),
    ] = None
    call_timeout_seconds: Annotated[
        float, doc("longest a call waits on Redis before going on with this replica's own state", ge=0.005, le=1.0)
    ] = 0.05
    background_timeout_seconds: Annotated[
        float, doc("for work no call waits on: index pages, announcements, locks while indexing", ge=0.1, le=60.0)
    ] = 5.0
    connect_timeout_seconds: Annotated[float, doc("to open a connection (TLS included)", ge=0.01, le=10.0)] = 0.25
    retry_seconds: Annotated[
        float, doc("after a failure Redis is left alone this long (a probe pings meanwhile)", ge=0.1, le=60.0)
    ] = 1.0
    max_connections: Annotated[int, doc("connections to Redis per process", ge=4, le=1000)] = 32

    def __post_init__(self) -> None:
        if self.url is not None and not self.url:
            force_setattr(self, "url", None)  # an unset ${REDIS_URL:-}: the same as no url
        if self.url is not None and (problem := redis_url_problem(str(self.url))) is not None:
            raise ValueError(f"url {problem}")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never quote it (it usually carries a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "is not a valid URL (not shown: it may hold a password)"
    if parts.scheme not in REDIS_SCHEMES:
        return "must start with redis://, rediss:// (TLS) or unix:// (not shown: it may hold a password)"
    if parts.scheme != "unix" and not parts.hostname:
        return "names no host (not shown: it may hold a password)"
    return None


def redis_url_location(url: str) -> str:
    """Scheme, host and port of a valid Redis URL, for logs, /readyz and `check`; never the password."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
