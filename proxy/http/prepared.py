"""Prepared answers: per config snapshot, each route's assistant answer built once and filled in per call,
under one byte budget for the process (every agency tenant's snapshots share it)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from proxy.config import Config, Route
from proxy.vapi.assistant import calendar_answer_format

__all__ = ["PREPARED_BYTES_LIMIT", "PreparedAnswer", "PreparedBudget", "PreparedSnapshot"]

# Prepared answers kept per snapshot, in bytes, before they are dropped and rebuilt on demand: a routing
# file of 100,000 users must not grow by one answer per user ever called.
PREPARED_BYTES_LIMIT = 32 * 1_048_576


class PreparedAnswer:
    """One route's answer, ready to fill in, and what its call line says about the route."""

    __slots__ = ("fixed_connection", "format", "rules", "timezone", "user_id")

    def __init__(self, config: Config, route: Route) -> None:
        self.format = calendar_answer_format(config, route)
        self.timezone = route.user.timezone
        self.user_id = route.user.id
        connection_id = route.user.connection_id
        self.fixed_connection = orjson.dumps(connection_id)[1:-1] if connection_id is not None else None
        self.rules: dict[str, str] = {}


class PreparedBudget:
    """The bytes of prepared answers kept by every snapshot the fast path serves (in agency mode, every
    tenant's): one bound for the process, however many tenants. Past it, every snapshot drops its answers."""

    __slots__ = ("drop", "used")

    def __init__(self) -> None:
        self.used = 0
        self.drop: Callable[[], None] = lambda: None


class PreparedSnapshot:
    """What the fast path derives from one config snapshot."""

    __slots__ = ("budget", "config", "max_body", "prepared", "prepared_bytes", "secrets")

    def __init__(self, config: Config, budget: PreparedBudget) -> None:
        self.config = config
        self.budget = budget
        self.max_body = config.server.max_body_bytes
        # Empty without shared secrets (bearer, HMAC or insecure only): the general path takes every call.
        self.secrets = config.auth.shared_secrets
        self.prepared: dict[int, PreparedAnswer] = {}  # by id(route): routes live exactly as long as the snapshot
        self.prepared_bytes = 0

    def __repr__(self) -> str:  # never the secrets
        return f"PreparedSnapshot(version={self.config.version!r}, prepared={len(self.prepared)})"

    def route(self, route: Route) -> PreparedAnswer:
        prepared = self.prepared.get(id(route))
        if prepared is None:
            prepared = PreparedAnswer(self.config, route)
            if self.budget.used + len(prepared.format) > PREPARED_BYTES_LIMIT:
                self.budget.drop()
            self.prepared[id(route)] = prepared
            self.prepared_bytes += len(prepared.format)
            self.budget.used += len(prepared.format)
        return prepared

    def drop(self) -> None:
        self.budget.used -= self.prepared_bytes
        self.prepared.clear()
        self.prepared_bytes = 0
