"""Open-slot arithmetic: pure functions, no I/O.

Everything is computed on UTC instants; wall-clock times exist only at the edges (working hours in,
speakable text out). Aware datetimes sharing a `ZoneInfo` add, subtract and compare as *wall* times in
Python, which is wrong across a DST change, so every datetime this module returns is in UTC: convert
with `.astimezone(tz)` only to display it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from proxy.config.calendar import WorkingHours

Interval = tuple[datetime, datetime]

# Offered starts fall on the local quarter hour: times a person can say and remember, and finer than
# any sensible slot length, so a slot right after a 10:10 meeting starts at 10:15, not 10:30.
GRID = timedelta(minutes=15)


_ISO_HINT = "an ISO 8601 date-time with a UTC offset, like 2026-03-10T14:30:00-04:00"


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
