"""Build what Vapi gets back for an assistant-request: pure functions of the config and the call.

Every shape here is Vapi's (`ServerMessageResponseAssistantRequest` in vapi-server-sdk); the
contract tests validate each of them against the SDK's types.

An assistant is assembled (template, overrides, calendar) and JSON-encoded once per config snapshot,
with its `{{variables}}` left in; a call only fills those in the encoded bytes. Building and encoding
the whole tree on every call cost more than everything else the proxy does per call together.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import orjson

from proxy.config import (
    DEFAULT_TAKE_MESSAGE_INSTRUCTIONS,
    CalendarPlan,
    Config,
    Fallback,
    Route,
)
from proxy.vapi.tools import function_tools

CALENDAR_CREDENTIAL_PROVIDER = "google.calendar.oauth2-authorization"
NATIVE_CALENDAR_TOOLS = ("google.calendar.availability.check", "google.calendar.event.create")
LAST_RESORT_ERROR = "Sorry, we can't take your call right now. Please try again later."

# In JSON-encoded text, so `\s` can only be a space or a tab (a newline there is encoded as `\n`).
_VARIABLE = re.compile(rb"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Filled in per call but not passed to Vapi as variableValues.
CONNECTION_ID = "__connection_id__"
ROUTE_NAME = "__route__"
CREDENTIAL_NAME = "__credential_name__"

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


@dataclass(frozen=True)
class PreparedAssistant:
    """An assistant JSON-encoded with its `{{variables}}` still in it, split at each of them."""

    literals: tuple[bytes, ...]  # one more than `sites`: the text around the variables
    sites: tuple[tuple[str, bytes], ...]  # (variable name, its text as written)

    @classmethod
    def encode(cls, assistant: Json) -> PreparedAssistant:
        encoded = orjson.dumps(assistant)
        literals: list[bytes] = []
        sites: list[tuple[str, bytes]] = []
        start = 0
        for match in _VARIABLE.finditer(encoded):
            literals.append(encoded[start : match.start()])
            sites.append((match.group(1).decode("ascii"), match.group(0)))
            start = match.end()
        literals.append(encoded[start:])
        return cls(tuple(literals), tuple(sites))

    def answer(self, variables: Mapping[str, str], internal: Mapping[str, str] | None = None) -> bytes:
        """The full answer: known `{{name}}`s filled (JSON-escaped), the rest left for Vapi (e.g. Liquid)."""
        out = [b'{"assistant":', self.literals[0]]
        filled: dict[str, bytes] = {}  # a name used at several sites is escaped once
        for (name, written), literal in zip(self.sites, self.literals[1:], strict=True):
            piece = filled.get(name)
            if piece is None:
                value = variables.get(name)
                if value is None and internal is not None:
                    value = internal.get(name)
                piece = filled[name] = written if value is None else orjson.dumps(value)[1:-1]
            out.append(piece)
            out.append(literal)
        out.append(b',"assistantOverrides":')
        out.append(orjson.dumps({"variableValues": variables}))
        out.append(b"}")
        return b"".join(out)


def template_variables(
    *, user_id: str, user_name: str, timezone: ZoneInfo, now: datetime, extra: Mapping[str, str]
) -> dict[str, str]:
    return _fill(extra, user_id, user_name, _clock_variables(timezone, int(now.timestamp()) // 60))


def _fill(extra: Mapping[str, str], user_id: str, user_name: str, clock: Mapping[str, str]) -> dict[str, str]:
    return {**extra, "user_id": user_id, "user_name": user_name, **clock}


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


def _add_calendar(assistant: Json, plan: CalendarPlan) -> None:
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
            "authorizationId": f"{{{{{CONNECTION_ID}}}}}",
            "name": f"{{{{{CREDENTIAL_NAME}}}}}",
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


def _prepared(config: Config, key: tuple[object, ...], build: Callable[[], Json]) -> PreparedAssistant:
    # Memoised on the snapshot: keys hold ids of objects that live exactly as long as it does.
    prepared = config.prepared.get(key)
    if prepared is None:
        prepared = config.prepared[key] = PreparedAssistant.encode(build())
    return prepared  # type: ignore[return-value]


def prepare_calendar_assistant(config: Config, route: Route) -> PreparedAssistant:
    """The route's assistant with the calendar attached, ready to fill in per call."""

    def build() -> Json:
        assistant = _base(config, route.template, route)
        _append_system_prompt(assistant, route.calendar.instructions)
        _add_calendar(assistant, route.calendar)
        _with_metadata(
            assistant,
            {"userId": "{{user_id}}", "route": f"{{{{{ROUTE_NAME}}}}}", "calendarMode": route.calendar.mode},
        )
        return assistant

    key = ("calendar", route.template, tuple(map(id, route.overrides)), id(route.calendar))
    return _prepared(config, key, build)


def proxied(config: Config, route: Route) -> Route | None:
    """`route` served with this proxy's own calendar tools, as a Microsoft user always is (Vapi's native calendar
    tools and credential are Google's); None when the config has no tool server for Vapi to reach them."""
    if route.calendar.mode == "proxy":
        return route
    if config.tool_server is None:
        return None
    key = ("proxied", id(route.calendar))
    cached = config.prepared.get(key)
    if cached is None:
        # The original plan is kept with its proxied twin: its id (the key) cannot be reused while cached.
        settings = dataclasses.replace(route.calendar.settings, mode="proxy")
        plan = dataclasses.replace(route.calendar, settings=settings, tool_server=config.tool_server)
        cached = config.prepared[key] = (route.calendar, plan)
    _, plan = cached  # type: ignore[misc]
    return msgspec.structs.replace(route, calendar=plan)


def calendar_assistant(config: Config, route: Route, connection_id: str, now: datetime) -> bytes:
    """The success answer: the route's assistant, with the user's calendar attached (JSON bytes)."""
    return prepare_calendar_assistant(config, route).answer(
        _variables(config, route, now), _calendar_internal(route, connection_id)
    )


def _calendar_internal(route: Route, connection_id: str) -> dict[str, str]:
    return {CONNECTION_ID: connection_id, ROUTE_NAME: route.name, CREDENTIAL_NAME: _credential_name(route.user.id)}


def _credential_name(user_id: str) -> str:
    return f"calendar {user_id}"[:40]


# Stand-ins for the per-call values while a route's answer is turned into a format; random per process,
# so no config text can contain one.
_MARK = secrets.token_hex(8)
CLOCK_VARIABLES = tuple(_clock_variables(ZoneInfo("UTC"), 0))


# The route's own values in a calendar answer: left as placeholders too, so every route whose template,
# overrides, calendar and variables are the same shares one format (100,000 users: a few formats, not 100,000).
ROUTE_VALUES = ("user_id", "user_name", ROUTE_NAME, CREDENTIAL_NAME)
ROUTE_KEY, CREDENTIAL_KEY = ROUTE_NAME.encode(), CREDENTIAL_NAME.encode()


def calendar_answer_format(config: Config, route: Route) -> bytes:
    """`calendar_assistant`'s answer for routes of this route's shape as a bytes %-format: everything filled in
    but the clock variables (`%(today)s`, ...), `%(__connection_id__)s` and the route's own values
    (`ROUTE_VALUES`), whose JSON-escaped values `clock_fragments`, the caller and `route_fills` supply. Built
    from the same pieces, so the bytes are the same as calendar_assistant's."""
    names = (*CLOCK_VARIABLES, CONNECTION_ID, *ROUTE_VALUES)
    marks = {name: f"\x00{_MARK}{name}\x00" for name in names}
    clock = {name: marks[name] for name in CLOCK_VARIABLES}
    variables = _fill(route.variables, marks["user_id"], marks["user_name"], clock)
    internal = {name: marks[name] for name in (CONNECTION_ID, ROUTE_NAME, CREDENTIAL_NAME)}
    answer = prepare_calendar_assistant(config, route).answer(variables, internal)
    answer = answer.replace(b"%", b"%%")
    for name in names:
        answer = answer.replace(orjson.dumps(marks[name])[1:-1], b"%%(%s)s" % name.encode())
    return answer


def route_fills(route: Route) -> dict[bytes, bytes]:
    """The route's own values for `calendar_answer_format`'s placeholders, JSON-escaped."""
    user = route.user
    return {
        b"user_id": orjson.dumps(user.id)[1:-1],
        b"user_name": orjson.dumps(user.name)[1:-1],
        ROUTE_KEY: orjson.dumps(route.name)[1:-1],
        CREDENTIAL_KEY: orjson.dumps(_credential_name(user.id))[1:-1],
    }


@functools.lru_cache(maxsize=1024)
def clock_fragments(timezone: ZoneInfo, minute: int) -> Mapping[bytes, bytes]:
    """The clock variables JSON-escaped, keyed for `calendar_answer_format`. Callers copy, never change it."""
    return {name.encode(): orjson.dumps(value)[1:-1] for name, value in _clock_variables(timezone, minute).items()}


def fallback_answer(config: Config, fallback: Fallback, route: Route | None, now: datetime) -> bytes:
    """Transfer, spoken rejection, or an assistant that takes a message instead of booking (JSON bytes)."""
    if fallback.action == "reject":
        return orjson.dumps({"error": fallback.message.strip() or LAST_RESORT_ERROR})
    if fallback.action == "transfer":
        destination: Json = {"type": "number", "number": fallback.number}
        if fallback.message:
            destination["message"] = fallback.message
        return orjson.dumps({"destination": destination})
    template = fallback.template or (route.template if route is not None else config.default_template)

    def build() -> Json:
        assistant = _base(config, template, route)
        _strip_calendar(assistant, route.calendar if route is not None else None)
        _append_system_prompt(assistant, fallback.message or DEFAULT_TAKE_MESSAGE_INSTRUCTIONS)
        if route is not None:
            _with_metadata(
                assistant, {"userId": "{{user_id}}", "route": f"{{{{{ROUTE_NAME}}}}}", "calendarMode": "none"}
            )
        return assistant

    overrides = tuple(map(id, route.overrides)) if route is not None else ()
    key = ("take_message", template, id(fallback), overrides, id(route.calendar) if route is not None else None)
    internal = {ROUTE_NAME: route.name} if route is not None else None
    return _prepared(config, key, build).answer(_variables(config, route, now), internal)
