"""Nango's tag grammar, which the config's `tag_routing` keys and the values onboarding writes must obey.

From NangoHQ/nango `packages/shared/lib/services/tags/schema.ts`: at most 10 keys per connection, keys
1-64 characters, a letter first, then `[A-Za-z0-9_\\-./]`, stored lowercased; values 1-255 characters.
"""

from __future__ import annotations

import re

__all__ = ["TAG_KEY_MAX_LENGTH", "TAG_MAX_COUNT", "TAG_VALUE_MAX_LENGTH", "tag_key_problem", "tag_value_problem"]

TAG_MAX_COUNT = 10
TAG_KEY_MAX_LENGTH = 64
TAG_VALUE_MAX_LENGTH = 255
_TAG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_\-./]*")


def tag_key_problem(key: str) -> str | None:
    """Why Nango would refuse (or silently lowercase) `key` as a tag key; None when it is fine."""
    if not key or len(key) > TAG_KEY_MAX_LENGTH:
        return f"a tag key has 1-{TAG_KEY_MAX_LENGTH} characters"
    if not _TAG_KEY.fullmatch(key):
        return "a tag key starts with a letter and holds only letters, digits, _ - . /"
    if key != key.lower():
        return f"Nango stores tag keys lowercased: write {key.lower()!r}"
    return None


def tag_value_problem(value: str) -> str | None:
    """Why Nango would refuse `value` as a tag value; None when it is fine."""
    if not 1 <= len(value) <= TAG_VALUE_MAX_LENGTH:
        return f"a tag value has 1-{TAG_VALUE_MAX_LENGTH} characters"
    return None
