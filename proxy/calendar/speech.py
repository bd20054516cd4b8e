"""How times are said to a caller: short, unambiguous English for a voice, in the user's local time (pure).

Two things make a spoken time ambiguous, and `Voice` says more exactly then:
- the hour the clocks go back happens twice: "1:30 AM EDT" and "1:30 AM EST" (the zone's abbreviation;
  where the zone has none, "before" or "after the clocks go back");
- a date outside the coming months: "Tuesday, March 2, 2027". Within them ("Monday, March 2") the year
  goes without saying; in a range, when one end needs its year both ends say it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from proxy.calendar.slots import Interval

__all__ = ["Voice", "join_words", "speak_minutes"]

# Dates from this long ago to this far ahead are said without their year.
_YEARLESS_BEFORE = timedelta(days=31)
_YEARLESS_AFTER = timedelta(days=183)


@dataclass(frozen=True)
class Voice:
    """Speaks instants in `tz`, for a listener whose today is `today` (a local date in `tz`)."""

    tz: ZoneInfo
    today: date

    @classmethod
    def at(cls, tz: ZoneInfo, now: datetime) -> Voice:
        return cls(tz, now.astimezone(tz).date())

    def time(self, moment: datetime) -> str:
        """'2:30 PM', or '2 PM' on the hour; in the repeated hour of a fall-back night '1:30 AM EDT'."""
        local = moment.astimezone(self.tz)
        hour = local.hour % 12 or 12
        minutes = f":{local.minute:02d}" if local.minute else ""
        spoken = f"{hour}{minutes} {'AM' if local.hour < 12 else 'PM'}"
        if local.replace(fold=1 - local.fold).utcoffset() == local.utcoffset():
            return spoken
        name = local.tzname() or ""
        if name.isascii() and name.isalpha():
            return f"{spoken} {name}"
        return f"{spoken} {'after' if local.fold else 'before'} the clocks go back"

    def day(self, moment: datetime, *, year: bool | None = None) -> str:
        """'Tuesday, March 10', with ', 2027' when the date is not in the coming months (or `year` says so)."""
        return self._date(moment.astimezone(self.tz).date(), year)

    def when(self, moment: datetime) -> str:
        """'Tuesday, March 10 at 2:30 PM' in the user's local time."""
        return f"{self.day(moment)} at {self.time(moment)}"

    def span(self, start: datetime, end: datetime) -> str:
        """'on Tuesday, March 10 from 2 PM to 3:30 PM'; across midnight 'from Tuesday, ... at 11 PM to ...'."""
        year = self._years(start, end)
        if start.astimezone(self.tz).date() == end.astimezone(self.tz).date():
            return f"on {self.day(start, year=year)} from {self.time(start)} to {self.time(end)}"
        return (
            f"from {self.day(start, year=year)} at {self.time(start)} to {self.day(end, year=year)} at {self.time(end)}"
        )

    def period(self, start: datetime, end: datetime) -> str:
        """A searched range as said aloud: whole local days by name ('on Saturday, March 7 or Sunday, March 8',
        'between Monday, March 2 and Friday, March 6'), else 'on Saturday, March 7 between 9 AM and 5 PM'."""
        low, high = start.astimezone(self.tz), end.astimezone(self.tz)
        year = self._years(start, end)
        midnight = time(0)
        if low.time() == midnight and high.time() == midnight and high > low:
            first, last = low.date(), high.date() - timedelta(days=1)
            if (last - first).days <= 1:
                return "on " + " or ".join(self._date(day, year) for day in sorted({first, last}))
            return f"between {self._date(first, year)} and {self._date(last, year)}"
        if low.date() == high.date():
            return f"on {self.day(start, year=year)} between {self.time(start)} and {self.time(end)}"
        return (
            f"between {self.day(start, year=year)} at {self.time(start)} "
            f"and {self.day(end, year=year)} at {self.time(end)}"
        )

    def choices(self, starts: Sequence[datetime]) -> str:
        """'Monday, March 2 at 9 AM, 9:30 AM, or 10 AM', naming each day once."""
        groups: list[list[datetime]] = []
        for moment in starts:
            if groups and groups[-1][0].astimezone(self.tz).date() == moment.astimezone(self.tz).date():
                groups[-1].append(moment)
            else:
                groups.append([moment])
        spoken = [f"{self.day(g[0])} at {join_words([self.time(m) for m in g], 'or')}" for g in groups]
        return join_words(spoken, "or")

    def ranges(self, ranges: Sequence[Interval]) -> str:
        """'on Monday, March 2 from 10 AM to 11 AM and from 2 PM to 3 PM', naming each day once."""
        parts: list[str] = []
        previous_day = None
        for start, end in ranges:
            day = start.astimezone(self.tz).date()
            same_day = day == end.astimezone(self.tz).date()
            if same_day and day == previous_day:
                parts.append(f"from {self.time(start)} to {self.time(end)}")
            else:
                parts.append(self.span(start, end))
            previous_day = day if same_day else None
        return join_words(parts, "and")

    def _date(self, day: date, year: bool | None) -> str:
        text = f"{day:%A}, {day:%B} {day.day}"
        return f"{text}, {day.year}" if (self._far(day) if year is None else year) else text

    def _far(self, day: date) -> bool:
        return not self.today - _YEARLESS_BEFORE <= day <= self.today + _YEARLESS_AFTER

    def _years(self, start: datetime, end: datetime) -> bool:
        """Whether a range says its years: when either end is outside the coming months."""
        return self._far(start.astimezone(self.tz).date()) or self._far(end.astimezone(self.tz).date())


def speak_minutes(minutes: int) -> str:
    """A notice period as in "at least 1 hour's notice": "45 minutes'", "1 hour's", "2 hours'"."""
    hours, rest = divmod(minutes, 60)
    if rest or not hours:
        return f"{minutes} minutes'"
    return f"{hours} hour's" if hours == 1 else f"{hours} hours'"


def join_words(items: Sequence[str], word: str) -> str:
    """'a', 'a and b', 'a, b, and c'."""
    if len(items) <= 2:
        return f" {word} ".join(items)
    return f"{', '.join(items[:-1])}, {word} {items[-1]}"
