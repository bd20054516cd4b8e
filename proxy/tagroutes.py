"""Routes made from Nango connection tags: what a call to a tagged line gets, with the configured defaults.

A tagged connection's user is the YAML user whose `nango_user_id` is the connection's user tag, when
there is one (YAML keeps precedence: name, time zone, template, assistant, variables, a fixed
connection id); otherwise a user made from the tags: the name tag (else the user id), the time-zone
tag (else the top-level `timezone`), the template tag when it names a template (else
`default_template`). Calendar and fallbacks are the global ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import ZoneInfo

from proxy.config.snapshot import Config, Route, User
from proxy.lines import LineMatch
from proxy.routing import RouteKeys

__all__ = ["route_source", "tagged_route", "yaml_users_by_nango_id"]

_NO_KEYS = RouteKeys()


def yaml_users_by_nango_id(config: Config) -> Mapping[str, User]:
    """YAML users by the user tag their Nango connections carry; built once per snapshot."""
    key = ("yaml_users_by_nango_id",)
    users = config.prepared.get(key)
    if users is None:
        users = config.prepared[key] = {user.nango_user_id: user for user in config.users.values()}
    return users  # type: ignore[return-value]


def _zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    if name is None:
        return default
    try:
        return ZoneInfo(name)  # cached by zoneinfo; a bad name is refused, never a path
    except Exception:
        return default


def tagged_route(config: Config, line: LineMatch) -> Route:
    """The route a call to `line` follows."""
    conn = line.connection
    tags = conn.route
    user_id = conn.user_id or f"nango:{conn.connection_id}"
    user = yaml_users_by_nango_id(config).get(conn.user_id) if conn.user_id is not None else None
    tag_template = tags.template if tags is not None and tags.template in config.templates else None
    if user is None:
        user = User(
            id=user_id,
            name=(tags.name if tags is not None else None) or user_id,
            timezone=_zone(tags.timezone if tags is not None else None, config.timezone),
            connection_id=None,
            nango_user_id=user_id,
        )
    return Route(
        name=f"nango:{conn.connection_id}",
        user=user,
        keys=_NO_KEYS,
        template=user.template or tag_template or config.default_template,
        overrides=(user.assistant,) if user.assistant else (),
        variables={**config.variables, **user.variables} if user.variables else config.variables,
        calendar=config.calendar,
        fallbacks=config.fallbacks,
    )


def route_source(line: LineMatch) -> str:
    """Where a tagged route came from, for `resolve` and the call log."""
    return f"nango connection {line.connection.connection_id}, tag {line.tag}={line.value} ({line.source})"
