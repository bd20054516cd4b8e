"""Validate the proxy's answers against Vapi's own published types (vapi-server-sdk).

The SDK's models accept unknown keys (extra="allow") and park them in `model_extra`; Vapi's API
rejects them. So a faithful check parses with the SDK and then fails on any extra key anywhere.
"""

from __future__ import annotations

from typing import Any

import pydantic
from vapi.types import ServerMessageResponseAssistantRequest, ServerMessageResponseToolCalls


def unknown_keys(value: Any, path: str = "$") -> list[str]:
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found += [f"{path}.{key}" for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += unknown_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += unknown_keys(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_keys(item, f"{path}.{key}")
    return found


def assert_assistant_request_response(answer: dict[str, Any]) -> ServerMessageResponseAssistantRequest:
    parsed = ServerMessageResponseAssistantRequest.model_validate(answer)
    extra = unknown_keys(parsed)
    assert not extra, f"keys Vapi does not know: {extra}"
    kinds = [key for key in ("assistant", "destination", "error") if answer.get(key)]
    assert len(kinds) == 1, f"expected exactly one of assistant/destination/error, got {kinds}"
    return parsed


def assert_tool_calls_response(answer: dict[str, Any]) -> ServerMessageResponseToolCalls:
    parsed = ServerMessageResponseToolCalls.model_validate(answer)
    extra = unknown_keys(parsed)
    assert not extra, f"keys Vapi does not know: {extra}"
    return parsed
