"""Calendar settings: working hours and how slots are offered, validated on construction (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Literal

__all__ = ["DAY_KEYS", "CalendarSettings", "WorkingHours"]

DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class WorkingHours:
    """Per weekday (0 = Monday) the working intervals in the user's local wall time.

    An interval ending at `time.max` runs to the next midnight (written "24:00" in YAML).
    """

    days: tuple[tuple[tuple[time, time], ...], ...]

    def __post_init__(self) -> None:
        if len(self.days) != 7:
            raise ValueError(f"working hours need 7 weekdays, got {len(self.days)}")
        for key, intervals in zip(DAY_KEYS, self.days, strict=True):
            _check_day(key, intervals)

    @classmethod
    def default(cls) -> WorkingHours:
        """Monday to Friday, 09:00-17:00."""
        office = ((time(9), time(17)),)
        return cls((office,) * 5 + ((),) * 2)

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> WorkingHours:
        """Read the YAML form `{"mon": ["09:00-12:00", "13:00-17:00"], "sat": [], "default": ["09:00-17:00"]}`.

        A day that is not listed takes `default` when given, else the built-in Mon-Fri 09:00-17:00.
        An empty list (or an empty YAML value) closes the day. Raises ValueError naming the bad key.
        """
        unknown = sorted(str(k) for k in raw if k not in (*DAY_KEYS, "default"))
        if unknown:
            raise ValueError(f"unknown working_hours key(s) {', '.join(unknown)}: use {', '.join(DAY_KEYS)} or default")
        base = _parse_day("default", raw["default"]) if "default" in raw else None
        builtin = cls.default().days
        days = tuple(
            _parse_day(key, raw[key]) if key in raw else (base if base is not None else builtin[i])
            for i, key in enumerate(DAY_KEYS)
        )
        return cls(days)


@dataclass(frozen=True)
class CalendarSettings:
    """How one user's calendar is served and offered (validated on construction)."""

    mode: Literal["native", "proxy"] = "native"
    calendar_id: str = "primary"
    working_hours: WorkingHours = field(default_factory=WorkingHours.default)
    slot_minutes: int = 30
    buffer_minutes: int = 0
    max_slots: int = 3
    horizon_days: int = 14
    min_notice_minutes: int = 60
    search_ahead_days: int = 7  # find_open_slots: how far past an empty range to look for the next openings
    # What one caller may make the owner's calendar do (proxy.calendar.abuse).
    max_bookings_per_call: int = 3
    max_bookings_per_caller_per_day: int = 6
    max_invitations_per_address: int = 2

    def __post_init__(self) -> None:
        if self.mode not in ("native", "proxy"):
            raise ValueError(f"calendar mode must be native or proxy, got {self.mode!r}")
        if not self.calendar_id:
            raise ValueError("calendar_id must not be empty")
        checks = {
            "slot_minutes": (self.slot_minutes, 5, 480),
            "buffer_minutes": (self.buffer_minutes, 0, 240),
            "max_slots": (self.max_slots, 1, 20),
            "horizon_days": (self.horizon_days, 1, 366),
            "min_notice_minutes": (self.min_notice_minutes, 0, 60 * 24 * 7),
            "search_ahead_days": (self.search_ahead_days, 0, 60),
            "max_bookings_per_call": (self.max_bookings_per_call, 1, 20),
            "max_bookings_per_caller_per_day": (self.max_bookings_per_caller_per_day, 1, 200),
            "max_invitations_per_address": (self.max_invitations_per_address, 1, 20),
        }
        for name, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _parse_day(key: str, value: object) -> tuple[tuple[time, time], ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"working_hours.{key}: expected a list of 'HH:MM-HH:MM' ranges, got {value!r}")
    intervals = tuple(sorted(_parse_range(key, item) for item in items))
    _check_day(key, intervals)
    return intervals


def _parse_range(key: str, text: str) -> tuple[time, time]:
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"working_hours.{key}: {text!r} is not a range like '09:00-17:00'")
    sh, sm, eh, em = (int(group) for group in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em):
        raise ValueError(f"working_hours.{key}: {text!r} has an impossible time (24:00 is the latest end)")
    end = time.max if eh == 24 else time(eh, em)
    if end <= time(sh, sm):
        raise ValueError(f"working_hours.{key}: {text!r} ends before it starts (use 24:00 for midnight)")
    return time(sh, sm), end


def _check_day(key: str, intervals: tuple[tuple[time, time], ...]) -> None:
    if not intervals:
        return
    for index, (start, end) in enumerate(intervals):
        if end <= start:
            raise ValueError(f"working_hours.{key}: {start:%H:%M} to {end:%H:%M} ends before it starts")
        if index + 1 < len(intervals) and intervals[index + 1][0] < end:
            following = intervals[index + 1][0]
            raise ValueError(f"working_hours.{key}: ranges starting {start:%H:%M} and {following:%H:%M} overlap")
