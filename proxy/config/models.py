"""The routing file's shape: one typed model per section, each default and bound written here once.

The same classes validate the YAML (`msgspec.convert`, through `proxy.config.validate`) and describe it to
editors (`proxy.config.schema`). The settings sections (`server`, `auth`, `nango`, `redis`) are in
`proxy.config.sections`, being also the settings objects the code reads. Cross-checks that no schema can
express (routes naming users, numbers claimed twice, fallback numbers) live in `proxy.config.checks`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, UnsetType, field

from proxy.config.redis import RedisSection
from proxy.config.sections import (
    HMAC_PLACEHOLDERS,
    Addresses,
    AuthSection,
    AuthSettings,
    BearerPlan,
    HmacPlan,
    Model,
    NangoSettings,
    Secrets,
    ServerSettings,
    TagRouting,
    doc,
)

__all__ = [
    "HMAC_PLACEHOLDERS",
    "Addresses",
    "AuthSection",
    "AuthSettings",
    "BearerPlan",
    "CalendarLayer",
    "ConfigFile",
    "FallbackModel",
    "FallbacksModel",
    "GlobalCalendar",
    "HmacPlan",
    "IncludedFile",
    "NangoSettings",
    "RedisSection",
    "RouteModel",
    "Secrets",
    "ServerSettings",
    "TagRouting",
    "UserModel",
    "WorkingHoursModel",
]

# -- calendar ---------------------------------------------------------------------------------

TimeRanges = str | list[str] | None


class WorkingHoursModel(Model, frozen=True, kw_only=True):
    """Per weekday a list of "HH:MM-HH:MM" ranges in the user's timezone; an empty list closes the day."""

    mon: TimeRanges | UnsetType = UNSET
    tue: TimeRanges | UnsetType = UNSET
    wed: TimeRanges | UnsetType = UNSET
    thu: TimeRanges | UnsetType = UNSET
    fri: TimeRanges | UnsetType = UNSET
    sat: TimeRanges | UnsetType = UNSET
    sun: TimeRanges | UnsetType = UNSET
    default: Annotated[TimeRanges | UnsetType, doc("for every day not listed")] = UNSET


class CalendarLayer(Model, frozen=True, kw_only=True):
    """Calendar keys one level (global, user, route) sets; unset keys come from the level above, then
    from `proxy.calendar.slots.CalendarSettings`, where the defaults are."""

    mode: Annotated[
        Literal["native", "proxy"] | None,
        doc("native: Vapi's Google Calendar tools + the user's credential; proxy: this proxy serves the tools"),
    ] = None
    declare: Annotated[
        Literal["inline", "tool_ids"] | None,
        doc("native mode: inline adds the tools to model.tools; tool_ids adds tool_ids to model.toolIds"),
    ] = None
    tool_ids: Annotated[str | list[str] | None, doc("ids of calendar tools created once in Vapi")] = None
    instructions: Annotated[str | None, doc("appended to the system prompt (built-in text by default)")] = None
    calendar_id: Annotated[Annotated[str, Meta(min_length=1)] | None, doc("proxy mode: which Google calendar")] = None
    working_hours: Annotated[
        WorkingHoursModel | None, doc("proxy mode: working hours in the user's timezone (default Mon-Fri 09:00-17:00)")
    ] = None
    slot_minutes: Annotated[
        Annotated[int, Meta(ge=5, le=480)] | None, doc("proxy mode: default appointment length")
    ] = None
    buffer_minutes: Annotated[
        Annotated[int, Meta(ge=0, le=240)] | None, doc("proxy mode: kept free around busy time")
    ] = None
    max_slots: Annotated[Annotated[int, Meta(ge=1, le=20)] | None, doc("proxy mode: slots offered at once")] = None
    horizon_days: Annotated[Annotated[int, Meta(ge=1, le=366)] | None, doc("proxy mode: how far ahead to look")] = None
    min_notice_minutes: Annotated[
        Annotated[int, Meta(ge=0, le=10_080)] | None, doc("proxy mode: earliest bookable time from now")
    ] = None
    search_ahead_days: Annotated[
        Annotated[int, Meta(ge=0, le=60)] | None,
        doc("proxy mode: when a searched range has no openings, how many days after it to offer the next ones"),
    ] = None
    max_bookings_per_call: Annotated[
        Annotated[int, Meta(ge=1, le=20)] | None, doc("proxy mode: bookings one call may make, cancelled ones included")
    ] = None
    max_bookings_per_caller_per_day: Annotated[
        Annotated[int, Meta(ge=1, le=200)] | None,
        doc("proxy mode: bookings one calling number may make in any 24 hours, cancelled ones included"),
    ] = None
    max_invitations_per_address: Annotated[
        Annotated[int, Meta(ge=1, le=20)] | None, doc("proxy mode: bookings one call may invite one email address to")
    ] = None


class GlobalCalendar(CalendarLayer, frozen=True, kw_only=True):
    tool_server: Annotated[
        dict[str, Any] | None,
        doc("proxy mode: the Vapi server object the function tools call (default {url: <public_url><path>})"),
    ] = None


# -- fallbacks --------------------------------------------------------------------------------


class FallbackModel(Model, frozen=True, kw_only=True):
    action: Annotated[
        Literal["take_message", "transfer", "reject"],
        doc("take_message: the template without calendar tools; transfer: to `number`; reject: speak `message`"),
    ]
    message: Annotated[str, doc("spoken text (reject: required; take_message: replaces the instruction)")] = ""
    number: Annotated[str | None, doc("transfer: the number to transfer to")] = None
    template: Annotated[str | None, doc("take_message: the template to use")] = None


class FallbacksModel(Model, frozen=True, kw_only=True):
    unknown_number: Annotated[FallbackModel | None, doc("calls no route matches (default: reject politely)")] = None
    no_calendar: Annotated[FallbackModel | None, doc("the user has no usable calendar (default: take a message)")] = (
        None
    )
    error: Annotated[FallbackModel | None, doc("Nango failed or timed out (default: take a message)")] = None


# -- users and routes -------------------------------------------------------------------------

Variables = dict[str, str | int | float | bool]
Numbers = str | list[str]


class UserModel(Model, frozen=True, kw_only=True, gc=False):
    id: Annotated[str, doc("your user id (required, unique)", min_length=1)]
    name: Annotated[str, doc("display name: {{user_name}}", min_length=1)]
    timezone: Annotated[str | None, doc("IANA timezone (default: the top-level timezone)")] = None
    connection_id: Annotated[str | None, doc("a fixed Nango connection id: skips Nango")] = None
    nango_user_id: Annotated[str | None, doc("the value of nango.user_tag on the user's connection (default: id)")] = (
        None
    )
    email: Annotated[str | None, doc("used in the Nango Connect session (connect-link)")] = None
    template: Annotated[str | None, doc("template for this user's routes")] = None
    assistant: Annotated[dict[str, Any] | None, doc("assistant fields deep-merged over the template")] = None
    variables: Annotated[Variables | None, doc("template variables for this user")] = None
    calendar: Annotated[CalendarLayer | None, doc("overrides of the global calendar section")] = None
    fallbacks: Annotated[FallbacksModel | None, doc("overrides of the global fallbacks")] = None


class RouteModel(Model, frozen=True, kw_only=True, gc=False):
    user: Annotated[str, doc("the user the call is for (required)", min_length=1)]
    name: Annotated[str | None, doc("label in logs and resolve (default routes[N])")] = None
    to: Annotated[Numbers | None, doc("called number(s): any common format, or a SIP URI")] = None
    phone_number_id: Annotated[Numbers | None, doc("Vapi phone-number id(s) of the called line")] = None
    caller: Annotated[Numbers | None, doc("caller number(s); with to/phone_number_id only on those lines")] = field(
        default=None, name="from"
    )
    default: Annotated[bool, doc("true: calls nothing else matched")] = False
    template: Annotated[str | None, doc("template for calls on this route")] = None
    assistant: Annotated[dict[str, Any] | None, doc("assistant fields deep-merged over the user's")] = None
    variables: Annotated[Variables | None, doc("template variables for this route")] = None
    calendar: Annotated[CalendarLayer | None, doc("calendar overrides for this route")] = None
    fallbacks: Annotated[FallbacksModel | None, doc("fallback overrides for this route")] = None


# -- the file ---------------------------------------------------------------------------------


class ConfigFile(Model, frozen=True, kw_only=True):
    """The top level of the routing file."""

    version: Annotated[Literal[1], doc("format version")] = 1
    include: Annotated[
        list[str],
        doc("more files of users and routes: paths or globs relative to this file (each may hold users, routes)"),
    ] = field(default_factory=list)
    server: ServerSettings = ServerSettings()
    auth: AuthSection = AuthSection()
    nango: NangoSettings = NangoSettings()
    redis: RedisSection = RedisSection()
    timezone: Annotated[str, doc("timezone for calls that match no user, and users without one")] = "UTC"
    variables: Annotated[Variables, doc("template variables for every call (plain values)")] = field(
        default_factory=dict
    )
    templates: Annotated[
        dict[str, dict[str, Any]], doc("named Vapi assistants (CreateAssistantDTO fields, any of them)", min_length=1)
    ]
    default_template: Annotated[str, doc("the template a route uses unless the route or its user names one")] = (
        "default"
    )
    calendar: GlobalCalendar = GlobalCalendar()
    fallbacks: FallbacksModel = FallbacksModel()
    users: list[UserModel] = field(default_factory=list)
    routes: list[RouteModel] = field(default_factory=list)


class IncludedFile(Model, frozen=True, kw_only=True):
    """A file named by `include`: more users and routes, nothing else."""

    users: list[UserModel] = field(default_factory=list)
    routes: list[RouteModel] = field(default_factory=list)
