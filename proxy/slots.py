"""Calendar settings and open-slot arithmetic: pure functions, no I/O.

Everything is computed on UTC instants; wall-clock times exist only at the edges (working hours in,
speakable text out). Aware datetimes sharing a `ZoneInfo` add, subtract and compare as *wall* times in
Python, which is wrong across a DST change, so every datetime this module returns is in UTC: convert
with `.astimezone(tz)` only to display it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Interval = tuple[datetime, datetime]

DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Offered starts fall on the local quarter hour: times a person can say and remember, and finer than
# any sensible slot length, so a slot right after a 10:10 meeting starts at 10:15, not 10:30.
GRID = timedelta(minutes=15)
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_ISO_HINT = "an ISO 8601 date-time with a UTC offset, like 2026-03-10T14:30:00-04:00"


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
        }
        for name, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def open_slots(
    busy: Sequence[Interval],
    *,
    tz: ZoneInfo,
    hours: WorkingHours,
    start: datetime,
    length: timedelta,
    count: int,
    buffer: timedelta,
    horizon: timedelta,
) -> list[Interval]:
    """The first `count` free slots of `length` in working hours, in order, as UTC instants.

    `start` is the earliest allowed moment (the caller adds the minimum notice to now); slots end by
    `start + horizon`. Busy intervals are widened by `buffer` on both sides. Starts are aligned to the
    local quarter hour and consecutive slots never overlap, so each is a distinct offer.
    """
    if length <= timedelta(0):
        raise ValueError("slot length must be positive")
    begin = _utc(start)
    end = begin + horizon
    free = subtract(working_intervals(tz, hours, begin, end), _blocked(busy, buffer))
    slots: list[Interval] = []
    for low, high in free:
        at = _ceil_to_grid(low, tz)
        while len(slots) < count and at + length <= high:
            slots.append((at, at + length))
            at = _ceil_to_grid(at + length, tz)
    return slots


def is_free(busy: Sequence[Interval], start: datetime, end: datetime, *, buffer: timedelta) -> bool:
    """Whether [start, end) keeps `buffer` clear of every busy interval."""
    begin, finish = _utc(start), _utc(end)
    return all(high <= begin or low >= finish for low, high in _blocked(busy, buffer))


def within_working_hours(start: datetime, end: datetime, *, tz: ZoneInfo, hours: WorkingHours) -> bool:
    """Whether every moment of [start, end) is working time."""
    begin, finish = _utc(start), _utc(end)
    return working_intervals(tz, hours, begin, finish) == [(begin, finish)]


def working_intervals(tz: ZoneInfo, hours: WorkingHours, start: datetime, end: datetime) -> list[Interval]:
    """Working time within [start, end) as merged UTC intervals.

    Each local date's wall-clock intervals become instants separately, so a DST change only moves the
    day it happens on. A bound the clock skips (spring forward) becomes the moment of the jump; an
    ambiguous bound (fall back) means its first occurrence, as a person watching the clock reads it.
    """
    begin, finish = _utc(start), _utc(end)
    found: list[Interval] = []
    day = begin.astimezone(tz).date() - timedelta(days=1)
    last = finish.astimezone(tz).date() + timedelta(days=1)
    while day <= last:
        for wall_start, wall_end in hours.days[day.weekday()]:
            low = max(_instant(day, wall_start, tz), begin)
            high = min(_instant(day, wall_end, tz), finish)
            if low < high:
                found.append((low, high))
        day += timedelta(days=1)
    return merge(found)


def merge(intervals: Sequence[Interval]) -> list[Interval]:
    """Sort and join overlapping or touching intervals (UTC in, UTC out)."""
    merged: list[Interval] = []
    for low, high in sorted((_utc(a), _utc(b)) for a, b in intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        elif low < high:
            merged.append((low, high))
    return merged


def subtract(base: Sequence[Interval], remove: Sequence[Interval]) -> list[Interval]:
    """The parts of `base` not covered by `remove` (both are merged first)."""
    out: list[Interval] = []
    cuts = merge(remove)
    for low, high in merge(base):
        cursor = low
        for cut_low, cut_high in cuts:
            if cut_high <= cursor or cut_low >= high:
                continue
            if cut_low > cursor:
                out.append((cursor, cut_low))
            cursor = max(cursor, cut_high)
        if cursor < high:
            out.append((cursor, high))
    return out


@dataclass(frozen=True)
class ParsedTime:
    """A tool-argument instant (UTC); `assumed_zone` says it had no offset and was read in the user's zone."""

    value: datetime
    assumed_zone: bool


def parse_time(text: object, tz: ZoneInfo) -> ParsedTime:
    """Read an ISO 8601 date-time (a bare date means local midnight in `tz`) into a UTC instant."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected {_ISO_HINT}")
    raw = text.strip()
    raw = raw[:-1] + "Z" if raw.endswith("z") else raw
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not {_ISO_HINT}") from None
    if value.tzinfo is not None:
        return ParsedTime(value.astimezone(UTC), assumed_zone=False)
    instant = _instant(value.date(), value.time(), tz)
    return ParsedTime(instant, assumed_zone="T" in raw or " " in raw or ":" in raw)


def speak_time(moment: datetime, tz: ZoneInfo) -> str:
    """'2:30 PM', or '2 PM' on the hour."""
    local = moment.astimezone(tz)
    hour = local.hour % 12 or 12
    minutes = f":{local.minute:02d}" if local.minute else ""
    return f"{hour}{minutes} {'AM' if local.hour < 12 else 'PM'}"


def speak_day(moment: datetime, tz: ZoneInfo) -> str:
    """'Tuesday, March 10'."""
    local = moment.astimezone(tz)
    return f"{local:%A}, {local:%B} {local.day}"


def speak_datetime(moment: datetime, tz: ZoneInfo) -> str:
    """'Tuesday, March 10 at 2:30 PM' in the user's local time."""
    return f"{speak_day(moment, tz)} at {speak_time(moment, tz)}"


def speak_range(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    """'on Tuesday, March 10 from 2 PM to 3:30 PM'; across midnight 'from Tuesday, ... at 11 PM to Wednesday, ...'."""
    if start.astimezone(tz).date() == end.astimezone(tz).date():
        return f"on {speak_day(start, tz)} from {speak_time(start, tz)} to {speak_time(end, tz)}"
    return f"from {speak_datetime(start, tz)} to {speak_datetime(end, tz)}"


def speak_minutes(minutes: int) -> str:
    """A notice period as in "at least 1 hour's notice": "45 minutes'", "1 hour's", "2 hours'"."""
    hours, rest = divmod(minutes, 60)
    if rest or not hours:
        return f"{minutes} minutes'"
    return f"{hours} hour's" if hours == 1 else f"{hours} hours'"


def speak_period(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    """A searched range as said aloud: whole local days by name ('on Saturday, March 7 or Sunday, March 8',
    'between Monday, March 2 and Friday, March 6'), else 'on Saturday, March 7 between 9 AM and 5 PM'."""
    low, high = start.astimezone(tz), end.astimezone(tz)
    midnight = time(0)
    if low.time() == midnight and high.time() == midnight and high > low:
        days = [low.date() + timedelta(days=i) for i in range((high.date() - low.date()).days)]
        names = [f"{day:%A}, {day:%B} {day.day}" for day in days]
        if len(names) <= 2:
            return "on " + " or ".join(names)
        return f"between {names[0]} and {names[-1]}"
    if low.date() == high.date():
        return f"on {speak_day(start, tz)} between {speak_time(start, tz)} and {speak_time(end, tz)}"
    return f"between {speak_datetime(start, tz)} and {speak_datetime(end, tz)}"


def speak_choices(starts: Sequence[datetime], tz: ZoneInfo) -> str:
    """'Monday, March 2 at 9 AM, 9:30 AM, or 10 AM', naming each day once."""
    groups: list[list[datetime]] = []
    for moment in starts:
        if groups and groups[-1][0].astimezone(tz).date() == moment.astimezone(tz).date():
            groups[-1].append(moment)
        else:
            groups.append([moment])
    spoken = [f"{speak_day(g[0], tz)} at {join_words([speak_time(m, tz) for m in g], 'or')}" for g in groups]
    return join_words(spoken, "or")


def speak_ranges(ranges: Sequence[Interval], tz: ZoneInfo) -> str:
    """'on Monday, March 2 from 10 AM to 11 AM and from 2 PM to 3 PM', naming each day once."""
    parts: list[str] = []
    previous_day = None
    for start, end in ranges:
        day = start.astimezone(tz).date()
        same_day = day == end.astimezone(tz).date()
        if same_day and day == previous_day:
            parts.append(f"from {speak_time(start, tz)} to {speak_time(end, tz)}")
        else:
            parts.append(speak_range(start, end, tz))
        previous_day = day if same_day else None
    return join_words(parts, "and")


def join_words(items: Sequence[str], word: str) -> str:
    """'a', 'a and b', 'a, b, and c'."""
    if len(items) <= 2:
        return f" {word} ".join(items)
    return f"{', '.join(items[:-1])}, {word} {items[-1]}"


def _blocked(busy: Sequence[Interval], buffer: timedelta) -> list[Interval]:
    return merge([(_utc(low) - buffer, _utc(high) + buffer) for low, high in busy])


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} where an aware one is required")
    return moment.astimezone(UTC)


def _instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant that the wall-clock `wall` on local `day` names."""
    if wall == time.max:
        return _instant(day + timedelta(days=1), time(0), tz)
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz).astimezone(UTC)  # fold=0: an ambiguous time's first occurrence
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # The clock skips `wall`: fold=1 reads it with the offset after the jump, landing before the jump.
    return _jump(naive.replace(tzinfo=tz, fold=1).astimezone(UTC), first, tz)


def _jump(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant between `before` and `after` where the zone's UTC offset changes (to the second)."""
    target = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == target:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


def _ceil_to_grid(moment: datetime, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz).replace(tzinfo=None)
    remainder = (local - local.replace(hour=0, minute=0, second=0, microsecond=0)) % GRID
    return moment + (GRID - remainder) if remainder else moment


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
