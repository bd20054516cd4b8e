"""Routing that travels with the connection: which Nango connection tags name a user's Vapi line.

Nango's tag rules (NangoHQ/nango `packages/shared/lib/services/tags/schema.ts`): at most 10 keys per
connection, the auto-generated `end_user_*` tags included; keys 1-64 characters, a letter first, then
`[A-Za-z0-9_\\-./]`, stored lowercased; values are strings of 1-255 characters, kept as they are.
Routing is opt-in: with no `nango.tag_routing` section, tags route nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from proxy.config.models import TagRouting
from proxy.config.tags import TAG_MAX_COUNT, TAG_VALUE_MAX_LENGTH, tag_key_problem, tag_value_problem
from proxy.numbers import normalize_number

__all__ = [
    "TAG_MAX_COUNT",
    "TAG_VALUE_MAX_LENGTH",
    "TagRoute",
    "TagRouting",
    "read_tag_route",
    "tag_key_problem",
    "tag_value_problem",
]

# A Vapi phone-number id is a UUID; anything a tag value can hold is accepted, but bounded and printable.
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class TagRoute:
    """What one connection's tags say about routing: its Vapi line and the user's defaults."""

    number: str | None  # E.164
    phone_number_id: str | None
    template: str | None = None
    name: str | None = None
    timezone: str | None = None

    def claims(self) -> Iterator[tuple[str, str]]:
        """(kind, value) routing keys this connection claims: kinds "to" and "phone_number_id"."""
        if self.number is not None:
            yield "to", self.number
        if self.phone_number_id is not None:
            yield "phone_number_id", self.phone_number_id


def _value(tags: Mapping[str, object], key: str | None) -> str | None:
    if key is None:
        return None
    value = tags.get(key)
    if isinstance(value, str) and 0 < len(value) <= TAG_VALUE_MAX_LENGTH and _PRINTABLE.fullmatch(value):
        return value
    return None


def read_tag_route(tags: object, routing: TagRouting) -> TagRoute | None:
    """The routing a connection's `tags` carry; None when they claim no line (or are not a mapping)."""
    if not isinstance(tags, dict):
        return None
    raw_number = _value(tags, routing.number_tag)
    number = normalize_number(raw_number) if raw_number is not None else None
    phone_number_id = _value(tags, routing.phone_number_id_tag)
    if number is None and phone_number_id is None:
        return None
    return TagRoute(
        number=number,
        phone_number_id=phone_number_id.strip() or None if phone_number_id else None,
        template=_value(tags, routing.template_tag),
        name=_value(tags, routing.name_tag),
        timezone=_value(tags, routing.timezone_tag),
    )
