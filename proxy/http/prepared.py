"""Prepared answers: per config snapshot, each shape of assistant answer built once and filled in per call,
under one byte budget for the process (every agency tenant's snapshots share it).

Routes with the same template, overrides, calendar plan and variables answer with the same format; what
differs between them (the user's id and name, the route's name: `route_fills`), the clock and the
connection id are filled in per call. So a routing file of 100,000 users holds a few formats, not one per
user called: nothing is kept per route, and the budget bounds only what distinct shapes cost.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config import Config, Route
from proxy.vapi.assistant import calendar_answer_format

__all__ = ["PREPARED_BYTES_LIMIT", "PreparedBudget", "PreparedSnapshot", "shape_key"]

# Prepared formats kept, in bytes, before they are dropped and rebuilt on demand: a file whose every user
# has variables of their own has a shape per user.
PREPARED_BYTES_LIMIT = 32 * 1_048_576

ShapeKey = tuple[str, tuple[int, ...], int, int]


def shape_key(route: Route) -> ShapeKey:
    """What a route's format depends on besides `route_fills`: by identity, as the snapshot keeps the objects
    (routes without variables of their own share the config's, and plans are shared as the config builds them)."""
    return route.template, tuple(map(id, route.overrides)), id(route.calendar), id(route.variables)


class PreparedBudget:
    """The bytes of prepared formats kept by every snapshot the fast path serves (in agency mode, every
    tenant's): one bound for the process, however many tenants. Past it, every snapshot drops its formats."""

    __slots__ = ("drop", "used")

    def __init__(self) -> None:
        self.used = 0
        self.drop: Callable[[], None] = lambda: None


class PreparedSnapshot:
    """What the fast path derives from one config snapshot."""

    __slots__ = ("budget", "config", "formats", "formats_bytes", "max_body", "secrets")

    def __init__(self, config: Config, budget: PreparedBudget) -> None:
        self.config = config
        self.budget = budget
        self.max_body = config.server.max_body_bytes
        # Empty without shared secrets (bearer, HMAC or insecure only): the general path takes every call.
        self.secrets = config.auth.shared_secrets
        self.formats: dict[ShapeKey, bytes] = {}
        self.formats_bytes = 0

    def __repr__(self) -> str:  # never the secrets
        return f"PreparedSnapshot(version={self.config.version!r}, formats={len(self.formats)})"

    def format_for(self, route: Route) -> bytes:
        key = shape_key(route)
        answer_format = self.formats.get(key)
        if answer_format is None:
            answer_format = calendar_answer_format(self.config, route)
            if self.budget.used + len(answer_format) > PREPARED_BYTES_LIMIT:
                self.budget.drop()  # every snapshot's formats, this one's included
            self.formats[key] = answer_format
            self.formats_bytes += len(answer_format)
            self.budget.used += len(answer_format)
        return answer_format

    def drop(self) -> None:
        self.budget.used -= self.formats_bytes
        self.formats.clear()
        self.formats_bytes = 0
