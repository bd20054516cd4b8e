"""How times are said to a caller: short, unambiguous English for a voice, in the user's local time (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from proxy.calendar.slots import Interval


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
