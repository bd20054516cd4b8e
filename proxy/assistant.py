"""Build what Vapi gets back for an assistant-request: pure functions of the config and the call.

Every shape here is Vapi's (`ServerMessageResponseAssistantRequest` in vapi-server-sdk); the
contract tests validate each of them against the SDK's types.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from proxy.config import (
    DEFAULT_TAKE_MESSAGE_INSTRUCTIONS,
    CalendarPlan,
    Config,
    Fallback,
    Route,
)
from proxy.tools import function_tools

CALENDAR_CREDENTIAL_PROVIDER = "google.calendar.oauth2-authorization"
NATIVE_CALENDAR_TOOLS = ("google.calendar.availability.check", "google.calendar.event.create")
LAST_RESORT_ERROR = "Sorry, we can't take your call right now. Please try again later."

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

Json = dict[str, object]


def deep_merge(base: Mapping[str, object], override: Mapping[str, object]) -> Json:
    """Mappings merge key by key; anything else (lists included) in `override` replaces `base`."""
    merged: Json = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def render(value: object, variables: Mapping[str, str]) -> object:
    """Fill `{{name}}` for known names; leave the rest (e.g. Liquid filters) for Vapi to render."""
    if isinstance(value, str):
        if "{{" not in value:
            return value
        return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    return value


def template_variables(
    *, user_id: str, user_name: str, timezone: ZoneInfo, now: datetime, extra: Mapping[str, str]
) -> dict[str, str]:
    return {
        **extra,
        "user_id": user_id,
        "user_name": user_name,
        **_clock_variables(timezone, int(now.timestamp()) // 60),
    }


@functools.lru_cache(maxsize=1024)
def _clock_variables(timezone: ZoneInfo, minute: int) -> dict[str, str]:
    """The time variables, which change once a minute: formatted once per zone and minute, not per call.
    Callers only read the dict (they copy it into their own)."""
    local = datetime.fromtimestamp(minute * 60, timezone)
    offset = local.strftime("%z")
    return {
        "timezone": timezone.key,
        "today": f"{local:%A}, {local:%B} {local.day}, {local.year}",
        "now": local.isoformat(timespec="minutes"),
        "utc_offset": f"{offset[:3]}:{offset[3:]}",
        "example_datetime": local.replace(hour=15, minute=0).isoformat(),
    }


def _append_system_prompt(assistant: Json, text: str) -> None:
    model = dict(assistant.get("model") or {})  # type: ignore[call-overload]
    messages = [dict(m) if isinstance(m, Mapping) else m for m in model.get("messages") or []]
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "system":
            content = message.get("content")
            message["content"] = f"{content}\n\n{text}" if content else text
            break
    else:
        messages.insert(0, {"role": "system", "content": text})
    model["messages"] = messages
    assistant["model"] = model


def _add_calendar(assistant: Json, plan: CalendarPlan, connection_id: str, user_id: str) -> None:
    model: Json = dict(assistant["model"])  # type: ignore[call-overload]
    if plan.mode == "proxy":
        assert plan.tool_server is not None  # refused at load otherwise
        model["tools"] = [*_list(model.get("tools")), *function_tools(plan.tool_server)]
    else:
        if plan.declare == "tool_ids":
            model["toolIds"] = [*_list(model.get("toolIds")), *plan.tool_ids]
        else:
            model["tools"] = [*_list(model.get("tools")), *({"type": t} for t in NATIVE_CALENDAR_TOOLS)]
        credential = {
            "provider": CALENDAR_CREDENTIAL_PROVIDER,
            "authorizationId": connection_id,
            "name": f"calendar {user_id}"[:40],
        }
        assistant["credentials"] = [*_list(assistant.get("credentials")), credential]
    assistant["model"] = model


def _strip_calendar(assistant: Json, plan: CalendarPlan | None) -> None:
    """A message-taking assistant must not carry calendar tools a template may have declared."""
    model = assistant.get("model")
    if isinstance(model, Mapping):
        model = dict(model)
        tools = [t for t in _list(model.get("tools")) if not _is_calendar_tool(t)]
        if "tools" in model:
            model["tools"] = tools
        if "toolIds" in model and plan is not None:
            model["toolIds"] = [t for t in _list(model.get("toolIds")) if t not in plan.tool_ids]
        assistant["model"] = model
    if "credentials" in assistant:
        credentials = _list(assistant.get("credentials"))
        assistant["credentials"] = [c for c in credentials if not _is_calendar_credential(c)]


def _is_calendar_tool(tool: object) -> bool:
    return isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("google.calendar.")


def _is_calendar_credential(credential: object) -> bool:
    return isinstance(credential, Mapping) and str(credential.get("provider", "")).startswith("google.calendar.")


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _with_metadata(assistant: Json, metadata: Mapping[str, str]) -> None:
    existing = assistant.get("metadata")
    assistant["metadata"] = {**(existing if isinstance(existing, Mapping) else {}), **metadata}


def _base(config: Config, template: str, route: Route | None) -> Json:
    assistant: Json = dict(config.templates[template])
    for override in route.overrides if route is not None else ():
        assistant = deep_merge(assistant, override)
    return assistant


def _variables(config: Config, route: Route | None, now: datetime) -> dict[str, str]:
    if route is None:
        return template_variables(
            user_id="",
            user_name=config.variables.get("user_name", "the team"),
            timezone=config.timezone,
            now=now,
            extra=config.variables,
        )
    user = route.user
    return template_variables(
        user_id=user.id, user_name=user.name, timezone=user.timezone, now=now, extra=route.variables
    )


def _answer(assistant: Json, variables: dict[str, str]) -> Json:
    return {"assistant": render(assistant, variables), "assistantOverrides": {"variableValues": variables}}


def calendar_assistant(config: Config, route: Route, connection_id: str, now: datetime) -> Json:
    """The success answer: the route's assistant, with the user's calendar attached."""
    variables = _variables(config, route, now)
    assistant = _base(config, route.template, route)
    _append_system_prompt(assistant, route.calendar.instructions)
    _add_calendar(assistant, route.calendar, connection_id, route.user.id)
    _with_metadata(assistant, {"userId": route.user.id, "route": route.name, "calendarMode": route.calendar.mode})
    return _answer(assistant, variables)


def fallback_answer(config: Config, fallback: Fallback, route: Route | None, now: datetime) -> Json:
    """Transfer, spoken rejection, or an assistant that takes a message instead of booking."""
    if fallback.action == "reject":
        return {"error": fallback.message.strip() or LAST_RESORT_ERROR}
    if fallback.action == "transfer":
        destination: Json = {"type": "number", "number": fallback.number}
        if fallback.message:
            destination["message"] = fallback.message
        return {"destination": destination}
    template = fallback.template or (route.template if route is not None else config.default_template)
    assistant = _base(config, template, route)
    _strip_calendar(assistant, route.calendar if route is not None else None)
    _append_system_prompt(assistant, fallback.message or DEFAULT_TAKE_MESSAGE_INSTRUCTIONS)
    if route is not None:
        _with_metadata(assistant, {"userId": route.user.id, "route": route.name, "calendarMode": "none"})
    return _answer(assistant, _variables(config, route, now))
