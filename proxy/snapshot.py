"""The immutable config snapshot: what one validated routing file means, ready to answer calls.

Built only by `proxy.config` (which validates), never mutated afterwards, and swapped as a whole on
reload, so a request sees exactly one snapshot from start to end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from proxy.auth import AuthSettings
from proxy.nango import NangoSettings
from proxy.routing import RouteKeys, RoutingTable
from proxy.slots import CalendarSettings
from proxy.yamlsource import ConfigIssue

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


@dataclass(frozen=True)
class ServerSettings:
    path: str = "/vapi"
    webhook_path: str = "/nango/webhook"
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    deadline_seconds: float = 4.0
    drain_seconds: float = 10.0
    shutdown_delay_seconds: float = 2.0
    reload_poll_seconds: float = 1.0
    # Connection limits (proxy/connections.py), read once at start-up; docs/deployment.md says why these numbers.
    max_header_bytes: int = 16_384
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 5.0
    max_connections: int = 1000
    max_unauthenticated_body_reads: int = 32
    forwarded_allow_ips: tuple[str, ...] = ()
    max_tool_calls: int = 16


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them stay in memory
class User:
    id: str
    name: str
    timezone: ZoneInfo
    connection_id: str | None
    nango_user_id: str
    email: str | None = None
    template: str | None = None
    assistant: Mapping[str, object] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """A rule resolved against its user: everything needed to answer a call, computed at load."""

    name: str
    user: User
    keys: RouteKeys
    template: str
    overrides: tuple[Mapping[str, object], ...]
    variables: Mapping[str, str]
    calendar: CalendarPlan
    fallbacks: Fallbacks


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
    # The global calendar plan: what routes made from Nango connection tags get (users may override).
    calendar: CalendarPlan = field(default_factory=CalendarPlan)
    # Answers assembled and encoded once per snapshot (proxy.assistant); a cache, not configuration.
    prepared: dict[tuple[object, ...], object] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return (
            f"Config(file={self.file!r}, version={self.version!r}, users={len(self.users)}, routes={len(self.routes)})"
        )
