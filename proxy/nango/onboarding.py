"""Onboarding through Nango for the business's admins (the CLI): Connect sessions carrying the routing tags,
and assigning or moving a Vapi line on an existing connection.

Nango's API (NangoHQ/nango `packages/server/lib/controllers/connect/postSessions.ts`,
`.../connection/connectionId/patchConnection.ts`): `POST /connect/sessions` takes `tags`;
`PATCH /connections/{connectionId}?provider_config_key=` with `{"tags": {...}}` **replaces** the whole tag
object and answers `{"success": true}`, so a change is read, merged and written. Nango sends no webhook
for a tag change: replicas learn it from a lookup miss, their cache TTL or the next index refresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from proxy.nango.client import Connection, NangoClient
from proxy.nango.tags import TAG_MAX_COUNT, TagRouting, tag_value_problem
from proxy.numbers import normalize_number
from proxy.secret import Secret

__all__ = ["ConnectSession", "OnboardingError", "assign_line", "create_connect_session", "routing_tags"]


@dataclass(frozen=True)
class ConnectSession:
    """A Nango Connect session: `connect_link` is what an admin sends to the user."""

    token: Secret
    connect_link: str
    expires_at: str


class OnboardingError(Exception):
    """An admin request that cannot be carried out as asked; the message says why."""


def _text(data: dict[Any, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a string")
    return value


def routing_tags(routing: TagRouting | None, number: str | None, phone_number_id: str | None) -> dict[str, str]:
    """The tags that put a Vapi line on a connection, per the configured tag keys."""
    tags: dict[str, str] = {}
    if number is not None:
        e164 = normalize_number(number)
        if e164 is None:
            raise OnboardingError(f"not a phone number: {number!r} (write it in E.164, e.g. +14155550100)")
        number = e164
    for value, key, what in (
        (number, routing.number_tag if routing else None, "number"),
        (phone_number_id, routing.phone_number_id_tag if routing else None, "phone-number id"),
    ):
        if value is None:
            continue
        if key is None:
            raise OnboardingError(f"a {what} was given, but nango.tag_routing names no tag key for it")
        if (problem := tag_value_problem(value)) is not None:
            raise OnboardingError(f"{what}: {problem}")
        tags[key] = value
    return tags


async def create_connect_session(
    client: NangoClient,
    user_id: str,
    email: str | None,
    display_name: str | None,
    extra_tags: Mapping[str, str] | None = None,
    integration: str | None = None,
) -> ConnectSession:
    """A Connect session for the user, limited to the calendar integration, tagged with the user id and
    `extra_tags` (e.g. the routing tags): the connection the user makes carries them."""
    # Tags, not the deprecated end_user record; the names match the tags Nango derives from end_user.
    tags = {client.settings.user_tag: user_id}
    if email:
        tags["end_user_email"] = email
    if display_name:
        tags["end_user_display_name"] = display_name
    tags.update(extra_tags or {})
    if len(tags) > TAG_MAX_COUNT:
        raise OnboardingError(f"{len(tags)} tags; Nango allows {TAG_MAX_COUNT} per connection")
    body = {"tags": tags, "allowed_integrations": [integration or client.settings.integration_id]}

    def parse(raw: object) -> ConnectSession:
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict):
            raise ValueError("not a connect session")
        token, link, expires = (_text(data, name) for name in ("token", "connect_link", "expires_at"))
        return ConnectSession(token=Secret(token), connect_link=link, expires_at=expires)

    return await client.request("connect_session", "POST", "/connect/sessions", parse, json=body)


@dataclass(frozen=True)
class TaggedConnection:
    """A connection's whole tag object as Nango holds it now, and the integration it belongs to (a tag write
    names it: the connection id alone is not unique across integrations)."""

    integration: str
    tags: Mapping[str, str]


async def read_tags(client: NangoClient, connection_id: str) -> TaggedConnection:
    """The connection's tags, looked up across the config's integrations."""
    ours = client.settings.integration_ids()

    def parse(body: object) -> TaggedConnection:
        connections = body.get("connections") if isinstance(body, dict) else None
        if not isinstance(connections, list):
            raise ValueError("no connections list")
        for raw in connections:
            if not (isinstance(raw, dict) and raw.get("connection_id") == connection_id):
                continue
            integration = raw.get("provider_config_key")
            if len(ours) > 1 and integration not in ours:
                continue
            tags = raw.get("tags") or {}
            if not isinstance(tags, dict):
                raise ValueError("tags is not an object")
            found = integration if isinstance(integration, str) else ours[0]
            return TaggedConnection(found, {str(k): str(v) for k, v in tags.items()})
        raise OnboardingError(f"no connection {connection_id!r} in integration {' or '.join(map(repr, ours))}")

    params = {**client.scope(), "connectionId": connection_id}
    return await client.request("read_tags", "GET", "/connections", parse, params=params)


async def write_tags(client: NangoClient, connection: str, integration: str, tags: Mapping[str, str]) -> None:
    """Replace the connection's tags with `tags` (Nango's PATCH replaces the whole object)."""
    if len(tags) > TAG_MAX_COUNT:
        raise OnboardingError(f"{len(tags)} tags; Nango allows {TAG_MAX_COUNT} per connection")

    def parse(body: object) -> None:
        if not (isinstance(body, dict) and body.get("success") is True):
            raise ValueError("not a success answer")

    path = f"/connections/{quote(connection, safe='')}"
    params = {"provider_config_key": integration}
    await client.request("patch_tags", "PATCH", path, parse, params=params, json={"tags": dict(tags)})


@dataclass(frozen=True)
class Assignment:
    """What `assign_line` did: the connection that now claims the line, and those it was taken from."""

    connection_id: str
    tags: Mapping[str, str]
    moved_from: tuple[str, ...]


async def assign_line(
    client: NangoClient, connection_id: str, number: str | None, phone_number_id: str | None
) -> Assignment:
    """Put the line on `connection_id` and take it off every other connection that claims it: each
    connection's tags are read, merged and written back, so its other tags survive."""
    routing = client.settings.tag_routing
    wanted = routing_tags(routing, number, phone_number_id)
    if not wanted or routing is None:
        raise OnboardingError("give --number or --phone-number-id (and configure nango.tag_routing)")
    target = await read_tags(client, connection_id)
    current = target.tags
    merged = {**current, **wanted}
    if len(merged) > TAG_MAX_COUNT:
        raise OnboardingError(
            f"connection {connection_id} would carry {len(merged)} tags; Nango allows {TAG_MAX_COUNT} "
            f"(it has: {', '.join(sorted(current))})"
        )
    holders: dict[str, Connection] = {}
    for key, value in wanted.items():
        for conn in await client.find_line_connections(key, value):
            if conn.connection_id != connection_id:
                holders[conn.connection_id] = conn
    await write_tags(client, connection_id, target.integration, merged)
    for other in holders:
        held = await read_tags(client, other)
        kept = {key: value for key, value in held.tags.items() if not (key in wanted and wanted[key] == value)}
        if kept != held.tags:
            await write_tags(client, other, held.integration, kept)
    return Assignment(connection_id, merged, tuple(sorted(holders)))
