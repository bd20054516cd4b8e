"""The immutable config snapshot: what one validated routing file means, ready to answer calls.

Built only by `proxy.config.load` (which validates), never mutated afterwards, and swapped as a whole on
reload, so a request sees exactly one snapshot from start to end. Pure data: no I/O module is imported.

Routing precedence, most specific first (`RoutingTable.match`):

1. `from` scoped to a line: the caller's number together with the called number or phoneNumberId
2. `from` alone: the caller's number, whatever line they called (a VIP list)
3. `phone_number_id`: Vapi's id of the called line (stable even if the number text changes)
4. `to`: the called number, E.164 after normalisation (or a SIP URI)
5. `default`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

from proxy.config.calendar import CalendarSettings
from proxy.config.models import AuthSettings, NangoSettings, RedisSection, ServerSettings
from proxy.config.yamlsource import ConfigError, ConfigIssue, Document, Path

__all__ = [
    "DEFAULT_CALENDAR_INSTRUCTIONS",
    "DEFAULT_TAKE_MESSAGE_INSTRUCTIONS",
    "AgencyFile",
    "CalendarPlan",
    "Config",
    "Fallback",
    "FallbackKind",
    "Fallbacks",
    "InboundCall",
    "KeyEntry",
    "Match",
    "Route",
    "RouteKeys",
    "RoutingTable",
    "ServerSettings",
    "TenantScope",
    "User",
]

KeyKind = Literal["to", "phone_number_id", "from"]
Rule = Literal["from+to", "from+phone_number_id", "from", "phone_number_id", "to", "default"]
FallbackAction = Literal["take_message", "transfer", "reject"]
FallbackKind = Literal["unknown_number", "no_calendar", "error"]
ToolDeclaration = Literal["inline", "tool_ids"]

DEFAULT_CALENDAR_INSTRUCTIONS = (
    "You manage {{user_name}}'s calendar. Today is {{today}} in {{timezone}}. Always check availability "
    "before booking. Always send dates and times in ISO 8601 with an explicit UTC offset for {{timezone}} "
    "(for example {{example_datetime}}), never without an offset."
)
DEFAULT_TAKE_MESSAGE_INSTRUCTIONS = (
    "The calendar cannot be reached for this call. Do not offer to check times or book. Take a message: the "
    "caller's name, phone number and reason for calling, and say {{user_name}} will call back."
)


@dataclass(frozen=True)
class Fallback:
    """What a call gets when the calendar assistant cannot be served."""

    action: FallbackAction
    message: str = ""
    number: str | None = None
    template: str | None = None


@dataclass(frozen=True)
class Fallbacks:
    unknown_number: Fallback = Fallback("reject", "Sorry, this number is not set up to take calls. Goodbye.")
    no_calendar: Fallback = Fallback("take_message")
    error: Fallback = Fallback("take_message")

    def get(self, kind: FallbackKind) -> Fallback:
        fallback: Fallback = getattr(self, kind)
        return fallback


@dataclass(frozen=True)
class CalendarPlan:
    """How a user's calendar reaches the assistant: Vapi's native tools or this proxy's own."""

    settings: CalendarSettings = field(default_factory=CalendarSettings)
    declare: ToolDeclaration = "inline"
    tool_ids: tuple[str, ...] = ()
    instructions: str = DEFAULT_CALENDAR_INSTRUCTIONS
    tool_server: Mapping[str, object] | None = None

    @property
    def mode(self) -> str:
        return self.settings.mode


# Users, routes and their keys are 100,000s of objects in a large file: msgspec Structs, because they are
# built several times faster than frozen dataclasses and, untracked by the cyclic GC (they hold no cycles),
# take less memory and no collector time.


class User(msgspec.Struct, frozen=True, gc=False):
    id: str
    name: str
    timezone: ZoneInfo
    connection_id: str | None
    nango_user_id: str
    email: str | None = None
    template: str | None = None
    assistant: Mapping[str, object] = msgspec.field(default_factory=dict)
    variables: Mapping[str, str] = msgspec.field(default_factory=dict)


class Route(msgspec.Struct, frozen=True, gc=False):
    """A rule resolved against its user: everything needed to answer a call, computed at load."""

    name: str
    user: User
    keys: RouteKeys
    template: str
    overrides: tuple[Mapping[str, object], ...]
    variables: Mapping[str, str]
    calendar: CalendarPlan
    fallbacks: Fallbacks


class KeyEntry(msgspec.Struct, frozen=True, gc=False):
    kind: KeyKind
    value: str
    path: Path


class RouteKeys(msgspec.Struct, frozen=True, gc=False):
    entries: tuple[KeyEntry, ...] = ()
    is_default: bool = False
    default_path: Path = ()
    # The file the paths are in: the main file or an included one ("" for routes not read from YAML).
    file: str = ""

    def of(self, kind: KeyKind) -> list[KeyEntry]:
        return [entry for entry in self.entries if entry.kind == kind]


@dataclass(frozen=True)
class InboundCall:
    """What routing needs from a Vapi message, already normalised."""

    call_id: str
    to: str | None = None
    phone_number_id: str | None = None
    caller: str | None = None


@dataclass(frozen=True)
class Match:
    route: Route
    rule: Rule


@dataclass(frozen=True)
class RoutingTable:
    """Every route indexed by every key it answers to: a call is routed in a handful of dict lookups."""

    by_caller_on_line: dict[tuple[str, str], Route]
    by_caller: dict[str, Route]
    by_phone_number_id: dict[str, Route]
    by_to: dict[str, Route]
    default: Route | None

    def match(self, call: InboundCall) -> Match | None:
        found = self.find(call.to, call.phone_number_id, call.caller)
        return Match(*found) if found is not None else None

    def find(self, to: str | None, phone_number_id: str | None, caller: str | None) -> tuple[Route, Rule] | None:
        """`match` on plain keys, without building objects (the warm path in proxy.http.fastpath)."""
        if caller is not None:
            if to is not None and (route := self.by_caller_on_line.get((caller, to))) is not None:
                return route, "from+to"
            if phone_number_id is not None:
                route = self.by_caller_on_line.get((caller, phone_number_id))
                if route is not None:
                    return route, "from+phone_number_id"
            if (route := self.by_caller.get(caller)) is not None:
                return route, "from"
        if phone_number_id is not None and (route := self.by_phone_number_id.get(phone_number_id)):
            return route, "phone_number_id"
        if to is not None and (route := self.by_to.get(to)) is not None:
            return route, "to"
        if self.default is not None:
            return self.default, "default"
        return None


@dataclass(frozen=True)
class Config:
    file: str
    version: str
    server: ServerSettings
    auth: AuthSettings
    nango: NangoSettings
    timezone: ZoneInfo
    variables: Mapping[str, str]
    templates: Mapping[str, Mapping[str, object]]
    default_template: str
    fallbacks: Fallbacks
    users: Mapping[str, User]
    routes: tuple[Route, ...]
    routing: RoutingTable
    warnings: tuple[ConfigIssue, ...] = ()
    # Every file this snapshot was read from (the main file first, then its includes): all are watched.
    files: tuple[str, ...] = ()
    include_patterns: tuple[str, ...] = ()
    # Restart-only settings that differ in the file from what runs (kept at their running values).
    restart_needed: tuple[str, ...] = ()
    # The global calendar plan: what routes made from Nango connection tags get (users may override).
    calendar: CalendarPlan = field(default_factory=CalendarPlan)
    # Where Vapi sends proxy-mode tool calls (calendar.tool_server, else server.public_url): also what a user
    # of a Microsoft integration gets whatever their route's mode (Vapi's native tools are Google's only).
    tool_server: Mapping[str, object] | None = None
    # The shared state of several replicas (proxy.shared); the REDIS_* environment fills in unset keys.
    redis: RedisSection = field(default_factory=RedisSection)
    # The agency tenant this config is (proxy.config.tenants); None for a deployment of one business.
    tenant: str | None = None
    # Answers assembled and encoded once per snapshot (proxy.vapi.assistant); a cache, not configuration.
    prepared: dict[tuple[object, ...], object] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        tenant = f"tenant={self.tenant!r}, " if self.tenant is not None else ""
        return (
            f"Config({tenant}file={self.file!r}, version={self.version!r}, users={len(self.users)}, "
            f"routes={len(self.routes)})"
        )


class AgencyFile(ConfigError):
    """The file holds `tenants`: it is an agency file, loaded by `proxy.config.tenants.load_deployment`.
    A caller that wants one config gets it as an error it can report."""

    def __init__(self, document: Document) -> None:
        self.document = document
        super().__init__([document.issue(("tenants",), "holds tenants: an agency file, not one tenant's config")])


@dataclass(frozen=True)
class TenantScope:
    """What a tenant's config takes from its agency file: its id and the deployment's server and redis
    sections (the server's paths already the tenant's own)."""

    id: str
    server: ServerSettings
    redis: RedisSection
    agency_file: str
