"""Who a calendar tool call is for and who is making it: what `proxy.vapi.service` resolves and the tools read."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from proxy.config.calendar import CalendarSettings

__all__ = ["CalendarContext"]


@dataclass(frozen=True)
class CalendarContext:
    """Who the call is for and who is calling, resolved by the caller from the tool-calls message."""

    user_id: str
    user_name: str
    timezone: ZoneInfo
    connection_id: str | None
    settings: CalendarSettings
    call_id: str
    caller_number: str | None
